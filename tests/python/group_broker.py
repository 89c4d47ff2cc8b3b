"""Consumer-group test harness: a broker with group settings, producers that record where
every message landed, member processes (group_member.py) and the checks the group tests
share (byte-exact, exactly-once or at-least-once, per-key order, commits honoured).

Brokers come from conftest's `sluice_factory`, started with
`--set group.initial.rebalance.delay.ms=0` so that a group forms as soon as its members
join. Every wait here is bounded and names what it waited for when it gives up.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from group_member import KEYS, message
from helpers import OP_TIMEOUT_S, admin, create_topic

HERE = Path(__file__).resolve().parent
MEMBER = HERE / "group_member.py"
PARTITIONS = 6
GROUP_ARGS = ("--num-partitions", "3", "--auto-create-topics-enable", "true",
              "--set", "group.initial.rebalance.delay.ms=0")


def start_broker(sluice_factory, *extra):
    """A single-node sluice whose groups form without the initial rebalance delay."""
    return sluice_factory(*GROUP_ARGS, *extra)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_topic(bootstrap: str, prefix: str, partitions: int = PARTITIONS) -> str:
    topic = unique(prefix)
    create_topic(bootstrap, topic, partitions=partitions)
    return topic


# ----------------------------------------------------------------------------- producing
def produce_confluent(bootstrap: str, topic: str, seqs) -> dict:
    """Produces message(seq) for each seq (keyed, default partitioner, acks=all);
    returns {seq: (partition, offset)} from the delivery reports."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": 30000, "queue.buffering.max.messages": 200000})
    where, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            where[int(msg.value().split(b"|", 1)[0])] = (msg.partition(), msg.offset())

    for seq in seqs:
        key, value = message(seq)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} messages undelivered after 60 s"
    assert not errors, f"delivery errors: {errors[:3]}"
    return where


def produce_kafka_python(bootstrap: str, topic: str, seqs) -> dict:
    """As produce_confluent, with kafka-python (idempotence off: Sluice has no
    InitProducerId yet)."""
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=False, request_timeout_ms=30000)
    try:
        futures = []
        for seq in seqs:
            key, value = message(seq)
            futures.append((seq, producer.send(topic, key=key, value=value)))
        producer.flush(timeout=60)
        where = {}
        for seq, fut in futures:
            md = fut.get(timeout=30)
            where[seq] = (md.partition, md.offset)
        return where
    finally:
        producer.close(timeout=10)


def partition_ends(where: dict) -> dict:
    ends = {p: 0 for p in range(PARTITIONS)}
    for p, o in where.values():
        ends[p] = max(ends[p], o + 1)
    return ends


# ----------------------------------------------------------------------------- members
class Events:
    """The parsed event file of one member process."""

    def __init__(self, path: Path):
        self.order = []       # (kind, fields) in file order
        self.msgs = []        # (partition, offset, seq, ok)
        self.assigns = []     # (wall time, generation, frozenset)
        self.revokes = []     # (wall time, tag, frozenset)
        self.commits = []     # (partition, offset)
        self.errors = []
        self.started = None
        self.exited = None
        try:
            text = path.read_text()
        except FileNotFoundError:
            return
        for line in text.split("\n")[:-1]:  # the last piece may be half written
            kind, _, rest = line.partition(" ")
            f = rest.split(" ")
            if kind == "M":
                self.msgs.append((int(f[0]), int(f[1]), int(f[2]), int(f[3])))
            elif kind == "A":
                ps = frozenset() if f[2] == "-" else frozenset(int(x) for x in f[2].split(","))
                self.assigns.append((float(f[0]), int(f[1]), ps))
                self.order.append(("A", ps))
            elif kind in ("R", "L"):
                ps = frozenset() if f[1] == "-" else frozenset(int(x) for x in f[1].split(","))
                self.revokes.append((float(f[0]), kind, ps))
                self.order.append(("R", ps))
            elif kind == "C":
                self.commits.append((int(f[0]), int(f[1])))
            elif kind == "E":
                self.errors.append(rest)
            elif kind == "S":
                self.started = float(f[0])
            elif kind == "X":
                self.exited = float(f[0])

    def assignment(self) -> frozenset:
        current = frozenset()
        for kind, ps in self.order:
            current = ps if kind == "A" else current - ps
        return current


class Member:
    def __init__(self, run, name: str, **opts):
        self.run = run
        self.name = name
        self.opts = opts
        self.events_path = run.dir / f"{name}.events"
        self.stop_path = run.dir / f"{name}.stop"
        self.err_path = run.dir / f"{name}.stderr"
        self.proc = None
        self.start()

    def start(self):
        self.stop_path.unlink(missing_ok=True)
        args = [sys.executable, str(MEMBER), "--client", self.run.client,
                "--bootstrap", self.run.bootstrap, "--group", self.run.group,
                "--topic", self.run.topic, "--events", str(self.events_path),
                "--stop", str(self.stop_path)]
        for k, v in self.opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        err = open(self.err_path, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     cwd=str(HERE))
        err.close()

    def events(self) -> Events:
        return Events(self.events_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: no LeaveGroup, no last commit."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0):
        """Asks the member to close (commit done, LeaveGroup) and waits for it."""
        if not self.alive():
            return
        self.stop_path.touch()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"member {self.name} did not close within {timeout}s\n"
                                 f"{self.stderr()}")
        assert self.proc.returncode == 0, (
            f"member {self.name} exited {self.proc.returncode}\n{self.stderr()}")

    def stderr(self) -> str:
        try:
            text = self.err_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return f"--- {self.name} stderr (tail) ---\n{text[-3000:]}"


