"""Shared helpers for the client tests: deterministic payloads, topic admin and
bounded consume loops with confluent-kafka."""

import random
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

OP_TIMEOUT_S = 15.0


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def payload(seed: int, size: int) -> bytes:
    """`size` pseudo-random bytes (all 256 values occur) determined by `seed`."""
    return random.Random(seed).randbytes(size)


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 3, config=None):
    client = admin(bootstrap)  # must outlive the futures: a destroyed handle fails them
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=OP_TIMEOUT_S, request_timeout=OP_TIMEOUT_S)
    futures[name].result(timeout=OP_TIMEOUT_S)
    wait_for_topic(bootstrap, name, partitions)


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout: float = OP_TIMEOUT_S):
    """Bounded wait until metadata shows the topic with `partitions` partitions, each with a leader."""
    client = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = client.list_topics(topic=name, timeout=5)
        last = md.topics.get(name)
        if (last is not None and last.error is None and len(last.partitions) == partitions
                and all(p.leader >= 0 for p in last.partitions.values())):
            return md
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last}")


def consumer(bootstrap: str, **extra) -> Consumer:
    """A confluent-kafka consumer for manual assignment only (no group membership).

    The Python wrapper insists on a group.id; nothing is committed and
    subscribe() is never called, so the group is never joined.
    """
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"unused-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "error",
    }
    conf.update(extra)
    return Consumer(conf)


def consume_exactly(cons: Consumer, count: int, timeout: float = 30.0, tolerate=()):
    """Polls until `count` messages arrived (bounded by `timeout`); fails on any error
    event except those whose code is in `tolerate`."""
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumed {len(messages)} of {count} messages within {timeout}s")
        msg = cons.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None and err.code() in tolerate:
            continue
        if err is not None:
            raise AssertionError(f"consumer error: {err} (code {err.code()}, "
                                 f"topic {msg.topic()} partition {msg.partition()})")
        messages.append(msg)
    # Nothing beyond what was produced.
    extra = cons.poll(0.5)
    assert extra is None, (f"unexpected extra message/event: error={extra.error()} "
                           f"partition={extra.partition()} offset={extra.offset()}")
    return messages


def read_partitions(bootstrap: str, topic: str, ends: dict, timeout: float = 30.0):
    """Reads every partition in `ends` ({partition: end offset}) from offset 0 with assign();
    returns {partition: [message, ...]}."""
    cons = consumer(bootstrap)
    try:
        total = sum(ends.values())
        cons.assign([TopicPartition(topic, p, 0) for p, end in ends.items() if end > 0])
        msgs = consume_exactly(cons, total, timeout) if total else []
    finally:
        cons.close()
    out = {p: [] for p in ends}
    for m in msgs:
        out[m.partition()].append(m)
    return out
