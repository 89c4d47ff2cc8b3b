"""One consumer-group member, run as its own process so a test can SIGKILL it.

    python group_member.py --client confluent|kafka-python|aiokafka --bootstrap HOST:PORT
        --group G --topic T --events FILE --stop FILE [--strategy S] [--instance-id I]
        [--session-ms MS] [--batch N] [--sleep-ms MS]

It subscribes, consumes in batches of at most --batch messages, checks every message byte
for byte against `message(seq)`, commits the batch's offsets synchronously before the next
poll, and appends one line per event to --events (flushed after every batch, so a SIGKILL
loses at most the batch in hand):

    S <wall time>                          started
    A <wall time> <generation> <p,p,...>   the member's whole assignment after a change
    R <wall time> <p,p,...>                partitions revoked (L: lost)
    M <partition> <offset> <seq> <ok>      a message; ok is 1 when key and value are exact
    C <partition> <offset>                 a committed offset (the next one to read)
    E <text>                               an error the client reported
    X <wall time>                          closed cleanly

It stops when the --stop file exists, and exits on its own after --max-seconds (bounded).
Generation is -1 when the client does not expose it (librdkafka).
"""

import argparse
import asyncio
import os
import random
import sys
import time

KEYS = 60
MAX_SECONDS = 170.0


def message(seq: int):
    """The key and value of message `seq`: 60 keys, a value that starts with the sequence
    number and goes on with 1-240 pseudo-random bytes (all byte values occur)."""
    key = b"key-%03d" % (seq % KEYS)
    value = b"%d|" % seq + random.Random(seq).randbytes(1 + (seq * 37) % 240)
    return key, value


def check(key, value):
    """(seq, ok) for a consumed message; seq -1 when the value is not one of ours."""
    try:
        seq = int(bytes(value).split(b"|", 1)[0])
    except (ValueError, TypeError):
        return -1, 0
    want_key, want_value = message(seq)
    return seq, int(key == want_key and value == want_value)


def parts(ps):
    return ",".join(str(p) for p in sorted(ps)) or "-"


class Events:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1 << 16)

    def put(self, *fields):
        self.f.write(" ".join(str(x) for x in fields) + "\n")

    def flush(self):
        self.f.flush()


def run_confluent(a, ev):
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "client.id": f"member-{a.instance_id or os.getpid()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "partition.assignment.strategy": a.strategy,
        "session.timeout.ms": a.session_ms,
        "heartbeat.interval.ms": max(500, a.session_ms // 6),
        "topic.metadata.refresh.interval.ms": 5000,
    }
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    cons = Consumer(conf)
    assignment = set()
    cooperative = a.strategy == "cooperative-sticky"

    def on_assign(c, tps):
        nonlocal assignment
        new = {tp.partition for tp in tps}
        assignment = (assignment | new) if cooperative else new
        ev.put("A", time.time(), -1, parts(assignment))
        ev.flush()

    def on_revoke(c, tps, tag="R"):
        nonlocal assignment
        gone = {tp.partition for tp in tps}
        assignment = (assignment - gone) if cooperative else set()
        ev.put(tag, time.time(), parts(gone))
        ev.flush()

    cons.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke,
                   on_lost=lambda c, tps: on_revoke(c, tps, "L"))
    deadline = time.monotonic() + a.max_seconds
    try:
        while not os.path.exists(a.stop) and time.monotonic() < deadline:
            msgs = cons.consume(a.batch, 0.2)
            ends = {}
            for m in msgs:
                if m.error() is not None:
                    ev.put("E", str(m.error()).replace("\n", " "))
                    continue
                seq, ok = check(m.key(), m.value())
                ev.put("M", m.partition(), m.offset(), seq, ok)
                ends[m.partition()] = m.offset() + 1
            ev.flush()  # what was consumed is on file before its commit is sent
            if ends:
                try:
                    cons.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in ends.items()],
                                asynchronous=False)
                    for p, o in ends.items():
                        ev.put("C", p, o)
                except KafkaException as err:
                    ev.put("E", f"commit: {err}".replace("\n", " "))
            ev.flush()
            if a.sleep_ms and msgs:
                time.sleep(a.sleep_ms / 1000)
    finally:
        cons.close()
        ev.put("X", time.time())
        ev.flush()


