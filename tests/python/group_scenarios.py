"""The consumer-group scenarios issue 5 asks every client family to pass, written once and
run by test_groups_confluent.py, test_groups_kafka_python.py and test_groups_aiokafka.py
with their own member processes (group_member.py --client ...).

Each scenario takes the broker, a list that collects GroupRuns (closed by the caller's
fixture), the client name, member options (strategy, batch, sleep_ms, ...) and a producer
function (seqs -> {seq: (partition, offset)}).
"""

import time

from group_broker import (GroupRun, check_messages, committed_confluent, describe_confluent,
                          new_topic, partition_ends)

SESSION_MS = 6000
THROTTLE = {"batch": 50, "sleep_ms": 100}


def _run(runs, broker, topic, client, group=None):
    run = GroupRun(broker.bootstrap, topic, client, group)
    runs.append(run)
    return run


def exactly_once(broker, runs, client, produce, n, label, **opts):
    """Three members, balanced before any message exists; n keyed messages are consumed
    exactly once, each member reading only its own partitions, and the committed offsets
    end at the partition ends."""
    topic = new_topic(broker.bootstrap, f"g3-{client}")
    run = _run(runs, broker, topic, client)
    for i in range(3):
        run.add(f"m{i}", session_ms=SESSION_MS, **opts)
    run.wait_balanced(timeout=30)
    held = {name: e.assignment() for name, e in run.events().items()}
    assign_counts = {name: len(e.assigns) for name, e in run.events().items()}

    began = time.monotonic()
    where = produce(broker.bootstrap, topic, range(n))
    ends = partition_ends(where)
    assert all(ends[p] > 0 for p in ends), f"keys did not reach every partition: {ends}"
    run.wait_seen(set(where), timeout=150)
    print(f"{label}: {n} messages produced and consumed by 3 members "
          f"in {time.monotonic() - began:.1f}s")
    # A stable group: nobody was reassigned while the messages flowed.
    assert {name: len(e.assigns) for name, e in run.events().items()} == assign_counts
    run.stop_all()

    events = run.events()
    assert check_messages(events, where, exactly_once=True) == n
    for name, e in events.items():
        assert e.msgs, f"{name} consumed nothing"
        assert not e.errors, f"{name}: {e.errors[:3]}"
        assert {m[0] for m in e.msgs} <= held[name], f"{name} read partitions it did not hold"
    assert committed_confluent(broker.bootstrap, run.group, topic) == ends


def killed_member(broker, runs, client, produce, n, label, **opts):
    """m0 is SIGKILLed mid-stream: m1 and m2 hold all partitions within the session timeout
    (+ margin), every message is consumed at least once, and each of m0's partitions is
    resumed at m0's committed offset (not before its last commit, not after its last
    message)."""
    topic = new_topic(broker.bootstrap, f"gkill-{client}")
    run = _run(runs, broker, topic, client)
    for i in range(3):
        run.add(f"m{i}", session_ms=SESSION_MS, **THROTTLE, **opts)
    run.wait_balanced(timeout=30)
    where = produce(broker.bootstrap, topic, range(n))
    ends = partition_ends(where)

    victim = run.members["m0"]
    run.wait(lambda r: len(victim.events().msgs) >= 200, 60, "m0 consumed 200 messages")
    victim_parts = victim.events().assignment()
    assert victim_parts, "m0 held no partition when it was killed"
    victim.kill()
    killed_at = time.time()
    dead = victim.events()

    run.wait(lambda r: r.balanced(["m1", "m2"]), SESSION_MS / 1000 + 15,
             "survivors m1, m2 hold all partitions after m0 was SIGKILLed")
    moved_at = max(e.assigns[-1][0] for e in run.events(["m1", "m2"]).values())
    print(f"{label}: partitions of the killed member reassigned {moved_at - killed_at:.1f}s "
          f"after SIGKILL (session.timeout.ms={SESSION_MS})")

    run.wait_seen(set(where), timeout=90)
    run.members["m1"].stop()
    run.members["m2"].stop()
    total = check_messages(run.events(), where, exactly_once=False)
    print(f"{label}: {total} deliveries for {len(where)} messages with a member killed")

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
    assert committed_confluent(broker.bootstrap, run.group, topic) == ends


