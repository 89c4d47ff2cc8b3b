"""Raw Kafka requests for the transaction tests (issue 6): FindCoordinator (transaction
key), InitProducerId, AddPartitionsToTxn, EndTxn, a transactional Produce, the operator
APIs DescribeProducers, DescribeTransactions and ListTransactions, and ApiVersions v3 with
its feature tags.

Built on kafka_wire's primitives and, like it, written from the protocol's message
definitions rather than from a client library, so the tests check Sluice against Kafka's
schemas. Each request is encoded at a version chosen from what the broker advertises and
what the encoder here knows (`pick_version`); flexible versions use compact strings and
arrays and tagged-field sections, as the schemas say.
"""

import struct
import time

import kafka_wire as w

API_FIND_COORDINATOR = 10
API_INIT_PRODUCER_ID = 22
API_ADD_PARTITIONS_TO_TXN = 24
API_END_TXN = 26
API_DESCRIBE_PRODUCERS = 61
API_DESCRIBE_TRANSACTIONS = 65
API_LIST_TRANSACTIONS = 66

# Error codes the tests look for.
NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
CONCURRENT_TRANSACTIONS = 51
PRODUCER_FENCED = 90
TRANSACTIONAL_ID_NOT_FOUND = 105
RETRIABLE_COORDINATOR_ERRORS = (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
                                NOT_COORDINATOR, CONCURRENT_TRANSACTIONS)

# Versions each encoder/decoder here handles (FindCoordinator v4+ batches keys,
# AddPartitionsToTxn v4+ is the broker-to-broker batched form: both left out on purpose).
KNOWN_VERSIONS = {
    API_FIND_COORDINATOR: range(1, 4),
    API_INIT_PRODUCER_ID: range(0, 6),
    API_ADD_PARTITIONS_TO_TXN: range(0, 4),
    API_END_TXN: range(0, 6),
    API_DESCRIBE_PRODUCERS: range(0, 1),
    API_DESCRIBE_TRANSACTIONS: range(0, 1),
    API_LIST_TRANSACTIONS: range(0, 3),
}
FLEXIBLE_FROM = {
    API_FIND_COORDINATOR: 3,
    API_INIT_PRODUCER_ID: 2,
    API_ADD_PARTITIONS_TO_TXN: 3,
    API_END_TXN: 3,
    API_DESCRIBE_PRODUCERS: 0,
    API_DESCRIBE_TRANSACTIONS: 0,
    API_LIST_TRANSACTIONS: 0,
}


# -- encoding helpers that follow the flexible/non-flexible split ---------------------

def s(value, flex):
    """STRING / COMPACT_STRING (nullable when value is None)."""
    if not flex:
        return w.string(value)
    if value is None:
        return w.uvarint(0)
    b = value.encode()
    return w.uvarint(len(b) + 1) + b


def array(items, flex):
    """The length prefix of an ARRAY / COMPACT_ARRAY followed by the encoded items."""
    items = list(items)
    head = w.uvarint(len(items) + 1) if flex else w.int32(len(items))
    return head + b"".join(items)


def tags(flex):
    return w.uvarint(0) if flex else b""


class R(w.Reader):
    """kafka_wire.Reader plus the flexible types."""

    def int8(self): return struct.unpack(">b", self.take(1))[0]

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def string(self, flex):
        n = self.uvarint() - 1 if flex else self.int16()
        return None if n < 0 else self.take(n).decode()

    def array_len(self, flex):
        return self.uvarint() - 1 if flex else self.int32()

    def tags(self, flex):
        """Skips a tagged-field section; returns {tag: raw bytes}."""
        if not flex:
            return {}
        out = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            out[tag] = self.take(self.uvarint())
        return out


# -- a connection that knows the broker's versions ------------------------------------

