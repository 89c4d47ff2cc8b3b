//! Unit tests of controller decisions on hand-built states.

use std::collections::BTreeMap;

use super::*;
use crate::records::MetadataBatch;
use crate::Endpoint;

/// A state with unfenced brokers `(id, rack)`, each registered at log index `id`.
fn state_with(brokers: &[(i32, Option<&str>)]) -> MetadataState {
    let mut state = MetadataState::default();
    for (id, rack) in brokers {
        let batch = MetadataBatch {
            records: vec![MetadataRecord::RegisterBroker {
                broker_id: *id,
                incarnation_id: Uuid::new_v4(),
                listeners: vec![Endpoint {
                    name: "P".into(),
                    host: "h".into(),
                    port: 1,
                    security_protocol: 0,
                }],
                rack: rack.map(str::to_string),
            }],
        };
        state.apply_batch(&batch, *id as u64).unwrap();
        let unfence = MetadataBatch {
            records: vec![MetadataRecord::BrokerFencing {
                broker_id: *id,
                epoch: i64::from(*id),
                fenced: false,
            }],
        };
        state.apply_batch(&unfence, 100).unwrap();
    }
    state
}

fn apply(state: &mut MetadataState, records: Vec<MetadataRecord>) {
    state.apply_batch(&MetadataBatch { records }, 1000).unwrap();
}

fn topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: rf,
        assignments: BTreeMap::new(),
        configs: BTreeMap::new(),
    }
}

const DEFAULTS: Defaults = Defaults {
    num_partitions: 1,
    replication_factor: 1,
};

