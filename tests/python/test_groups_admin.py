"""Consumer groups through clients' admin APIs: list (with a state filter) and describe
groups (state, assignor, members, their assignments), committed offsets and lag, delete a
group (refused with NON_EMPTY_GROUP while it has members, done once it is empty, then
GROUP_ID_NOT_FOUND) and delete offsets (OffsetDelete, refused with
GROUP_SUBSCRIBED_TO_TOPIC while a member subscribes to the topic), with confluent-kafka's
AdminClient and kafka-python's KafkaAdminClient. Members are group_member.py processes."""

from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from group_broker import (PARTITIONS, GroupRun, committed_confluent, describe_confluent,
                          new_topic, partition_ends, produce_confluent)
from helpers import OP_TIMEOUT_S, admin

ERR_NON_EMPTY_GROUP = 68
ERR_GROUP_ID_NOT_FOUND = 69


def consumed_group(broker, runs, topic, members: int, n: int, start: int = 0):
    """A group of `members` confluent members (range) that consumed messages start..start+n
    of `topic`, still running."""
    run = GroupRun(broker.bootstrap, topic, "confluent")
    runs.append(run)
    for i in range(members):
        run.add(f"m{i}", strategy="range")
    run.wait_balanced(timeout=30)
    where = produce_confluent(broker.bootstrap, topic, range(start, start + n))
    run.wait_seen(set(where), timeout=60)
    return run, where


def list_groups_confluent(client, states=None):
    kwargs = {"request_timeout": OP_TIMEOUT_S}
    if states:
        kwargs["states"] = set(states)
    result = client.list_consumer_groups(**kwargs).result(timeout=OP_TIMEOUT_S)
    assert not result.errors, result.errors
    return {g.group_id: g for g in result.valid}


def latest_offsets(client, topic):
    futures = client.list_offsets({TopicPartition(topic, p): OffsetSpec.latest()
                                   for p in range(PARTITIONS)}, request_timeout=OP_TIMEOUT_S)
    return {tp.partition: f.result(timeout=OP_TIMEOUT_S).offset for tp, f in futures.items()}


def delete_group_error(client, group):
    """None if DeleteGroups succeeded, else the Kafka error code."""
    fut = client.delete_consumer_groups([group], request_timeout=OP_TIMEOUT_S)[group]
    try:
        fut.result(timeout=OP_TIMEOUT_S)
        return None
    except KafkaException as err:
        return err.args[0].code()


def test_confluent_admin_lists_describes_and_deletes_groups(gbroker, runs):
    client = admin(gbroker.bootstrap)
    topic = new_topic(gbroker.bootstrap, "gadmin")
    active, first = consumed_group(gbroker, runs, topic, members=2, n=600)
    idle, second = consumed_group(gbroker, runs, topic, members=1, n=300, start=600)
    idle.stop_all()
    where = {**first, **second}
    ends = partition_ends(where)

    # List, with and without a state filter.
    groups = list_groups_confluent(client)
    assert {active.group, idle.group} <= set(groups)
    assert groups[active.group].state == ConsumerGroupState.STABLE
    assert groups[idle.group].state == ConsumerGroupState.EMPTY
    assert not groups[active.group].is_simple_consumer_group
    stable = list_groups_confluent(client, [ConsumerGroupState.STABLE])
    assert active.group in stable and idle.group not in stable
    empty = list_groups_confluent(client, [ConsumerGroupState.EMPTY])
    assert idle.group in empty and active.group not in empty

    # Describe: state, assignor, members and exactly the partitions each member holds.
    desc = describe_confluent(gbroker.bootstrap, active.group)
    assert desc.state == ConsumerGroupState.STABLE
    assert desc.partition_assignor == "range"
    assert not desc.is_simple_consumer_group
    assert len(desc.members) == 2
    held = {f"member-{m.proc.pid}": m.events().assignment() for m in active.members.values()}
    described = {}
    for m in desc.members:
        assert m.member_id.startswith(m.client_id), m.member_id
        assert m.host, "member host missing"
        assert {tp.topic for tp in m.assignment.topic_partitions} == {topic}
        described[m.client_id] = frozenset(tp.partition for tp in m.assignment.topic_partitions)
    assert described == held
    idle_desc = describe_confluent(gbroker.bootstrap, idle.group)
    assert idle_desc.state == ConsumerGroupState.EMPTY and not idle_desc.members

    # Committed offsets and lag: the active group is at the end; the idle group stopped
    # at its own end and lags by what came after (the active group's 600 were before).
    # (The active group also reads the idle group's 300 messages: wait for its commits.)
    active.wait(lambda r: committed_confluent(gbroker.bootstrap, r.group, topic) == ends,
                30, "the active group committed the partition ends")
    idle_committed = committed_confluent(gbroker.bootstrap, idle.group, topic)
    assert idle_committed == ends
    extra = produce_confluent(gbroker.bootstrap, topic, range(900, 1000))
    latest = latest_offsets(client, topic)
    assert latest == partition_ends({**where, **extra})
    lag = {p: latest[p] - idle_committed[p] for p in latest}
    want_lag = {p: 0 for p in range(PARTITIONS)}
    for p, _ in extra.values():
        want_lag[p] += 1
    assert lag == want_lag and sum(lag.values()) == 100

    # The active group reads and commits the extra messages too.
    all_ends = partition_ends({**where, **extra})
    active.wait(lambda r: committed_confluent(gbroker.bootstrap, r.group, topic) == all_ends,
                30, "the active group committed the partition ends")

    # DeleteGroups: refused while members are in the group, done once it is empty.
    assert delete_group_error(client, active.group) == ERR_NON_EMPTY_GROUP
    assert committed_confluent(gbroker.bootstrap, active.group, topic) == all_ends
    active.stop_all()
    assert describe_confluent(gbroker.bootstrap, active.group).state == ConsumerGroupState.EMPTY
    assert delete_group_error(client, active.group) is None
    assert active.group not in list_groups_confluent(client)
    assert committed_confluent(gbroker.bootstrap, active.group, topic) == {
        p: -1 for p in range(PARTITIONS)}
    assert delete_group_error(client, active.group) == ERR_GROUP_ID_NOT_FOUND
    # The other group is untouched.
    assert committed_confluent(gbroker.bootstrap, idle.group, topic) == idle_committed


