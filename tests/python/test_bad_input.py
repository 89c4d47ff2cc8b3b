"""Bad input over a raw socket, and the wire-level compatibility rules of
DESIGN.md (ApiVersions fallback, acks=0 gets no response, responses in order).

Each bad input must close that connection while a concurrent, well-behaved
client keeps producing and /healthz stays 200.
"""

import random
import socket
import time

import pytest
from confluent_kafka import Producer

import kafka_wire as w
from conftest import http_get
from helpers import create_topic, read_partitions, unique_topic


def _healthz_ok(broker):
    status, _ = http_get(broker.admin, "/healthz")
    assert status == 200, f"/healthz answered {status}"


class GoodClient:
    """A confluent-kafka producer that stays connected across the bad inputs; every
    message it sends must be acknowledged at the next offset."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "linger.ms": 0, "message.timeout.ms": 15000})
        self.sent = []
        self.acked = []

    def produce_one(self):
        value = f"good-{len(self.sent)}".encode()
        results = []
        self.producer.produce(self.topic, value=value, partition=0,
                              on_delivery=lambda err, msg: results.append((err, msg)))
        left = self.producer.flush(15)
        assert left == 0, "good client's message not delivered within 15 s"
        err, msg = results[0]
        assert err is None, f"good client's produce failed: {err}"
        assert msg.offset() == len(self.sent), (msg.offset(), len(self.sent))
        self.sent.append(value)


BAD_INPUTS = {
    # A well-formed length prefix and 200 seeded random bytes: garbage header.
    "random_frame": lambda: w.int32(200) + bytes([0x7A, 0x3C]) + random.Random(7).randbytes(198),
    # Pure random bytes; the first four (0xd7...) read as a negative length.
    "random_bytes": lambda: bytes([0xD7, 0x11, 0x42, 0x09]) + random.Random(11).randbytes(4092),
    "length_0x7fffffff": lambda: b"\x7f\xff\xff\xff",
    "length_negative": lambda: b"\xff\xff\xff\xff",
    "unknown_api_key_9999": lambda: w.frame(w.request_header(9999, 0, 1) + b"\x00" * 16),
    # Metadata v999 does not exist: an unsupported version of an API other than ApiVersions.
    "unsupported_metadata_version": lambda: w.frame(w.request_header(w.API_METADATA, 999, 1) + w.int32(-1)),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_closes_connection_and_broker_keeps_serving(broker, name):
    topic = unique_topic("bad-input")
    create_topic(broker.bootstrap, topic, partitions=1)
    good = GoodClient(broker.bootstrap, topic)
    good.produce_one()

    bad = w.connect(broker.bootstrap)
    try:
        bad.sendall(BAD_INPUTS[name]())
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed before we finished writing: also a close
    else:
        w.expect_closed(bad, timeout=10)
    finally:
        bad.close()

    good.produce_one()
    _healthz_ok(broker)
    assert broker.alive()
    got = read_partitions(broker.bootstrap, topic, {0: len(good.sent)})[0]
    assert [m.value() for m in got] == good.sent


def test_truncated_frame_then_close(broker):
    topic = unique_topic("truncated")
    create_topic(broker.bootstrap, topic, partitions=1)
    good = GoodClient(broker.bootstrap, topic)
    good.produce_one()

    # A frame that promises 100 bytes, delivers 20, then half-closes: the broker
    # must notice the EOF mid-frame and close its side.
    s = w.connect(broker.bootstrap)
    s.sendall(w.int32(100) + w.request_header(w.API_METADATA, 1, 5) + b"\x00\x00")
    s.shutdown(socket.SHUT_WR)
    w.expect_closed(s, timeout=10)
    s.close()

    # And one that is simply dropped mid-frame (no half-close).
    s = w.connect(broker.bootstrap)
    s.sendall(w.int32(1000) + b"\x00\x03\x00\x01")
    s.close()

    good.produce_one()
    _healthz_ok(broker)
    assert broker.alive()


def test_many_bad_connections_in_a_row(broker):
    """Bounded: 50 garbage connections; the broker neither dies nor stops answering."""
    for i in range(50):
        s = w.connect(broker.bootstrap)
        try:
            s.sendall(random.Random(i).randbytes(64))
        except OSError:
            pass
        s.close()
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(0, 77))
    corr, err, keys, trailing = w.parse_api_versions_v0(w.read_frame(s))
    s.close()
    assert (corr, err, trailing) == (77, 0, 0)
    assert w.API_PRODUCE in keys
    _healthz_ok(broker)


def test_api_versions_unknown_version_falls_back_to_v0(broker):
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(127, 4242))
    body = w.read_frame(s)
    corr, err, keys, trailing = w.parse_api_versions_v0(body)
    assert corr == 4242, "response header v0 must carry the correlation id first"
    assert err == w.UNSUPPORTED_VERSION
    assert keys, "the fallback response lists at least ApiVersions' own range"
    assert w.API_VERSIONS in keys
    lo, hi = keys[w.API_VERSIONS]
    assert lo == 0 and hi >= 3, keys[w.API_VERSIONS]
    assert trailing == 0, f"v0 body has no throttle time nor tagged fields; {trailing} extra bytes"
    # The connection stays usable: a supported ApiVersions now succeeds.
    s.sendall(w.api_versions_request(1, 4243))
    corr, err, keys, throttle, trailing = w.parse_api_versions_v1(w.read_frame(s))
    s.close()
    assert (corr, err, trailing) == (4243, 0, 0)


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_supported_versions(broker, version):
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(version, 900 + version))
    body = w.read_frame(s)
    s.close()
    r = w.Reader(body)
    assert r.int32() == 900 + version, "response header is v0 for every ApiVersions version"
    assert r.int16() == 0
    if version >= 3:
        # Compact array of (key, min, max, tagged fields), then throttle and tags.
        n = body[r.pos] - 1
        r.pos += 1
        keys = {}
        for _ in range(n):
            k, lo, hi = r.int16(), r.int16(), r.int16()
            r.take(1)
            keys[k] = (lo, hi)
    else:
        n = r.int32()
        keys = {}
        for _ in range(n):
            k, lo, hi = r.int16(), r.int16(), r.int16()
            keys[k] = (lo, hi)
    for key in (w.API_PRODUCE, 1, 2, w.API_METADATA, w.API_VERSIONS):
        assert key in keys, f"API {key} not advertised: {keys}"
        lo, hi = keys[key]
        assert 0 <= lo <= hi, (key, lo, hi)
    # DESIGN.md: Produce is advertised from v0 so older librdkafka keeps its codecs.
    assert keys[w.API_PRODUCE][0] == 0, keys[w.API_PRODUCE]
    assert keys[w.API_PRODUCE][1] >= 8


def test_acks0_produce_gets_no_response_and_order_is_kept(broker):
    topic = unique_topic("acks0")
    create_topic(broker.bootstrap, topic, partitions=1)
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(0, 1))
    _, err, keys, _ = w.parse_api_versions_v0(w.read_frame(s))
    assert err == 0
    lo, hi = keys[w.API_PRODUCE]
    version = min(8, hi)
    assert version >= max(3, lo), f"no non-flexible Produce version in v3..v8: {keys[w.API_PRODUCE]}"

    records = [(b"k0", b"acks-zero-0"), (b"k1", b"acks-zero-1")]
    # Pipelined: acks=0 produce (corr 10), ApiVersions (corr 11), acks=1 produce (corr 12),
    # Metadata (corr 13). Exactly three responses come back, in request order.
    s.sendall(w.produce_request(version, 10, 0, topic, 0, w.record_batch(records))
              + w.api_versions_request(0, 11)
              + w.produce_request(version, 12, 1, topic, 0, w.record_batch([(b"k2", b"acks-one")]))
              + w.metadata_request_v1(13, [topic]))
    order = [w.correlation_id(w.read_frame(s)) for _ in range(3)]
    assert order == [11, 12, 13]
    s.settimeout(1.0)
    with pytest.raises(socket.timeout):
        extra = s.recv(1)
        raise AssertionError(f"unexpected extra response bytes: {extra!r}")
    s.close()

    got = read_partitions(broker.bootstrap, topic, {0: 3})[0]
    assert [(m.offset(), m.key(), m.value()) for m in got] == [
        (0, b"k0", b"acks-zero-0"), (1, b"k1", b"acks-zero-1"), (2, b"k2", b"acks-one")]


def test_produce_response_offsets_for_raw_batches(broker):
    """A hand-built batch lands at the offsets the broker reports, and a batch with a bad
    CRC is refused with CORRUPT_MESSAGE (2)."""
    topic = unique_topic("raw-produce")
    create_topic(broker.bootstrap, topic, partitions=1)
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(0, 1))
    _, _, keys, _ = w.parse_api_versions_v0(w.read_frame(s))
    version = min(8, keys[w.API_PRODUCE][1])

    def produce(batch, corr):
        s.sendall(w.produce_request(version, corr, -1, topic, 0, batch))
        r = w.Reader(w.read_frame(s))
        assert r.int32() == corr
        assert r.int32() == 1
        assert r.take(r.int16()).decode() == topic
        assert r.int32() == 1
        assert r.int32() == 0  # partition
        error_code = r.int16()
        base_offset = r.int64()
        return error_code, base_offset

    assert produce(w.record_batch([(b"a", b"1"), (b"b", b"2")]), 20) == (0, 0)
    assert produce(w.record_batch([(b"c", b"3")]), 21) == (0, 2)
    corrupt = bytearray(w.record_batch([(b"d", b"4")]))
    corrupt[-1] ^= 0xFF  # flips a byte under the CRC
    error_code, _ = produce(bytes(corrupt), 22)
    assert error_code == 2, f"expected CORRUPT_MESSAGE (2), got {error_code}"
    s.close()
    got = read_partitions(broker.bootstrap, topic, {0: 3})[0]
    assert [(m.key(), m.value()) for m in got] == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def _metadata_v13(corr, topics_field: bytes, allow_auto=False):
    body = topics_field + bytes([1 if allow_auto else 0]) + b"\x00" + w.uvarint(0)
    return w.frame(w.request_header(w.API_METADATA, 13, corr, client_id="rdkafka", flexible=True) + body)


topic_ids = {}


def _parse_metadata_v13(body: bytes):
    """Response header v1 (correlation id + tags), then Metadata v13: returns
    (correlation_id, [(node_id, host, port)], cluster_id, controller_id, [topic names])."""
    r = w.Reader(body)
    corr = r.int32()

    def uvarint():
        shift = value = 0
        while True:
            b = r.take(1)[0]
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def compact_str():
        n = uvarint()
        return None if n == 0 else r.take(n - 1).decode()

    def skip_tags():
        for _ in range(uvarint()):
            uvarint()
            r.take(uvarint())

    skip_tags()
    r.int32()  # throttle
    brokers = []
    for _ in range(uvarint() - 1):
        node, host, port = r.int32(), compact_str(), r.int32()
        compact_str()  # rack
        skip_tags()
        brokers.append((node, host, port))
    cluster_id = compact_str()
    controller = r.int32()
    topics = []
    topic_ids.clear()
    for _ in range(uvarint() - 1):
        r.int16()  # error code
        name = compact_str()
        topic_ids[name] = r.take(16)
        r.take(1)  # is_internal
        for _ in range(uvarint() - 1):
            r.int16(); r.int32(); r.int32(); r.int32()
            for _ in range(3):  # replicas, isr, offline replicas
                for _ in range(uvarint() - 1):
                    r.int32()
            skip_tags()
        r.int32()  # topic authorized operations
        skip_tags()
        topics.append(name)
    error_code = r.int16()  # top-level error code, new in v13
    assert error_code == 0, error_code
    skip_tags()
    assert r.remaining() == 0, f"{r.remaining()} bytes left after the Metadata v13 response"
    return corr, brokers, cluster_id, controller, topics


def test_metadata_v13_empty_and_null_topic_lists(broker):
    """What librdkafka 2.16 sends on connect and for list_topics(): an empty compact
    topics array (0x01) and a null one (0x00)."""
    topic = unique_topic("md13")
    create_topic(broker.bootstrap, topic, partitions=1)
    s = w.connect(broker.bootstrap)
    host, port = broker.bootstrap.rsplit(":", 1)
    s.sendall(_metadata_v13(31, b"\x01"))
    corr, brokers, cluster_id, controller, topics = _parse_metadata_v13(w.read_frame(s))
    assert (corr, brokers, controller, topics) == (31, [(1, host, int(port))], 1, [])
    assert cluster_id
    s.sendall(_metadata_v13(32, b"\x00"))
    corr, brokers, _, _, topics = _parse_metadata_v13(w.read_frame(s))
    assert corr == 32 and topic in topics
    # Topic IDs are real (assigned at creation), not all zeros.
    assert topic_ids[topic] != bytes(16), "Metadata v13 returned a zero topic id"
    # librdkafka 2.16 writes a null topics array as 4 bytes (a 1-byte varint 0 and 3 zero
    # bytes; librdkafka issue #5049), so the body has 3 bytes more than the schema. Kafka
    # ignores bytes after a request body, and confluent-kafka's list_topics() relies on it.
    s.sendall(w.frame(w.request_header(w.API_METADATA, 13, 33, client_id="rdkafka", flexible=True)
                      + bytes.fromhex("00000000010000")))
    corr, brokers, _, _, topics = _parse_metadata_v13(w.read_frame(s))
    assert corr == 33 and topic in topics
    s.close()


def fetch_request_v4(corr, topic, partitions, max_wait_ms=100):
    """Fetch v4 (non-flexible): replica_id, max_wait, min_bytes, max_bytes, isolation, topics."""
    body = (w.int32(-1) + w.int32(max_wait_ms) + w.int32(1) + w.int32(1 << 20) + w.int8(0)
            + w.int32(1) + w.string(topic) + w.int32(len(partitions))
            + b"".join(w.int32(p) + w.int64(offset) + w.int32(1 << 20) for p, offset in partitions))
    return w.frame(w.request_header(1, 4, corr) + body)


def parse_fetch_v4(body):
    """Returns (corr, {partition: (error, high_watermark, records_length)}), where
    records_length is -1 for a null record set."""
    r = w.Reader(body)
    corr = r.int32()
    r.int32()  # throttle
    out = {}
    for _ in range(r.int32()):
        r.take(r.int16())
        for _ in range(r.int32()):
            p, err, hw = r.int32(), r.int16(), r.int64()
            r.int64()  # last stable offset
            n = r.int32()
            for _ in range(max(n, 0)):
                r.int64(); r.int64()
            size = r.int32()
            if size > 0:
                r.take(size)
            out[p] = (err, hw, size)
    assert r.remaining() == 0
    return corr, out


def test_fetch_lists_every_partition_and_empty_records_are_not_null(broker):
    topic = unique_topic("fetch-empty")
    create_topic(broker.bootstrap, topic, partitions=3)
    s = w.connect(broker.bootstrap)
    s.sendall(w.produce_request(7, 1, -1, topic, 1, w.record_batch([(b"k", b"v")])))
    assert w.correlation_id(w.read_frame(s)) == 1
    s.sendall(fetch_request_v4(2, topic, [(0, 0), (1, 0), (2, 0)]))
    corr, parts = parse_fetch_v4(w.read_frame(s))
    s.close()
    assert corr == 2
    assert sorted(parts) == [0, 1, 2], "a sessionless Fetch response lists every requested partition"
    assert parts[0] == (0, 0, 0), f"empty partition: records must be length 0, not null: {parts[0]}"
    assert parts[2] == (0, 0, 0), parts[2]
    err, hw, size = parts[1]
    assert (err, hw) == (0, 1) and size > 61, parts[1]
