"""Compatibility rules from DESIGN.md that no client library exercises directly:

- Produce is advertised from v0 (older librdkafka keeps its codecs) but v0-v2 requests are
  refused by closing the connection, as Kafka 4 does (KIP-896);
- topic ids are real: Produce v13 and Fetch v13+ address topics by the id a client got
  from the broker (here from confluent-kafka's describe_topics), and an unknown id is
  UNKNOWN_TOPIC_ID;
- OffsetForLeaderEpoch gives the end offset of the current leader epoch (KIP-320).
"""

import struct

from confluent_kafka import TopicCollection

import kafka_wire as w
from helpers import OP_TIMEOUT_S, admin, create_topic, unique_topic

API_FETCH = 1
API_OFFSET_FOR_LEADER_EPOCH = 23
UNKNOWN_TOPIC_ID = 100


def topic_id_bytes(bootstrap, topic):
    client = admin(bootstrap)  # must outlive the future
    desc = client.describe_topics(TopicCollection([topic]), request_timeout=OP_TIMEOUT_S)[topic].result()
    tid = desc.topic_id
    return struct.pack(">qq", tid.get_most_significant_bits(), tid.get_least_significant_bits())


def compact_bytes(b):
    return w.uvarint(len(b) + 1) + b


def read_uvarint(r):
    shift = value = 0
    while True:
        byte = r.take(1)[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7


def skip_tags(r):
    for _ in range(read_uvarint(r)):
        read_uvarint(r)
        r.take(read_uvarint(r))


def produce_v13(corr, topic_id, batch, acks=-1):
    body = (w.uvarint(0)  # transactional_id: null
            + w.int16(acks) + w.int32(10_000)
            + w.uvarint(2) + topic_id
            + w.uvarint(2) + w.int32(0) + compact_bytes(batch) + w.uvarint(0)
            + w.uvarint(0)  # topic tags
            + w.uvarint(0))  # request tags
    return w.frame(w.request_header(w.API_PRODUCE, 13, corr, flexible=True) + body)


def parse_produce_v13(body):
    r = w.Reader(body)
    corr = r.int32()
    skip_tags(r)
    assert read_uvarint(r) == 2
    topic_id = r.take(16)
    assert read_uvarint(r) == 2
    r.int32()  # partition index
    error = r.int16()
    base_offset = r.int64()
    return corr, topic_id, error, base_offset


def fetch_v13(corr, topic_id, offset):
    partition = (w.int32(0) + w.int32(-1) + w.int64(offset) + w.int32(-1) + w.int64(-1)
                 + w.int32(1 << 20) + w.uvarint(0))
    body = (w.int32(-1) + w.int32(100) + w.int32(1) + w.int32(1 << 20) + w.int8(0)
            + w.int32(0) + w.int32(-1)  # no fetch session
            + w.uvarint(2) + topic_id + w.uvarint(2) + partition + w.uvarint(0)
            + w.uvarint(1)  # forgotten topics: empty
            + w.compact_string("")  # rack id
            + w.uvarint(0))
    return w.frame(w.request_header(API_FETCH, 13, corr, flexible=True) + body)


def parse_fetch_v13(body):
    """Returns (correlation id, topic id, partition error, high watermark, records)."""
    r = w.Reader(body)
    corr = r.int32()
    skip_tags(r)
    r.int32()  # throttle
    assert r.int16() == 0  # top-level error
    r.int32()  # session id
    assert read_uvarint(r) == 2
    topic_id = r.take(16)
    assert read_uvarint(r) == 2
    r.int32()  # partition index
    error = r.int16()
    hw = r.int64()
    r.int64()  # last stable offset
    r.int64()  # log start offset
    aborted = read_uvarint(r)
    assert aborted in (0, 1)  # null or empty
    r.int32()  # preferred read replica
    n = read_uvarint(r)
    records = b"" if n == 0 else r.take(n - 1)
    return corr, topic_id, error, hw, records


def test_produce_v0_to_v2_are_refused_by_closing_the_connection(broker):
    topic = unique_topic("oldproduce")
    create_topic(broker.bootstrap, topic, partitions=1)
    for version in (0, 1, 2):
        s = w.connect(broker.bootstrap)
        body = w.int16(1) + w.int32(1000) + w.int32(1) + w.string(topic) + w.int32(1) + w.int32(0) + w.int32(0)
        s.sendall(w.frame(w.request_header(w.API_PRODUCE, version, 7) + body))
        w.expect_closed(s)
        s.close()
    # ApiVersions still advertises Produce from v0.
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(0, 1))
    _, error, apis, _ = w.parse_api_versions_v0(w.read_frame(s))
    s.close()
    assert error == 0 and apis[w.API_PRODUCE][0] == 0


def test_produce_and_fetch_v13_address_topics_by_id(broker):
    topic = unique_topic("byid")
    create_topic(broker.bootstrap, topic, partitions=1)
    tid = topic_id_bytes(broker.bootstrap, topic)
    assert tid != bytes(16)
    batch = w.record_batch([(b"k1", b"value-one"), (b"k2", b"value-two")])
    s = w.connect(broker.bootstrap)
    try:
        s.sendall(produce_v13(11, tid, batch))
        assert parse_produce_v13(w.read_frame(s)) == (11, tid, 0, 0)
        s.sendall(produce_v13(12, tid, batch))
        assert parse_produce_v13(w.read_frame(s)) == (12, tid, 0, 2)

        s.sendall(fetch_v13(13, tid, 0))
        corr, got_tid, error, hw, records = parse_fetch_v13(w.read_frame(s))
        assert (corr, got_tid, error, hw) == (13, tid, 0, 4)
        assert records.count(b"value-one") == 2 and records.count(b"value-two") == 2

        unknown = bytes(range(1, 17))
        s.sendall(produce_v13(14, unknown, batch))
        assert parse_produce_v13(w.read_frame(s))[:3] == (14, unknown, UNKNOWN_TOPIC_ID)
        s.sendall(fetch_v13(15, unknown, 0))
        assert parse_fetch_v13(w.read_frame(s))[:3] == (15, unknown, UNKNOWN_TOPIC_ID)
    finally:
        s.close()


def test_offset_for_leader_epoch_ends_the_current_epoch_at_the_log_end(broker):
    topic = unique_topic("ofle")
    create_topic(broker.bootstrap, topic, partitions=1)
    s = w.connect(broker.bootstrap)
    try:
        for i in range(3):
            s.sendall(w.produce_request(8, i, -1, topic, 0, w.record_batch([(None, b"x")])))
            w.read_frame(s)
        # v3: replica_id, topics [topic, partitions [partition, current_leader_epoch, leader_epoch]]
        body = (w.int32(-1) + w.int32(1) + w.string(topic)
                + w.int32(1) + w.int32(0) + w.int32(-1) + w.int32(0))
        s.sendall(w.frame(w.request_header(API_OFFSET_FOR_LEADER_EPOCH, 3, 21) + body))
        r = w.Reader(w.read_frame(s))
        assert r.int32() == 21
        r.int32()  # throttle
        assert r.int32() == 1
        assert r.take(r.int16()).decode() == topic
        assert r.int32() == 1
        error, partition, epoch, end_offset = r.int16(), r.int32(), r.int32(), r.int64()
        assert (error, partition, epoch, end_offset) == (0, 0, 0, 3)
    finally:
        s.close()