def test_kafka_python_admin_groups_offsets_and_offset_delete(gbroker, runs):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    from kafka.errors import GroupSubscribedToTopicError, NoError

    topic = new_topic(gbroker.bootstrap, "gadmin-kp")
    run, where = consumed_group(gbroker, runs, topic, members=2, n=600)
    ends = partition_ends(where)
    run.wait(lambda r: committed_confluent(gbroker.bootstrap, r.group, topic) == ends, 30,
             "the group committed the partition ends")
    ka = KafkaAdminClient(bootstrap_servers=gbroker.bootstrap, request_timeout_ms=15000)
    try:
        listed = {g["group_id"]: g for g in ka.list_groups()}
        assert listed[run.group]["group_state"] == "Stable"
        assert listed[run.group]["protocol_type"] == "consumer"
        assert run.group in {g["group_id"] for g in ka.list_groups(states_filter=["Stable"])}
        assert run.group not in {g["group_id"] for g in ka.list_groups(states_filter=["Empty"])}

        desc = ka.describe_groups([run.group])[run.group]
        assert desc["error"] is None
        assert desc["group_state"] == "Stable"
        assert desc["protocol_type"] == "consumer" and desc["protocol_data"] == "range"
        held = {f"member-{m.proc.pid}": m.events().assignment() for m in run.members.values()}
        described = {}
        for m in desc["members"]:
            assert m["member_metadata"]["topics"] == [topic]
            parts = [a for a in m["member_assignment"]["assigned_partitions"] if a["topic"] == topic]
            described[m["client_id"]] = frozenset(p for a in parts for p in a["partitions"])
        assert described == held

        offsets = ka.list_group_offsets({run.group: None})[run.group]
        assert {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic} == ends

        # OffsetDelete while a member subscribes to the topic: refused per partition.
        res = ka.delete_group_offsets(run.group, [KTP(topic, 0), KTP(topic, 1)])
        assert res == {KTP(topic, 0): GroupSubscribedToTopicError,
                       KTP(topic, 1): GroupSubscribedToTopicError}
        offsets = ka.list_group_offsets({run.group: None})[run.group]
        assert len([tp for tp in offsets if tp.topic == topic]) == PARTITIONS

        # Once the group is empty: deleted for the asked partitions only.
        assert dict(ka.delete_groups([run.group]))[run.group] == "NonEmptyGroupError"
        run.stop_all()
        res = ka.delete_group_offsets(run.group, [KTP(topic, 0), KTP(topic, 1)])
        assert res == {KTP(topic, 0): NoError, KTP(topic, 1): NoError}
        offsets = ka.list_group_offsets({run.group: None})[run.group]
        assert {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic} == {
            p: ends[p] for p in range(2, PARTITIONS)}
        assert committed_confluent(gbroker.bootstrap, run.group, topic) == {
            **{p: ends[p] for p in range(2, PARTITIONS)}, 0: -1, 1: -1}

        # A consumer of the group now starts partitions 0 and 1 from auto.offset.reset
        # (earliest) and the others at their committed offsets: 0 and 1 are read again.
        again = GroupRun(gbroker.bootstrap, topic, "confluent", group=run.group)
        runs.append(again)
        again.add("r0", strategy="range")
        want = {s for s, (p, _) in where.items() if p in (0, 1)}
        again.wait_seen(want, timeout=60)
        again.stop_all()
        got = [m for m in again.events()["r0"].msgs]
        assert {m[2] for m in got} == want, "only the partitions whose offsets were deleted"

        assert dict(ka.delete_groups([run.group]))[run.group] == "OK"
        assert run.group not in {g["group_id"] for g in ka.list_groups()}
        assert dict(ka.delete_groups([run.group]))[run.group] == "GroupIdNotFoundError"
    finally:
        ka.close()
