"""Consumer groups with confluent-kafka (librdkafka), for both the eager `range` and the
incremental `cooperative-sticky` assignors: three member processes over a 6-partition
topic share 30,000 keyed messages exactly once; a SIGKILLed member's partitions move to
the others within the session timeout with nothing lost; a new member joins mid-stream;
a static member (group.instance.id) restarts without a rebalance; committed offsets
survive a broker restart (SIGKILL and SIGTERM); a fresh consumer's join-to-first-message
time is measured.

Members are group_member.py processes (see group_broker.py); each checks every message
byte for byte and commits synchronously after each batch.
"""

import statistics
import time
import uuid

import pytest
from confluent_kafka import Consumer

from group_broker import (GroupRun, check_messages, committed_confluent, describe_confluent,
                          message, new_topic, partition_ends, produce_confluent, start_broker)

STRATEGIES = ["range", "cooperative-sticky"]
SESSION_MS = 6000
# The issue asks for 30,000 messages for the exactly-once run; the failure scenarios use
# fewer and throttle the members so that the failure happens mid-stream.
N_EXACT = 30000
N_FAILURE = 9000
THROTTLE = {"batch": 50, "sleep_ms": 100}


@pytest.fixture
def gbroker(sluice_factory):
    return start_broker(sluice_factory)


@pytest.fixture
def runs():
    made = []
    yield made
    for run in made:
        run.close()