class GroupRun:
    """Members of one group over one topic, each a group_member.py process."""

    def __init__(self, bootstrap: str, topic: str, client: str, group: str = None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.client = client
        self.group = group or unique(f"grp-{client}")
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-group-"))
        self.members = {}

    def add(self, name: str, **opts) -> Member:
        member = Member(self, name, **opts)
        self.members[name] = member
        return member

    def alive(self):
        return {n: m for n, m in self.members.items() if m.alive()}

    def events(self, names=None):
        return {n: m.events() for n, m in self.members.items() if names is None or n in names}

    def summary(self) -> str:
        lines = []
        for n, m in self.members.items():
            e = m.events()
            lines.append(f"{n}: alive={m.alive()} assignment={sorted(e.assignment())} "
                         f"messages={len(e.msgs)} commits={len(e.commits)} "
                         f"assigns={len(e.assigns)} revokes={len(e.revokes)} "
                         f"errors={e.errors[:5]}")
            if not m.alive() or e.errors:
                lines.append(m.stderr())
        return "\n".join(lines)

    def wait(self, predicate, timeout: float, what: str):
        """Polls predicate(self) every 0.2 s until it is true; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}\n{self.summary()}")
            time.sleep(0.2)

    def balanced(self, names=None, partitions: int = PARTITIONS) -> bool:
        """The named (default: all live) members' assignments are non-empty, disjoint, cover
        every partition and differ in size by at most one."""
        names = names or list(self.alive())
        assigned = [self.members[n].events().assignment() for n in names]
        if not assigned or any(not a for a in assigned):
            return False
        union = frozenset().union(*assigned)
        sizes = [len(a) for a in assigned]
        return (sum(sizes) == partitions and union == frozenset(range(partitions))
                and max(sizes) - min(sizes) <= 1)

    def wait_balanced(self, names=None, timeout: float = 30.0, partitions: int = PARTITIONS):
        return self.wait(lambda r: r.balanced(names, partitions), timeout,
                         f"members {names or 'alive'} hold all {partitions} partitions, balanced")

    def seen(self) -> set:
        out = set()
        for e in self.events().values():
            out.update(m[2] for m in e.msgs)
        return out

    def wait_seen(self, want: set, timeout: float):
        return self.wait(lambda r: want <= r.seen(), timeout,
                         f"all {len(want)} messages consumed (seen {len(want & self.seen())})")

    def stop_all(self):
        errors = []
        for m in self.members.values():
            try:
                m.stop()
            except AssertionError as err:
                errors.append(str(err))
        assert not errors, errors

    def close(self):
        """Kills members still running and removes the event files."""
        for m in self.members.values():
            if m.alive():
                m.proc.kill()
                m.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- checks
def check_messages(events: dict, where: dict, exactly_once: bool):
    """Checks what the members consumed against what was produced (`where`:
    {seq: (partition, offset)}): every message byte-exact at its offset, every one seen,
    and (exactly_once) seen once, offsets increasing per member and partition, per-key
    order in each member's stream. Returns the number of messages consumed."""
    count = {}
    for name, e in events.items():
        last_offset = {}
        last_seq_of_key = {}
        for p, o, seq, ok in e.msgs:
            assert ok == 1, f"{name}: message at {p}/{o} (seq {seq}) is not byte-exact"
            assert where.get(seq) == (p, o), (
                f"{name}: seq {seq} consumed at {p}/{o}, produced at {where.get(seq)}")
            count[seq] = count.get(seq, 0) + 1
            if exactly_once:
                assert o > last_offset.get(p, -1), f"{name}: partition {p} went back to {o}"
                last_offset[p] = o
                key = seq % KEYS
                assert seq > last_seq_of_key.get(key, -1), f"{name}: key {key} out of order"
                last_seq_of_key[key] = seq
    missing = set(where) - set(count)
    assert not missing, f"{len(missing)} messages never consumed, e.g. {sorted(missing)[:10]}"
    assert set(count) <= set(where), "consumed messages that were not produced"
    if exactly_once:
        dups = {s: c for s, c in count.items() if c > 1}
        assert not dups, f"{len(dups)} messages consumed more than once, e.g. {list(dups.items())[:5]}"
    # Per-key order in the log: one key, one partition, increasing offsets with seq.
    by_key = {}
    for seq in sorted(where):
        p, o = where[seq]
        prev = by_key.get(seq % KEYS)
        if prev is not None:
            assert prev[0] == p and prev[1] < o, f"key {seq % KEYS} out of order in the log"
        by_key[seq % KEYS] = (p, o)
    return sum(count.values())


def committed_confluent(bootstrap: str, group: str, topic: str, partitions: int = PARTITIONS):
    """{partition: committed offset or -1} through AdminClient.list_consumer_group_offsets
    (FindCoordinator + OffsetFetch)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    client = admin(bootstrap)
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    fut = client.list_consumer_group_offsets([req], request_timeout=OP_TIMEOUT_S)[group]
    res = fut.result(timeout=OP_TIMEOUT_S)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"offset fetch error for {tp}: {tp.error}"
        out[tp.partition] = tp.offset if tp.offset >= 0 else -1
    return out


def describe_confluent(bootstrap: str, group: str):
    client = admin(bootstrap)
    fut = client.describe_consumer_groups([group], request_timeout=OP_TIMEOUT_S)[group]
    try:
        return fut.result(timeout=OP_TIMEOUT_S)
    except KafkaException as err:
        raise AssertionError(f"describe_consumer_groups({group}): {err}") from err
