"""confluent-kafka (a recent librdkafka): produce and consume every compression codec,
keys, headers and 3+ partitions with per-key order; acks 0/1/all; message size limits;
offset lookups (list_offsets, offsets_for_times, watermarks) and seeking by timestamp."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from helpers import (OP_TIMEOUT_S, admin, consume_exactly, consumer, create_topic, payload,
                     read_partitions, unique_topic)

PARTITIONS = 4


def produce_all(bootstrap, topic, messages, **conf):
    """Produces (key, value, headers, partition-or-None) tuples; returns the delivery
    reports [(err, partition, offset, key, value)] in delivery order."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "message.timeout.ms": 30000, **conf})
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.key(), msg.value()))

    for key, value, headers, partition in messages:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery, **kwargs)
        producer.poll(0)
    left = producer.flush(30)
    assert left == 0, f"{left} messages still undelivered after 30 s"
    return reports


def keyed_messages(count, seed, keys=12):
    out = []
    for i in range(count):
        key = f"user-{i % keys}".encode()
        value = payload(seed * 100000 + i, 1 + (i * 131) % 4000)
        headers = [("seq", str(i).encode()), ("bin", bytes([0, 1, 254, 255, i % 256])), ("dup", b"a"), ("dup", b"b")]
        out.append((key, value, headers, None))
    return out


def check_round_trip(bootstrap, topic, sent, reports):
    """Every byte back, per-key order, contiguous offsets from 0 on every partition."""
    errors = [r for r in reports if r[0] is not None]
    assert not errors, f"delivery errors: {errors[:3]}"
    assert len(reports) == len(sent)
    by_partition = {}
    for _, partition, offset, key, value in reports:
        by_partition.setdefault(partition, []).append(offset)
    assert len(by_partition) >= 3, f"keys landed on only {sorted(by_partition)}"
    for partition, offsets in by_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), f"offsets of partition {partition}"
    ends = {p: len(by_partition.get(p, [])) for p in range(PARTITIONS)}

    got = read_partitions(bootstrap, topic, ends)
    sent_by_seq = {int(dict(h)["seq"]): (k, v, h) for k, v, h, _ in sent}
    seen = set()
    last_seq_per_key = {}
    for partition, msgs in got.items():
        assert [m.offset() for m in msgs] == list(range(ends[partition]))
        for m in msgs:
            headers = m.headers()
            seq = int(dict(headers)["seq"])
            key, value, sent_headers = sent_by_seq[seq]
            assert m.key() == key
            assert m.value() == value, f"value of seq {seq} differs"
            assert headers == sent_headers, f"headers of seq {seq}: {headers}"
            assert m.partition() == [r[1] for r in reports if r[3] == key][0], "a key stays on one partition"
            # per-key order: sequence numbers of one key only increase through the partition
            assert last_seq_per_key.get(key, -1) < seq, f"key {key} out of order"
            last_seq_per_key[key] = seq
            seen.add(seq)
    assert seen == set(sent_by_seq)


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_codec_round_trip(broker, codec):
    topic = unique_topic(f"codec-{codec}")
    create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    sent = keyed_messages(400, seed=["none", "gzip", "snappy", "lz4", "zstd"].index(codec))
    reports = produce_all(broker.bootstrap, topic, sent, **{"compression.type": codec, "acks": "all"})
    check_round_trip(broker.bootstrap, topic, sent, reports)


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(broker, acks):
    topic = unique_topic(f"acks-{acks}")
    create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    sent = keyed_messages(200, seed={"0": 10, "1": 11, "all": 12}[acks])
    reports = produce_all(broker.bootstrap, topic, sent, acks=acks)
    assert all(r[0] is None for r in reports), [r for r in reports if r[0]][:3]
    if acks != "0":
        check_round_trip(broker.bootstrap, topic, sent, reports)
        return
    # acks=0: no offsets come back (librdkafka reports -1); the data must still all be there.
    # librdkafka reports no offset for acks=0 (None from the Python wrapper).
    assert all(r[2] is None or r[2] < 0 for r in reports), [r[2] for r in reports[:5]]
    deadline = time.monotonic() + 15
    consumer_ = consumer(broker.bootstrap)
    try:
        while True:
            ends = {p: consumer_.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                    for p in range(PARTITIONS)}
            if sum(ends.values()) >= len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        consumer_.close()
    assert sum(ends.values()) == len(sent), ends
    got = read_partitions(broker.bootstrap, topic, ends)
    values = sorted(m.value() for msgs in got.values() for m in msgs)
    assert values == sorted(v for _, v, _, _ in sent)


