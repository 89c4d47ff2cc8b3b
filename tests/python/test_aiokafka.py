"""aiokafka: produce and consume round trip with manual assignment."""

import asyncio

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from helpers import create_topic, payload, unique_topic


async def _round_trip(bootstrap, topic, codec):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec,
                                request_timeout_ms=15000)
    await producer.start()
    sent = {}
    try:
        for i in range(120):
            key = f"k{i % 5}".encode()
            value = payload(9000 + i, 1 + (i * 71) % 2500)
            headers = [("n", str(i).encode())]
            md = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
            sent.setdefault(md.partition, []).append((md.offset, key, value, headers))
        # A batch of sends in flight at once, awaited together.
        futures = [await producer.send(topic, value=b"batch-%d" % i, key=b"batch", partition=0)
                   for i in range(30)]
        for i, md in enumerate(await asyncio.gather(*futures)):
            sent.setdefault(md.partition, []).append((md.offset, b"batch", b"batch-%d" % i, []))
    finally:
        await producer.stop()
    for p, rows in sent.items():
        assert [r[0] for r in rows] == list(range(len(rows))), f"offsets on partition {p} in send order"

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="none", request_timeout_ms=15000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = {p: [] for p in range(3)}
        want = sum(len(v) for v in sent.values())

        async def drain():
            while sum(len(v) for v in got.values()) < want:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    for r in records:
                        got[tp.partition].append((r.offset, r.key, r.value, list(r.headers)))

        await asyncio.wait_for(drain(), timeout=30)
        for p in range(3):
            assert got[p] == sent.get(p, []), f"partition {p} differs"
        ends = await consumer.end_offsets(tps)
        assert ends == {TopicPartition(topic, p): len(sent.get(p, [])) for p in range(3)}
    finally:
        await consumer.stop()


def test_version():
    assert aiokafka.__version__ == "0.14.0", aiokafka.__version__


def test_round_trip(broker):
    topic = unique_topic("aio")
    create_topic(broker.bootstrap, topic, partitions=3)
    asyncio.run(asyncio.wait_for(_round_trip(broker.bootstrap, topic, None), timeout=90))


def test_round_trip_gzip(broker):
    topic = unique_topic("aio-gzip")
    create_topic(broker.bootstrap, topic, partitions=3)
    asyncio.run(asyncio.wait_for(_round_trip(broker.bootstrap, topic, "gzip"), timeout=90))