def new_member_joins(broker, runs, client, produce, n, label, **opts):
    """Two members consume; a third joins mid-stream; the rebalance ends with three
    balanced members, the newcomer consumes (a second wave is produced after the
    rebalance), and nothing is lost."""
    topic = new_topic(broker.bootstrap, f"gjoin-{client}")
    run = _run(runs, broker, topic, client)
    for i in range(2):
        run.add(f"m{i}", session_ms=SESSION_MS, **THROTTLE, **opts)
    run.wait_balanced(timeout=30)
    where = produce(broker.bootstrap, topic, range(n))
    run.wait(lambda r: len(r.seen()) >= n // 8, 60, f"{n // 8} messages consumed by m0, m1")

    joined = time.monotonic()
    run.add("m2", session_ms=SESSION_MS, **THROTTLE, **opts)
    run.wait_balanced(["m0", "m1", "m2"], timeout=30)
    print(f"{label}: rebalance with a third member done in {time.monotonic() - joined:.1f}s")
    left = set(where) - run.seen()
    # A second wave after the rebalance reaches every partition, the newcomer's included
    # (its partitions from the first wave may have been drained before it got them).
    later = produce(broker.bootstrap, topic, range(n, n + n // 2))
    where = {**where, **later}
    run.wait_seen(set(where), timeout=90)
    run.stop_all()
    events = run.events()
    total = check_messages(events, where, exactly_once=False)
    assert left, "everything was consumed before the new member joined: nothing was tested"
    assert {m[2] for m in events["m2"].msgs} & set(later), "the new member consumed nothing"
    print(f"{label}: {total} deliveries for {len(where)} messages with a member joining")
    assert committed_confluent(broker.bootstrap, run.group, topic) == partition_ends(where)


def static_member_restart(broker, runs, client, produce, n, label, **opts):
    """Three static members (group.instance.id); m2, a follower, is SIGKILLed and
    restarted at once, well within its session timeout: it gets its old partitions back,
    the others see no revocation and no new assignment, DescribeGroups shows the same
    instances and assignments (m2 under a new member id), and nothing is lost."""
    session_ms = 30000
    topic = new_topic(broker.bootstrap, f"gstatic-{client}")
    run = _run(runs, broker, topic, client)
    # m0 joins alone first and so leads the group; the member restarted below (m2) is a
    # follower. (A restarted static leader is told to lead again; clients that then see
    # newer topic metadata than they assigned with, as kafka-python does, rejoin and
    # rebalance on Kafka too.)
    run.add("m0", session_ms=session_ms, instance_id=f"{run.group}-i0", **THROTTLE, **opts)
    run.wait_balanced(["m0"], timeout=30)
    for i in (1, 2):
        run.add(f"m{i}", session_ms=session_ms, instance_id=f"{run.group}-i{i}",
                **THROTTLE, **opts)
    run.wait_balanced(timeout=30)
    before = describe_confluent(broker.bootstrap, run.group)
    assert before.state.name == "STABLE", before.state
    members_before = {m.group_instance_id: m for m in before.members}
    assert set(members_before) == {f"{run.group}-i{i}" for i in range(3)}

    where = produce(broker.bootstrap, topic, range(n))
    victim = run.members["m2"]
    run.wait(lambda r: len(victim.events().msgs) >= 200, 60, "m2 consumed 200 messages")
    others_before = {name: (len(e.assigns), len(e.revokes))
                     for name, e in run.events(["m0", "m1"]).items()}
    generation_before = run.events(["m0"])["m0"].assigns[-1][1]
    victim_parts = victim.events().assignment()
    assigns_before = len(victim.events().assigns)

    victim.kill()
    killed_at = time.time()
    victim.start()
    run.wait(lambda r: len(victim.events().assigns) > assigns_before, session_ms / 1000,
             "the restarted static member m2 got an assignment")
    back = victim.events().assigns[-1]
    print(f"{label}: static member back with its partitions {back[0] - killed_at:.1f}s "
          f"after SIGKILL (generation {generation_before} -> {back[1]})")
    assert victim.events().assignment() == victim_parts, (
        f"m2 held {sorted(victim_parts)} before the restart, {sorted(victim.events().assignment())} "
        f"after\n{run.summary()}")
    if generation_before >= 0:
        assert back[1] == generation_before, "the generation moved: a rebalance happened"

    run.wait_seen(set(where), timeout=90)
    after = describe_confluent(broker.bootstrap, run.group)
    assert after.state.name == "STABLE", after.state
    members_after = {m.group_instance_id: m for m in after.members}
    assert set(members_after) == set(members_before)
    for iid, m in members_after.items():
        now = sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
        old = sorted((tp.topic, tp.partition)
                     for tp in members_before[iid].assignment.topic_partitions)
        assert now == old, f"{iid}: assignment changed {old} -> {now}"
    assert members_after[f"{run.group}-i2"].member_id != members_before[f"{run.group}-i2"].member_id
    for i in (0, 1):
        iid = f"{run.group}-i{i}"
        assert members_after[iid].member_id == members_before[iid].member_id
    # No rebalance: the other members got no revocation and no new assignment.
    assert {name: (len(e.assigns), len(e.revokes))
            for name, e in run.events(["m0", "m1"]).items()} == others_before, (
        "the other members were rebalanced when a static member restarted")
    run.stop_all()
    check_messages(run.events(), where, exactly_once=False)


def broker_restart(broker, runs, client, produce, how, label, **opts):
    """A group consumes and commits 6,000 messages and closes; 3,000 more are produced; the
    broker is restarted (SIGKILL or SIGTERM); the committed offsets read back unchanged; a
    new set of members of the same group resumes exactly at the committed offsets (nothing
    before them re-delivered, nothing skipped) and also gets 3,000 produced afterwards."""
    topic = new_topic(broker.bootstrap, f"grestart-{client}-{how}")
    run = _run(runs, broker, topic, client)
    for i in range(3):
        run.add(f"m{i}", session_ms=SESSION_MS, **opts)
    run.wait_balanced(timeout=30)
    first = produce(broker.bootstrap, topic, range(6000))
    run.wait_seen(set(first), timeout=90)
    run.stop_all()
    check_messages(run.events(), first, exactly_once=True)
    committed = committed_confluent(broker.bootstrap, run.group, topic)
    assert committed == partition_ends(first)

    second = produce(broker.bootstrap, topic, range(6000, 9000))
    if how == "sigkill":
        broker.kill()
        broker.start()
    else:
        code = broker.stop()
        assert code == 0, f"sluice exited {code} on SIGTERM"
        broker.start()
    assert committed_confluent(broker.bootstrap, run.group, topic) == committed, (
        "committed offsets changed across the restart")

    again = _run(runs, broker, topic, client, group=run.group)
    for i in range(3):
        again.add(f"r{i}", session_ms=SESSION_MS, **opts)
    again.wait_balanced(timeout=30)
    third = produce(broker.bootstrap, topic, range(9000, 12000))
    fresh = {**second, **third}
    again.wait_seen(set(fresh), timeout=90)
    again.stop_all()
    events = again.events()
    stale = [(name, m) for name, e in events.items() for m in e.msgs if m[2] in first]
    assert not stale, f"re-delivered from before the committed offset: {stale[:5]}"
    total = check_messages(events, fresh, exactly_once=False)
    print(f"{label} ({how}): resumed at the committed offsets, {total} deliveries for "
          f"{len(fresh)} messages")
    for p, c in committed.items():
        offsets = [m[1] for e in events.values() for m in e.msgs if m[0] == p]
        assert offsets and min(offsets) == c, (
            f"partition {p}: resumed at {min(offsets, default=None)}, committed {c}")
    assert committed_confluent(broker.bootstrap, run.group, topic) == partition_ends(fresh)


def broker_restart_live(broker, runs, client, produce, n, how, label, **opts):
    """Three members keep running while the broker is restarted under them (SIGKILL or
    SIGTERM): they reconnect, find the coordinator again and finish the stream; nothing is
    lost, and no member re-reads a message below an offset committed before the restart."""
    topic = new_topic(broker.bootstrap, f"glive-{client}-{how}")
    run = _run(runs, broker, topic, client)
    for i in range(3):
        run.add(f"m{i}", session_ms=SESSION_MS, **THROTTLE, **opts)
    run.wait_balanced(timeout=30)
    where = produce(broker.bootstrap, topic, range(n))
    run.wait(lambda r: len(r.seen()) >= n // 3, 60, f"{n // 3} messages consumed")

    if how == "sigkill":
        broker.kill()
    else:
        code = broker.stop()
        assert code == 0, f"sluice exited {code} on SIGTERM"
    down = run.events()
    seen_before = {name: len(e.msgs) for name, e in down.items()}
    committed_before = {}
    for e in down.values():
        for p, o in e.commits:
            committed_before[p] = max(committed_before.get(p, 0), o)
    time.sleep(1)
    restarted = time.monotonic()
    broker.start()
    run.wait(lambda r: any(len(e.msgs) > seen_before[name] for name, e in r.events().items()),
             60, "consumption resumed after the broker restart")
    print(f"{label} ({how}): consumption resumed {time.monotonic() - restarted:.1f}s after the "
          f"broker restart began")
    run.wait_seen(set(where), timeout=120)
    run.stop_all()
    events = run.events()
    total = check_messages(events, where, exactly_once=False)
    print(f"{label} ({how}): {total} deliveries for {len(where)} messages across a live restart")
    for name, e in events.items():
        for p, o, _, _ in e.msgs[seen_before[name]:]:
            assert o >= committed_before.get(p, 0), (
                f"{name} re-read {p}/{o}, below offset {committed_before[p]} committed "
                "before the restart")
    assert committed_confluent(broker.bootstrap, run.group, topic) == partition_ends(where)


def shutdown_during_rebalance(broker, runs, client, label, **opts):
    """A rebalance waits for a member that was SIGKILLed (long session timeout), so the
    live members' JoinGroup requests are parked in the coordinator; a SIGTERM to the broker
    must still stop it promptly (it need not wait for parked requests) and exit 0."""
    topic = new_topic(broker.bootstrap, f"gshut-{client}")
    run = _run(runs, broker, topic, client)
    for i in range(2):
        run.add(f"m{i}", session_ms=30000, **opts)
    run.wait_balanced(timeout=30)
    run.members["m1"].kill()
    run.add("m2", session_ms=30000, **opts)
    # m0 learns of the rebalance on its next heartbeat and rejoins; m1 never will.
    run.wait(lambda r: not r.members["m0"].events().assignment(), 15,
             "m0 gave up its partitions to rejoin")
    time.sleep(1)
    state = describe_confluent(broker.bootstrap, run.group).state.name
    assert state == "PREPARING_REBALANCING", f"expected a pending rebalance, group is {state}"
    began = time.monotonic()
    code = broker.stop()
    took = time.monotonic() - began
    print(f"{label}: broker stopped {took:.1f}s after SIGTERM with a rebalance pending")
    assert code == 0, f"sluice exited {code} on SIGTERM"