class Conn:
    """One socket to the broker, with its ApiVersions (v3) answer and a correlation id."""

    def __init__(self, bootstrap, timeout=15.0):
        self.sock = w.connect(bootstrap, timeout)
        self.corr = 0
        self.versions, self.supported_features, self.finalized_features, self.features_epoch = \
            self._api_versions()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next(self):
        self.corr += 1
        return self.corr

    def _api_versions(self):
        corr = self._next()
        self.sock.sendall(w.api_versions_request(3, corr))
        body = w.read_frame(self.sock)
        assert w.correlation_id(body) == corr  # ApiVersions answers with response header v0, always
        return parse_api_versions_v3(body[4:])

    def pick_version(self, api_key):
        """The highest version both the broker and this module speak; fails the test if none."""
        assert api_key in self.versions, f"broker does not advertise API {api_key}"
        lo, hi = self.versions[api_key]
        common = [v for v in KNOWN_VERSIONS[api_key] if lo <= v <= hi]
        assert common, f"API {api_key}: broker offers v{lo}-v{hi}, tests speak {list(KNOWN_VERSIONS[api_key])}"
        return max(common)

    def call(self, api_key, version, body, flexible):
        """Sends a request and returns a reader positioned after the response header."""
        corr = self._next()
        self.sock.sendall(w.frame(w.request_header(api_key, version, corr, flexible=flexible) + body))
        r = R(w.read_frame(self.sock))
        got = r.int32()
        assert got == corr, f"correlation id {got}, expected {corr}"
        r.tags(flexible)  # response header v1 for flexible versions
        return r

    # -- transaction coordinator APIs ---------------------------------------------------

    def find_coordinator(self, key, key_type=1):
        """Returns (error_code, node_id, host, port)."""
        v = self.pick_version(API_FIND_COORDINATOR)
        flex = v >= FLEXIBLE_FROM[API_FIND_COORDINATOR]
        body = s(key, flex) + w.int8(key_type) + tags(flex)
        r = self.call(API_FIND_COORDINATOR, v, body, flex)
        r.int32()  # throttle
        err = r.int16()
        r.string(flex)  # error message
        node, host, port = r.int32(), r.string(flex), r.int32()
        return err, node, host, port

    def init_producer_id(self, transactional_id, timeout_ms, producer_id=-1, epoch=-1):
        """Returns (error_code, producer_id, producer_epoch)."""
        v = self.pick_version(API_INIT_PRODUCER_ID)
        flex = v >= FLEXIBLE_FROM[API_INIT_PRODUCER_ID]
        body = s(transactional_id, flex) + w.int32(timeout_ms)
        if v >= 3:
            body += w.int64(producer_id) + w.int16(epoch)
        body += tags(flex)
        r = self.call(API_INIT_PRODUCER_ID, v, body, flex)
        r.int32()
        return r.int16(), r.int64(), r.int16()

    def add_partitions_to_txn(self, transactional_id, producer_id, epoch, topics):
        """topics: {name: [partition, ...]}. Returns {(topic, partition): error_code}."""
        v = self.pick_version(API_ADD_PARTITIONS_TO_TXN)
        flex = v >= FLEXIBLE_FROM[API_ADD_PARTITIONS_TO_TXN]
        body = (s(transactional_id, flex) + w.int64(producer_id) + w.int16(epoch)
                + array((s(t, flex) + array((w.int32(p) for p in ps), flex) + tags(flex)
                         for t, ps in topics.items()), flex)
                + tags(flex))
        r = self.call(API_ADD_PARTITIONS_TO_TXN, v, body, flex)
        r.int32()
        out = {}
        for _ in range(r.array_len(flex)):
            name = r.string(flex)
            for _ in range(r.array_len(flex)):
                partition = r.int32()
                out[(name, partition)] = r.int16()
                r.tags(flex)
            r.tags(flex)
        return out

    def end_txn(self, transactional_id, producer_id, epoch, commit):
        """Returns the error code."""
        v = self.pick_version(API_END_TXN)
        flex = v >= FLEXIBLE_FROM[API_END_TXN]
        body = (s(transactional_id, flex) + w.int64(producer_id) + w.int16(epoch)
                + w.int8(1 if commit else 0) + tags(flex))
        r = self.call(API_END_TXN, v, body, flex)
        r.int32()
        return r.int16()

    # -- operator APIs --------------------------------------------------------------------

    def describe_producers(self, topic, partitions):
        """Returns {partition: (error_code, [producer dict, ...])}."""
        v = self.pick_version(API_DESCRIBE_PRODUCERS)
        body = (array([s(topic, True) + array((w.int32(p) for p in partitions), True) + tags(True)], True)
                + tags(True))
        r = self.call(API_DESCRIBE_PRODUCERS, v, body, True)
        r.int32()
        out = {}
        for _ in range(r.array_len(True)):
            r.string(True)
            for _ in range(r.array_len(True)):
                index, err = r.int32(), r.int16()
                r.string(True)
                producers = []
                for _ in range(r.array_len(True)):
                    producers.append({
                        "producer_id": r.int64(), "producer_epoch": r.int32(),
                        "last_sequence": r.int32(), "last_timestamp": r.int64(),
                        "coordinator_epoch": r.int32(), "current_txn_start_offset": r.int64()})
                    r.tags(True)
                r.tags(True)
                out[index] = (err, producers)
            r.tags(True)
        return out

    def describe_transactions(self, transactional_ids):
        """Returns {transactional_id: dict(error_code, state, timeout_ms, start_time_ms,
        producer_id, producer_epoch, topics={topic: sorted partitions})}."""
        v = self.pick_version(API_DESCRIBE_TRANSACTIONS)
        body = array((s(t, True) for t in transactional_ids), True) + tags(True)
        r = self.call(API_DESCRIBE_TRANSACTIONS, v, body, True)
        r.int32()
        out = {}
        for _ in range(r.array_len(True)):
            err = r.int16()
            tid = r.string(True)
            d = {"error_code": err, "state": r.string(True), "timeout_ms": r.int32(),
                 "start_time_ms": r.int64(), "producer_id": r.int64(), "producer_epoch": r.int16(),
                 "topics": {}}
            for _ in range(r.array_len(True)):
                topic = r.string(True)
                d["topics"][topic] = sorted(r.int32() for _ in range(r.array_len(True)))
                r.tags(True)
            r.tags(True)
            out[tid] = d
        return out

    def list_transactions(self, state_filters=(), producer_id_filters=()):
        """Returns (error_code, unknown_state_filters, {transactional_id: (producer_id, state)})."""
        v = self.pick_version(API_LIST_TRANSACTIONS)
        body = (array((s(f, True) for f in state_filters), True)
                + array((w.int64(p) for p in producer_id_filters), True))
        if v >= 1:
            body += w.int64(-1)  # duration filter: none
        if v >= 2:
            body += s(None, True)  # transactional id pattern: none
        body += tags(True)
        r = self.call(API_LIST_TRANSACTIONS, v, body, True)
        r.int32()
        err = r.int16()
        unknown = [r.string(True) for _ in range(r.array_len(True))]
        states = {}
        for _ in range(r.array_len(True)):
            tid, pid, state = r.string(True), r.int64(), r.string(True)
            r.tags(True)
            states[tid] = (pid, state)
        return err, unknown, states

    # -- produce ---------------------------------------------------------------------------

    def produce(self, transactional_id, topic, partition, batch, acks=-1, version=8):
        """Produce v3-v8 (non-flexible) with a transactional id; returns (error_code, base_offset)."""
        assert 3 <= version <= 8
        body = (w.string(transactional_id) + w.int16(acks) + w.int32(10_000)
                + w.int32(1) + w.string(topic)
                + w.int32(1) + w.int32(partition) + w.int32(len(batch)) + batch)
        r = self.call(w.API_PRODUCE, version, body, False)
        assert r.int32() == 1
        r.take(r.int16())
        assert r.int32() == 1
        r.int32()
        return r.int16(), r.int64()