#[test]
fn topic_names_follow_kafka_rules() {
    for ok in ["a", "orders.v1", "A-b_c.9", &"x".repeat(249), "..."] {
        assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
    }
    for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
        assert!(
            matches!(
                validate_topic_name(bad),
                Err(ControllerError::InvalidTopic(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn rack_aware_placement_spreads_replicas_and_leaders() {
    let brokers: Vec<(i32, Option<String>)> = (1..=6)
        .map(|id| (id, Some(["a", "b", "c"][(id % 3) as usize].to_string())))
        .collect();
    let rack = |id: i32| {
        brokers
            .iter()
            .find(|b| b.0 == id)
            .and_then(|b| b.1.clone())
            .unwrap()
    };
    for start in 0..6 {
        let placed = place_replicas(&brokers, 12, 3, 0, start).unwrap();
        assert_eq!(placed.len(), 12);
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for replicas in &placed {
            let racks: BTreeSet<String> = replicas.iter().map(|r| rack(*r)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?} not on 3 racks");
            *leaders.entry(replicas[0]).or_default() += 1;
        }
        assert_eq!(leaders.len(), 6);
        assert!(leaders.values().all(|n| *n == 2), "{leaders:?}");
    }
}

#[test]
fn uneven_racks_still_use_every_rack() {
    let brokers = vec![
        (1, Some("a".into())),
        (2, Some("a".into())),
        (3, Some("a".into())),
        (4, Some("b".into())),
    ];
    for start in 0..4 {
        for replicas in place_replicas(&brokers, 8, 2, 0, start).unwrap() {
            assert!(replicas.contains(&4), "{replicas:?} misses rack b");
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 2);
        }
    }
}

#[test]
fn rack_unaware_placement_and_replication_factor_bounds() {
    let brokers = vec![(1, None), (2, None), (3, None)];
    let placed = place_replicas(&brokers, 3, 3, 0, 0).unwrap();
    for replicas in &placed {
        assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
    }
    assert_eq!(
        placed.iter().map(|r| r[0]).collect::<BTreeSet<_>>().len(),
        3,
        "leaders spread"
    );
    assert!(matches!(
        place_replicas(&brokers, 1, 4, 0, 0),
        Err(ControllerError::InvalidReplicationFactor(_))
    ));
    assert!(matches!(
        place_replicas(&brokers, 1, 0, 0, 0),
        Err(ControllerError::InvalidReplicationFactor(_))
    ));
}

#[test]
fn create_topics_places_over_unfenced_brokers_only() {
    let mut state = state_with(&[(1, None), (2, None), (3, None)]);
    {
        let r = fence_broker(&state, 3);
        apply(&mut state, r);
    }
    let (results, records) =
        create_topics(&state, &[topic("t", 4, 2), topic("u", 1, 3)], DEFAULTS, 0);
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(ControllerError::InvalidReplicationFactor(_))
    ));
    apply(&mut state, records);
    for p in &state.topics["t"].partitions {
        assert!(!p.replicas.contains(&3));
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas[0]);
    }
}

#[test]
fn create_topics_rejects_bad_assignments_and_collisions() {
    let mut state = state_with(&[(1, None), (2, None)]);
    let mut t = topic("assigned", -1, -1);
    t.assignments = BTreeMap::from([(0, vec![2, 1]), (1, vec![1, 2])]);
    let (r, records) = create_topics(&state, &[t.clone()], DEFAULTS, 0);
    assert_eq!(r[0].as_ref().unwrap().num_partitions, 2);
    apply(&mut state, records);
    assert_eq!(state.topics["assigned"].partitions[0].leader, 2);

    let mut dup = topic("d", -1, -1);
    dup.assignments = BTreeMap::from([(0, vec![1, 1])]);
    let mut unknown = topic("e", -1, -1);
    unknown.assignments = BTreeMap::from([(0, vec![7])]);
    let mut gap = topic("f", -1, -1);
    gap.assignments = BTreeMap::from([(1, vec![1])]);
    let (r, _) = create_topics(
        &state,
        &[dup, unknown, gap, topic("a.b", 1, 1), topic("a_b", 1, 1)],
        DEFAULTS,
        0,
    );
    for res in &r[..3] {
        assert!(
            matches!(res, Err(ControllerError::InvalidReplicaAssignment(_))),
            "{res:?}"
        );
    }
    assert!(r[3].is_ok());
    // "a_b" collides with "a.b" only once "a.b" exists; in one call the first one wins.
    let (_, records) = create_topics(&state, &[topic("a.b", 1, 1)], DEFAULTS, 0);
    apply(&mut state, records);
    let (r, _) = create_topics(&state, &[topic("a_b", 1, 1)], DEFAULTS, 0);
    assert!(matches!(r[0], Err(ControllerError::InvalidTopic(_))));
}

#[test]
fn election_prefers_isr_in_replica_order() {
    let p = PartitionImage {
        partition: 0,
        replicas: vec![1, 2, 3],
        isr: vec![3, 2],
        leader: 1,
        leader_epoch: 4,
        partition_epoch: 9,
    };
    assert_eq!(elect_leader(&p, &|id| id != 1, false), (2, vec![3, 2]));
    assert_eq!(elect_leader(&p, &|id| id == 3, false), (3, vec![3, 2]));
    assert_eq!(
        elect_leader(&p, &|id| id == 1, false),
        (-1, vec![3, 2]),
        "1 is not in the ISR"
    );
    assert_eq!(
        elect_leader(&p, &|id| id == 1, true),
        (1, vec![1]),
        "unclean election"
    );
    assert_eq!(elect_leader(&p, &|_| false, true), (-1, vec![3, 2]));
}

#[test]
fn fencing_moves_leadership_within_the_isr() {
    let mut state = state_with(&[(1, None), (2, None), (3, None)]);
    let mut t = topic("t", -1, -1);
    t.assignments = BTreeMap::from([(0, vec![1, 2, 3]), (1, vec![2, 1, 3])]);
    let (_, records) = create_topics(&state, &[t], DEFAULTS, 0);
    apply(&mut state, records);

    let records = fence_broker(&state, 1);
    assert!(matches!(
        records[0],
        MetadataRecord::BrokerFencing {
            broker_id: 1,
            fenced: true,
            ..
        }
    ));
    apply(&mut state, records);
    let ps = &state.topics["t"].partitions;
    assert_eq!(
        (
            ps[0].leader,
            ps[0].isr.clone(),
            ps[0].leader_epoch,
            ps[0].partition_epoch
        ),
        (2, vec![2, 3], 1, 1)
    );
    // Partition 1 keeps its leader; 1 leaves the ISR, the leader epoch stays.
    assert_eq!(
        (
            ps[1].leader,
            ps[1].isr.clone(),
            ps[1].leader_epoch,
            ps[1].partition_epoch
        ),
        (2, vec![2, 3], 0, 1)
    );
    assert!(
        fence_broker(&state, 1).is_empty(),
        "fencing twice changes nothing"
    );

    // Fence 2 and 3: the last ISR member stays in the ISR, without leadership.
    {
        let r = fence_broker(&state, 2);
        apply(&mut state, r);
    }
    {
        let r = fence_broker(&state, 3);
        apply(&mut state, r);
    }
    let p = &state.topics["t"].partitions[0];
    assert_eq!((p.leader, p.isr.clone()), (-1, vec![3]));
    // Unfencing 1 (not in the ISR) does not elect it; unfencing 3 does.
    let epoch1 = state.brokers[&1].epoch;
    {
        let r = heartbeat(&state, 1, epoch1, false).unwrap();
        apply(&mut state, r);
    }
    assert_eq!(state.topics["t"].partitions[0].leader, -1);
    let epoch3 = state.brokers[&3].epoch;
    let before = state.topics["t"].partitions[0].leader_epoch;
    {
        let r = heartbeat(&state, 3, epoch3, false).unwrap();
        apply(&mut state, r);
    }
    let p = &state.topics["t"].partitions[0];
    assert_eq!((p.leader, p.leader_epoch), (3, before + 1));
}

#[test]
fn unclean_election_only_when_the_topic_allows_it() {
    let mut state = state_with(&[(1, None), (2, None)]);
    let mut t = topic("t", -1, -1);
    t.assignments = BTreeMap::from([(0, vec![1, 2])]);
    let (_, records) = create_topics(&state, &[t], DEFAULTS, 0);
    apply(&mut state, records);
    // ISR [1]
    let r = fence_broker(&state, 2);
    apply(&mut state, r);
    let id = state.topics["t"].id;
    {
        let r = alter_topic_configs(
            &state,
            "t",
            &[ConfigOp::Set(UNCLEAN_LEADER_ELECTION.into(), "true".into())],
        )
        .unwrap();
        apply(&mut state, r);
    }
    let epoch2 = state.brokers[&2].epoch;
    {
        let r = heartbeat(&state, 2, epoch2, false).unwrap();
        apply(&mut state, r);
    }
    {
        let r = fence_broker(&state, 1);
        apply(&mut state, r);
    }
    let p = &state.topic_by_id(&id).unwrap().partitions[0];
    assert_eq!(
        (p.leader, p.isr.clone()),
        (2, vec![2]),
        "unclean election picked 2"
    );
}

#[test]
fn isr_change_is_a_compare_and_set() {
    let mut state = state_with(&[(1, None), (2, None), (3, None)]);
    let mut t = topic("t", -1, -1);
    t.assignments = BTreeMap::from([(0, vec![1, 2, 3])]);
    let (_, records) = create_topics(&state, &[t], DEFAULTS, 0);
    apply(&mut state, records);
    let id = state.topics["t"].id;
    let e1 = state.brokers[&1].epoch;

    let (p, records) = alter_partition_isr(&state, 1, e1, id, 0, 0, 0, &[1, 2]).unwrap();
    assert_eq!(
        (p.isr.clone(), p.partition_epoch, p.leader_epoch),
        (vec![1, 2], 1, 0)
    );
    apply(&mut state, records);
    // The same request again is stale: the partition epoch moved on.
    assert_eq!(
        alter_partition_isr(&state, 1, e1, id, 0, 0, 0, &[1, 2, 3]),
        Err(ControllerError::StalePartitionEpoch)
    );
    // Only the leader may change the ISR, with its current leader epoch and broker epoch.
    let e2 = state.brokers[&2].epoch;
    assert_eq!(
        alter_partition_isr(&state, 2, e2, id, 0, 0, 1, &[1, 2]),
        Err(ControllerError::StalePartitionEpoch)
    );
    assert_eq!(
        alter_partition_isr(&state, 1, e1, id, 0, 5, 1, &[1, 2]),
        Err(ControllerError::StalePartitionEpoch)
    );
    assert_eq!(
        alter_partition_isr(&state, 1, e1 + 1, id, 0, 0, 1, &[1]),
        Err(ControllerError::StaleBrokerEpoch)
    );
    assert!(matches!(
        alter_partition_isr(&state, 1, e1, id, 0, 0, 1, &[2]),
        Err(ControllerError::InvalidReplicaAssignment(_))
    ));
    assert!(matches!(
        alter_partition_isr(&state, 1, e1, id, 0, 0, 1, &[1, 9]),
        Err(ControllerError::InvalidReplicaAssignment(_))
    ));
    {
        let r = fence_broker(&state, 3);
        apply(&mut state, r);
    }
    assert!(matches!(
        alter_partition_isr(&state, 1, e1, id, 0, 0, 1, &[1, 2, 3]),
        Err(ControllerError::InvalidReplicaAssignment(_))
    ));
    assert!(matches!(
        alter_partition_isr(&state, 1, e1, Uuid::new_v4(), 0, 0, 1, &[1]),
        Err(ControllerError::UnknownTopic(_))
    ));
}

#[test]
fn reregistration_gets_a_new_epoch_and_moves_leadership() {
    let mut state = state_with(&[(1, None), (2, None)]);
    let mut t = topic("t", -1, -1);
    t.assignments = BTreeMap::from([(0, vec![1, 2])]);
    let (_, records) = create_topics(&state, &[t], DEFAULTS, 0);
    apply(&mut state, records);
    let reg = BrokerRegistration {
        broker_id: 1,
        incarnation_id: Uuid::new_v4(),
        listeners: vec![],
        rack: None,
    };
    let records = register_broker(&state, &reg).unwrap();
    state.apply_batch(&MetadataBatch { records }, 2000).unwrap();
    assert_eq!(state.brokers[&1].epoch, 2000);
    assert!(state.brokers[&1].fenced);
    let p = &state.topics["t"].partitions[0];
    assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (2, vec![2], 1));
    // Epochs never go back: an older log index cannot register.
    let records = register_broker(&state, &reg).unwrap();
    assert!(state.apply_batch(&MetadataBatch { records }, 1500).is_err());
}

#[test]
fn producer_id_blocks_are_disjoint() {
    let mut state = state_with(&[(1, None)]);
    let e = state.brokers[&1].epoch;
    let (a, records) = allocate_producer_ids(&state, 1, e).unwrap();
    apply(&mut state, records);
    let (b, _) = allocate_producer_ids(&state, 1, e).unwrap();
    assert_eq!(
        (a.first_producer_id, a.size, b.first_producer_id),
        (0, 1000, 1000)
    );
    assert_eq!(
        allocate_producer_ids(&state, 1, e + 1),
        Err(ControllerError::StaleBrokerEpoch)
    );
}
