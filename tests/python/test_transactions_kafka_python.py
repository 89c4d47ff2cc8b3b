"""Transactions with kafka-python 3.x and aiokafka, two more client families than the
librdkafka (test_transactions.py) and kafkajs suites: commit and abort seen through
read_committed and read_uncommitted consumers, and offsets sent to a transaction that
become the group's committed offsets only when it commits. Every wait is bounded."""

import asyncio
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

DEADLINE_S = 30.0


def new_topic(bootstrap, prefix, partitions=2):
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def read_values(bootstrap, topic, isolation, expect_end):
    """Every value of `topic` up to the given end offsets, read at `isolation`."""
    cons = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                         enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in expect_end]
        cons.assign(tps)
        cons.seek_to_beginning()
        values = []
        deadline = time.monotonic() + DEADLINE_S
        while any(cons.position(tp) < expect_end[tp.partition] for tp in tps):
            assert time.monotonic() < deadline, (
                f"{isolation}: positions {[cons.position(tp) for tp in tps]}, want {expect_end}")
            for records in cons.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
        return values
    finally:
        cons.close()


def end_offsets(bootstrap, topic, partitions):
    cons = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = cons.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        cons.close()


def test_kafka_python_commit_and_abort(broker):
    b = broker.bootstrap
    topic = new_topic(b, "kp-txn")
    producer = KafkaProducer(bootstrap_servers=b, transactional_id=f"kp-{uuid.uuid4().hex[:6]}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(10):
            producer.send(topic, value=f"commit-{i}".encode(), partition=i % 2)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(6):
            producer.send(topic, value=f"abort-{i}".encode(), partition=i % 2)
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, value=b"commit-last", partition=0)
        producer.commit_transaction()
    finally:
        producer.close()

    ends = end_offsets(b, topic, 2)
    # 17 records and one marker per partition per transaction.
    assert sum(ends.values()) == 17 + 2 + 2 + 1, ends
    committed = read_values(b, topic, "read_committed", ends)
    everything = read_values(b, topic, "read_uncommitted", ends)
    assert sorted(committed) == sorted([f"commit-{i}".encode() for i in range(10)] + [b"commit-last"])
    assert sorted(everything) == sorted(committed + [f"abort-{i}".encode() for i in range(6)])


def test_kafka_python_offsets_sent_to_a_transaction_commit_with_it(broker):
    b = broker.bootstrap
    src = new_topic(b, "kp-src", partitions=1)
    out = new_topic(b, "kp-out", partitions=1)
    group = f"kp-g-{uuid.uuid4().hex[:6]}"
    plain = KafkaProducer(bootstrap_servers=b)
    for i in range(20):
        plain.send(src, value=f"in-{i}".encode(), partition=0)
    plain.flush()
    plain.close()

    producer = KafkaProducer(bootstrap_servers=b, transactional_id=f"kp-{uuid.uuid4().hex[:6]}")
    admin = KafkaAdminClient(bootstrap_servers=b)
    tp = TopicPartition(src, 0)
    try:
        producer.init_transactions()
        # Aborted: the offsets must not move.
        producer.begin_transaction()
        producer.send(out, value=b"x", partition=0)
        producer.send_offsets_to_transaction({tp: OffsetAndMetadata(10, "", -1)}, group)
        producer.abort_transaction()
        assert tp not in admin.list_group_offsets(group)[group]
        # Committed: they do.
        producer.begin_transaction()
        producer.send(out, value=b"y", partition=0)
        producer.send_offsets_to_transaction({tp: OffsetAndMetadata(15, "", -1)}, group)
        producer.commit_transaction()
        assert admin.list_group_offsets(group)[group][tp].offset == 15
    finally:
        producer.close()
        admin.close()
    assert read_values(b, out, "read_committed", end_offsets(b, out, 1)) == [b"y"]


def test_aiokafka_commit_abort_and_read_committed(broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    b = broker.bootstrap
    topic = new_topic(b, "aio-txn", partitions=1)

    async def run():
        producer = AIOKafkaProducer(bootstrap_servers=b,
                                    transactional_id=f"aio-{uuid.uuid4().hex[:6]}")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(5):
                    await producer.send_and_wait(topic, f"commit-{i}".encode(), partition=0)
            await producer.begin_transaction()
            for i in range(3):
                await producer.send_and_wait(topic, f"abort-{i}".encode(), partition=0)
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"commit-5", partition=0)
        finally:
            await producer.stop()

        got = {}
        for isolation in ("read_committed", "read_uncommitted"):
            cons = AIOKafkaConsumer(topic, bootstrap_servers=b, isolation_level=isolation,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
            await cons.start()
            try:
                values = []
                want = 6 if isolation == "read_committed" else 9
                deadline = time.monotonic() + DEADLINE_S
                while len(values) < want and time.monotonic() < deadline:
                    batch = await cons.getmany(timeout_ms=500)
                    for records in batch.values():
                        values.extend(r.value for r in records)
                # Nothing more arrives (no aborted record slips through later).
                batch = await cons.getmany(timeout_ms=1000)
                values.extend(r.value for records in batch.values() for r in records)
                got[isolation] = values
            finally:
                await cons.stop()
        return got

    got = asyncio.run(asyncio.wait_for(run(), 90))
    assert got["read_committed"] == [f"commit-{i}".encode() for i in range(6)]
    assert sorted(got["read_uncommitted"]) == sorted(
        got["read_committed"] + [f"abort-{i}".encode() for i in range(3)])