def group_run(runs, broker, topic, group=None):
    run = GroupRun(broker.bootstrap, topic, "confluent", group)
    runs.append(run)
    return run


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_three_members_consume_every_message_exactly_once(gbroker, runs, strategy):
    topic = new_topic(gbroker.bootstrap, f"g3-{strategy}")
    run = group_run(runs, gbroker, topic)
    for i in range(3):
        run.add(f"m{i}", strategy=strategy, session_ms=SESSION_MS)
    run.wait_balanced(timeout=30)
    assign_counts = {n: len(e.assigns) for n, e in run.events().items()}

    began = time.monotonic()
    where = produce_confluent(gbroker.bootstrap, topic, range(N_EXACT))
    ends = partition_ends(where)
    assert all(ends[p] > 0 for p in ends), f"keys did not reach every partition: {ends}"
    run.wait_seen(set(where), timeout=120)
    print(f"confluent {strategy}: {N_EXACT} messages produced and consumed by 3 members "
          f"in {time.monotonic() - began:.1f}s")
    events = run.events()
    # A stable group: nobody was reassigned while the messages flowed.
    assert {n: len(e.assigns) for n, e in events.items()} == assign_counts
    assert all(not e.revokes or e.revokes[-1][0] < e.assigns[-1][0] for e in events.values())
    run.stop_all()

    events = run.events()
    assert check_messages(events, where, exactly_once=True) == N_EXACT
    for name, e in events.items():
        assert e.msgs, f"{name} consumed nothing"
        assert not e.errors, f"{name}: {e.errors[:3]}"
        # Each member read exactly its own partitions.
        assert {m[0] for m in e.msgs} <= set(e.assigns[-1][2]), name
    assert committed_confluent(gbroker.bootstrap, run.group, topic) == ends


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_member_partitions_move_and_nothing_is_lost(gbroker, runs, strategy):
    topic = new_topic(gbroker.bootstrap, f"gkill-{strategy}")
    run = group_run(runs, gbroker, topic)
    for i in range(3):
        run.add(f"m{i}", strategy=strategy, session_ms=SESSION_MS, **THROTTLE)
    run.wait_balanced(timeout=30)
    where = produce_confluent(gbroker.bootstrap, topic, range(N_FAILURE))
    ends = partition_ends(where)

    victim = run.members["m0"]
    run.wait(lambda r: len(victim.events().msgs) >= 200, 60, "m0 consumed 200 messages")
    victim_parts = victim.events().assignment()
    victim.kill()
    killed_at = time.time()
    dead = victim.events()
    assert victim_parts, "m0 held no partition when it was killed"

    run.wait(lambda r: r.balanced(["m1", "m2"]), SESSION_MS / 1000 + 15,
             "survivors m1, m2 hold all partitions after m0 was SIGKILLed")
    survivors = run.events(["m1", "m2"])
    moved_at = max(e.assigns[-1][0] for e in survivors.values())
    print(f"confluent {strategy}: partitions of the killed member reassigned "
          f"{moved_at - killed_at:.1f}s after SIGKILL (session.timeout.ms={SESSION_MS})")
    assert moved_at - killed_at <= SESSION_MS / 1000 + 15

    run.wait_seen(set(where), timeout=90)
    run.members["m1"].stop()
    run.members["m2"].stop()
    events = run.events()
    total = check_messages(events, where, exactly_once=False)
    print(f"confluent {strategy}: {total} deliveries for {len(where)} messages after a kill")

    # The new owner of each of m0's partitions resumed at m0's committed offset: not
    # before its last recorded commit (no re-delivery of committed messages), not after
    # the last message m0 saw (nothing skipped).
    survivors = run.events(["m1", "m2"])
    for p in victim_parts:
        last_commit = max([o for q, o in dead.commits if q == p], default=0)
        last_seen = max([o for q, o, _, _ in dead.msgs if q == p], default=-1)
        after = [o for e in survivors.values() for q, o, _, _ in e.msgs if q == p]
        if last_seen + 1 >= ends[p] and not after:
            continue  # m0 had finished this partition
        assert after, f"nobody consumed partition {p} after m0 died"
        assert last_commit <= min(after) <= last_seen + 1, (
            f"partition {p}: resumed at {min(after)}, m0 committed {last_commit} "
            f"and saw up to {last_seen}")
    assert committed_confluent(gbroker.bootstrap, run.group, topic) == ends


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_new_member_joins_and_consumption_continues(gbroker, runs, strategy):
    topic = new_topic(gbroker.bootstrap, f"gjoin-{strategy}")
    run = group_run(runs, gbroker, topic)
    for i in range(2):
        run.add(f"m{i}", strategy=strategy, session_ms=SESSION_MS, **THROTTLE)
    run.wait_balanced(timeout=30)
    where = produce_confluent(gbroker.bootstrap, topic, range(N_FAILURE))
    run.wait(lambda r: len(r.seen()) >= 1000, 60, "1000 messages consumed by m0, m1")

    joined = time.monotonic()
    run.add("m2", strategy=strategy, session_ms=SESSION_MS, **THROTTLE)
    run.wait_balanced(["m0", "m1", "m2"], timeout=30)
    print(f"confluent {strategy}: rebalance with a third member done in "
          f"{time.monotonic() - joined:.1f}s")
    run.wait_seen(set(where), timeout=90)
    run.stop_all()
    events = run.events()
    total = check_messages(events, where, exactly_once=False)
    assert events["m2"].msgs, "the new member consumed nothing"
    print(f"confluent {strategy}: {total} deliveries for {len(where)} messages with a join")
    assert committed_confluent(gbroker.bootstrap, run.group, topic) == partition_ends(where)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_static_member_restart_causes_no_rebalance(gbroker, runs, strategy):
    session_ms = 30000
    topic = new_topic(gbroker.bootstrap, f"gstatic-{strategy}")
    run = group_run(runs, gbroker, topic)
    for i in range(3):
        run.add(f"m{i}", strategy=strategy, session_ms=session_ms,
                instance_id=f"{run.group}-i{i}", **THROTTLE)
    run.wait_balanced(timeout=30)
    before = describe_confluent(gbroker.bootstrap, run.group)
    assert before.state.name == "STABLE", before.state
    members_before = {m.group_instance_id: m for m in before.members}
    assert set(members_before) == {f"{run.group}-i{i}" for i in range(3)}

    where = produce_confluent(gbroker.bootstrap, topic, range(N_FAILURE))
    victim = run.members["m2"]
    run.wait(lambda r: len(victim.events().msgs) >= 200, 60, "m2 consumed 200 messages")
    others_before = {n: (len(e.assigns), len(e.revokes)) for n, e in run.events(["m0", "m1"]).items()}
    victim_parts = victim.events().assignment()
    assigns_before = len(victim.events().assigns)

    victim.kill()
    killed_at = time.time()
    victim.start()
    run.wait(lambda r: len(victim.events().assigns) > assigns_before, session_ms / 1000,
             "the restarted static member m2 got an assignment")
    back_at = victim.events().assigns[-1][0]
    print(f"confluent {strategy}: static member back with its partitions "
          f"{back_at - killed_at:.1f}s after SIGKILL")
    assert victim.events().assignment() == victim_parts

    run.wait_seen(set(where), timeout=90)
    after = describe_confluent(gbroker.bootstrap, run.group)
    assert after.state.name == "STABLE", after.state
    members_after = {m.group_instance_id: m for m in after.members}
    assert set(members_after) == set(members_before)
    for iid, m in members_after.items():
        tps = sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
        old = sorted((tp.topic, tp.partition) for tp in members_before[iid].assignment.topic_partitions)
        assert tps == old, f"{iid}: assignment changed {old} -> {tps}"
    assert members_after[f"{run.group}-i2"].member_id != members_before[f"{run.group}-i2"].member_id
    assert members_after[f"{run.group}-i0"].member_id == members_before[f"{run.group}-i0"].member_id
    # No rebalance: the other members got no revocation and no new assignment.
    assert {n: (len(e.assigns), len(e.revokes))
            for n, e in run.events(["m0", "m1"]).items()} == others_before
    run.stop_all()
    check_messages(run.events(), where, exactly_once=False)


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_committed_offsets_survive_broker_restart(gbroker, runs, how):
    topic = new_topic(gbroker.bootstrap, f"grestart-{how}")
    run = group_run(runs, gbroker, topic)
    for i in range(3):
        run.add(f"m{i}", strategy="range", session_ms=SESSION_MS)
    run.wait_balanced(timeout=30)
    first = produce_confluent(gbroker.bootstrap, topic, range(6000))
    run.wait_seen(set(first), timeout=60)
    run.stop_all()
    check_messages(run.events(), first, exactly_once=True)
    committed = committed_confluent(gbroker.bootstrap, run.group, topic)
    assert committed == partition_ends(first)

    second = produce_confluent(gbroker.bootstrap, topic, range(6000, 9000))
    if how == "sigkill":
        gbroker.kill()
        gbroker.start()
    else:
        gbroker.restart()
    assert committed_confluent(gbroker.bootstrap, run.group, topic) == committed

    again = group_run(runs, gbroker, topic, group=run.group)
    for i in range(3):
        again.add(f"r{i}", strategy="range", session_ms=SESSION_MS)
    again.wait_balanced(timeout=30)
    third = produce_confluent(gbroker.bootstrap, topic, range(9000, 12000))
    fresh = {**second, **third}
    again.wait_seen(set(fresh), timeout=60)
    again.stop_all()
    events = again.events()
    stale = [(n, m) for n, e in events.items() for m in e.msgs if m[2] in first]
    assert not stale, f"re-delivered before the committed offset: {stale[:5]}"
    check_messages(events, fresh, exactly_once=False)
    for p, c in committed.items():
        offsets = [m[1] for e in events.values() for m in e.msgs if m[0] == p]
        assert offsets and min(offsets) == c, (
            f"partition {p}: resumed at {min(offsets, default=None)}, committed {c}")
    assert committed_confluent(gbroker.bootstrap, run.group, topic) == partition_ends(fresh)