def run_kafka_python(a, ev):
    import logging
    # The coordinator's INFO lines say why a member rejoins; they go to the member's stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka.coordinator").setLevel(logging.INFO)
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    cons = KafkaConsumer(
        bootstrap_servers=a.bootstrap, group_id=a.group,
        client_id=f"member-{a.instance_id or os.getpid()}",
        group_instance_id=a.instance_id or None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=a.session_ms, heartbeat_interval_ms=max(500, a.session_ms // 6),
        max_poll_records=a.batch, request_timeout_ms=30000)
    assignment = set()

    def generation():
        gen = getattr(getattr(cons, "_coordinator", None), "_generation", None)
        return getattr(gen, "generation_id", -1) if gen is not None else -1

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            gone = {tp.partition for tp in revoked}
            assignment.difference_update(gone)
            ev.put("R", time.time(), parts(gone))
            ev.flush()

        def on_partitions_assigned(self, assigned):
            assignment.update(tp.partition for tp in assigned)
            ev.put("A", time.time(), generation(), parts(assignment))
            ev.flush()

    cons.subscribe([a.topic], listener=Listener())
    deadline = time.monotonic() + a.max_seconds
    try:
        while not os.path.exists(a.stop) and time.monotonic() < deadline:
            batch = cons.poll(timeout_ms=200, max_records=a.batch)
            ends = {}
            for tp, msgs in batch.items():
                for m in msgs:
                    seq, ok = check(m.key, m.value)
                    ev.put("M", m.partition, m.offset, seq, ok)
                    ends[m.partition] = m.offset + 1
            ev.flush()
            if ends:
                try:
                    cons.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o, "", -1)
                                 for p, o in ends.items()})
                    for p, o in ends.items():
                        ev.put("C", p, o)
                except KafkaError as err:
                    ev.put("E", f"commit: {err!r}".replace("\n", " "))
            ev.flush()
            if a.sleep_ms and ends:
                time.sleep(a.sleep_ms / 1000)
    finally:
        cons.close()
        ev.put("X", time.time())
        ev.flush()


async def run_aiokafka(a, ev):
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import KafkaError

    cons = AIOKafkaConsumer(
        bootstrap_servers=a.bootstrap, group_id=a.group,
        client_id=f"member-{a.instance_id or os.getpid()}",
        group_instance_id=a.instance_id or None,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=a.session_ms, heartbeat_interval_ms=max(500, a.session_ms // 6),
        max_poll_records=a.batch, request_timeout_ms=30000)
    assignment = set()

    def generation():
        coord = getattr(cons, "_coordinator", None)
        return getattr(coord, "generation", -1) if coord is not None else -1

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            gone = {tp.partition for tp in revoked}
            assignment.difference_update(gone)
            ev.put("R", time.time(), parts(gone))
            ev.flush()

        def on_partitions_assigned(self, assigned):
            assignment.clear()
            assignment.update(tp.partition for tp in assigned)
            ev.put("A", time.time(), generation(), parts(assignment))
            ev.flush()

    await cons.start()
    cons.subscribe([a.topic], listener=Listener())
    deadline = time.monotonic() + a.max_seconds
    try:
        while not os.path.exists(a.stop) and time.monotonic() < deadline:
            batch = await cons.getmany(timeout_ms=200, max_records=a.batch)
            ends = {}
            for tp, msgs in batch.items():
                for m in msgs:
                    seq, ok = check(m.key, m.value)
                    ev.put("M", m.partition, m.offset, seq, ok)
                    ends[m.partition] = m.offset + 1
            ev.flush()
            if ends:
                try:
                    await cons.commit({TopicPartition(a.topic, p): o for p, o in ends.items()})
                    for p, o in ends.items():
                        ev.put("C", p, o)
                except KafkaError as err:
                    ev.put("E", f"commit: {err!r}".replace("\n", " "))
            ev.flush()
            if a.sleep_ms and ends:
                await asyncio.sleep(a.sleep_ms / 1000)
    finally:
        await cons.stop()
        ev.put("X", time.time())
        ev.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, choices=["confluent", "kafka-python", "aiokafka"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--stop", required=True)
    ap.add_argument("--strategy", default="range")
    ap.add_argument("--instance-id", default="")
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--sleep-ms", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    a = ap.parse_args()
    ev = Events(a.events)
    ev.put("S", time.time())
    ev.flush()
    if a.client == "confluent":
        run_confluent(a, ev)
    elif a.client == "kafka-python":
        run_kafka_python(a, ev)
    else:
        asyncio.run(run_aiokafka(a, ev))


if __name__ == "__main__":
    sys.exit(main())