def parse_api_versions_v3(body):
    """ApiVersions v3+ response body: returns ({api_key: (min, max)}, supported features
    {name: (min, max)}, finalized features {name: (min_level, max_level)}, finalized
    features epoch)."""
    r = R(body)
    err = r.int16()
    assert err == 0, f"ApiVersions v3 error {err}"
    versions = {}
    for _ in range(r.array_len(True)):
        key, lo, hi = r.int16(), r.int16(), r.int16()
        r.tags(True)
        versions[key] = (lo, hi)
    r.int32()  # throttle
    tagged = r.tags(True)
    supported, finalized, epoch = {}, {}, -1
    if 0 in tagged:
        t = R(tagged[0])
        for _ in range(t.array_len(True)):
            name = t.string(True)
            supported[name] = (t.int16(), t.int16())
            t.tags(True)
    if 1 in tagged:
        epoch = R(tagged[1]).int64()
    if 2 in tagged:
        t = R(tagged[2])
        for _ in range(t.array_len(True)):
            name = t.string(True)
            max_level, min_level = t.int16(), t.int16()
            finalized[name] = (min_level, max_level)
            t.tags(True)
    return versions, supported, finalized, epoch


def coordinator_ready(conn, transactional_id, timeout=30.0):
    """Bounded wait until FindCoordinator(transaction) answers without error."""
    deadline = time.monotonic() + timeout
    while True:
        err, node, host, port = conn.find_coordinator(transactional_id)
        if err == NONE:
            return node, host, port
        assert err in RETRIABLE_COORDINATOR_ERRORS, f"FindCoordinator(transaction): error {err}"
        assert time.monotonic() < deadline, f"no transaction coordinator within {timeout}s (error {err})"
        time.sleep(0.2)


def retry_coordinator(fn, timeout=30.0):
    """Calls fn() (returning an error code first in a tuple, or an error code) until the
    error is not a retriable coordinator error; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        err = result[0] if isinstance(result, tuple) else result
        if err not in RETRIABLE_COORDINATOR_ERRORS or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def txn_batch(producer_id, epoch, base_sequence, values, transactional=True, control=False):
    """A magic-v2 batch with a producer id, epoch, base sequence and the transactional
    attribute (bit 4) set."""
    ts = int(time.time() * 1000)
    encoded = b""
    for delta, value in enumerate(values):
        body = w.int8(0) + w.varint(0) + w.varint(delta) + w.varint(-1) + w.varint(len(value)) + value + w.varint(0)
        encoded += w.varint(len(body)) + body
    attributes = (0x10 if transactional else 0) | (0x20 if control else 0)
    after_crc = (w.int16(attributes) + w.int32(len(values) - 1) + w.int64(ts) + w.int64(ts)
                 + w.int64(producer_id) + w.int16(epoch) + w.int32(base_sequence)
                 + w.int32(len(values)) + encoded)
    after_length = w.int32(0) + w.int8(2) + w.uint32(w.crc32c(after_crc)) + after_crc
    return w.int64(0) + w.int32(len(after_length)) + after_length