def test_time_from_join_to_first_message(gbroker):
    """A fresh consumer subscribes to a topic that has data; how long until its first
    message (group.initial.rebalance.delay.ms=0). Printed for the record; bounded so a
    hang fails."""
    topic = new_topic(gbroker.bootstrap, "gfirst")
    where = produce_confluent(gbroker.bootstrap, topic, range(60))
    times = []
    for _ in range(5):
        began = time.monotonic()
        cons = Consumer({"bootstrap.servers": gbroker.bootstrap,
                         "group.id": f"first-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            cons.subscribe([topic])
            deadline = began + 10
            msg = None
            while time.monotonic() < deadline:
                msg = cons.poll(0.05)
                if msg is not None:
                    break
            elapsed = time.monotonic() - began
            assert msg is not None, "no message within 10 s of subscribing"
            assert msg.error() is None, msg.error()
            seq = int(msg.value().split(b"|", 1)[0])
            assert (msg.key(), msg.value()) == message(seq)
            assert where[seq] == (msg.partition(), msg.offset())
        finally:
            cons.close()
        times.append(elapsed)
    print(f"confluent: join-to-first-message {', '.join(f'{t * 1000:.0f}' for t in times)} ms "
          f"(median {statistics.median(times) * 1000:.0f} ms)")
    assert max(times) < 10