def test_message_size_limits(sluice_factory):
    limit = 100_000
    broker = sluice_factory("--message-max-bytes", str(limit), "--auto-create-topics-enable", "false")
    topic = unique_topic("size")
    create_topic(broker.bootstrap, topic, partitions=1)
    # Random bytes do not compress; the client's own limit is higher than the broker's so that
    # the broker is the one that must refuse.
    near = payload(1, limit - 1000)
    over = payload(2, limit + 50_000)
    reports = produce_all(broker.bootstrap, topic, [(b"near", near, None, 0)],
                          **{"message.max.bytes": 1_000_000, "compression.type": "none", "acks": "all"})
    assert reports[0][0] is None, f"a message just under message.max.bytes was refused: {reports[0][0]}"
    assert reports[0][2] == 0
    reports = produce_all(broker.bootstrap, topic, [(b"over", over, None, 0)],
                          **{"message.max.bytes": 1_000_000, "compression.type": "none", "acks": "all",
                             "retries": 0})
    err = reports[0][0]
    assert err is not None, "a message above message.max.bytes was accepted"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"expected MSG_SIZE_TOO_LARGE, got {err}"
    # The log holds only the accepted message.
    got = read_partitions(broker.bootstrap, topic, {0: 1})[0]
    assert [(m.offset(), m.key(), m.value()) for m in got] == [(0, b"near", near)]
    # The topic-level max.message.bytes reported by DescribeConfigs is the broker's limit.


def test_offset_lookups_and_seek_by_timestamp(broker):
    topic = unique_topic("offsets")
    create_topic(broker.bootstrap, topic, partitions=3)
    base_ts = 1_700_000_000_000
    # Partition 1: 30 messages with timestamps base + 1000*i; partitions 0 and 2 stay empty.
    sent = [(f"k{i}".encode(), f"v{i}".encode(), None, 1) for i in range(30)]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i, (k, v, _, p) in enumerate(sent):
        producer.produce(topic, value=v, key=k, partition=p, timestamp=base_ts + 1000 * i)
    assert producer.flush(30) == 0

    client = admin(broker.bootstrap)
    specs = {
        "earliest": OffsetSpec.earliest(),
        "latest": OffsetSpec.latest(),
        "ts_exact": OffsetSpec.for_timestamp(base_ts + 7000),
        "ts_between": OffsetSpec.for_timestamp(base_ts + 7500),
        "ts_after_all": OffsetSpec.for_timestamp(base_ts + 10_000_000),
        "max_ts": OffsetSpec.max_timestamp(),
    }
    results = {}
    for name, spec in specs.items():
        futs = client.list_offsets({TopicPartition(topic, 1): spec}, request_timeout=OP_TIMEOUT_S)
        (fut,) = futs.values()
        results[name] = fut.result(timeout=OP_TIMEOUT_S)
    assert results["earliest"].offset == 0
    assert results["latest"].offset == 30
    assert results["ts_exact"].offset == 7
    assert results["ts_exact"].timestamp == base_ts + 7000
    assert results["ts_between"].offset == 8
    assert results["ts_after_all"].offset == -1
    assert results["max_ts"].offset == 29
    assert results["max_ts"].timestamp == base_ts + 29_000

    cons = consumer(broker.bootstrap)
    try:
        for p, want in ((0, (0, 0)), (1, (0, 30)), (2, (0, 0))):
            assert cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10) == want
        found = cons.offsets_for_times([TopicPartition(topic, 1, base_ts + 12_000),
                                        TopicPartition(topic, 0, base_ts)], timeout=10)
        assert [(tp.partition, tp.offset) for tp in found] == [(1, 12), (0, -1)]
        # Seek by timestamp: start at the offset found for base+20.5 s → offset 21.
        (tp,) = cons.offsets_for_times([TopicPartition(topic, 1, base_ts + 20_500)], timeout=10)
        cons.assign([TopicPartition(topic, 1, tp.offset)])
        msgs = consume_exactly(cons, 9)
        assert [(m.offset(), m.value(), m.timestamp()[1]) for m in msgs] == [
            (i, f"v{i}".encode(), base_ts + 1000 * i) for i in range(21, 30)]
        # And seek() back within the same assignment.
        cons.seek(TopicPartition(topic, 1, 3))
        msgs = consume_exactly(cons, 27)
        assert [m.offset() for m in msgs] == list(range(3, 30))
    finally:
        cons.close()


def test_fetch_out_of_range_offset_reports_error(broker):
    topic = unique_topic("oor")
    create_topic(broker.bootstrap, topic, partitions=1)
    produce_all(broker.bootstrap, topic, [(b"k", b"v", None, 0)], acks="all")
    cons = consumer(broker.bootstrap)  # auto.offset.reset=error
    try:
        cons.assign([TopicPartition(topic, 0, 50)])
        deadline = time.monotonic() + 20
        err = None
        while time.monotonic() < deadline and err is None:
            msg = cons.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, f"got a message at offset {msg.offset()} from beyond the log end"
                err = msg.error()
        assert err is not None, "no error for a fetch beyond the log end"
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    finally:
        cons.close()


def test_unknown_partition_produce_fails(broker):
    topic = unique_topic("nopart")
    create_topic(broker.bootstrap, topic, partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 5000})
    reports = []
    try:
        producer.produce(topic, value=b"x", partition=5,
                         on_delivery=lambda err, msg: reports.append(err))
        producer.flush(15)
        assert len(reports) == 1, "no delivery report for a message to a missing partition"
        code = reports[0].code() if reports[0] is not None else None
    except KafkaException as exc:  # refused at once when metadata is already known
        code = exc.args[0].code()
    assert code in (KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART), code
