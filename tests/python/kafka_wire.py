"""A tiny hand-rolled Kafka wire encoder/decoder for tests that need exact control
over bytes: request headers v1/v2, ApiVersions, Metadata v1, Produce v3-v8 with a
magic-v2 record batch (CRC-32C), and frame reading with timeouts.

Deliberately independent of every client library, so it checks Sluice against
the protocol docs rather than against another implementation.
"""

import socket
import struct
import time

API_PRODUCE = 0
API_METADATA = 3
API_VERSIONS = 18
UNSUPPORTED_VERSION = 35


# -- primitive encoders -------------------------------------------------------

def int8(v): return struct.pack(">b", v)
def int16(v): return struct.pack(">h", v)
def int32(v): return struct.pack(">i", v)
def int64(v): return struct.pack(">q", v)
def uint32(v): return struct.pack(">I", v)


def string(s):
    """Nullable STRING: int16 length, -1 for null."""
    if s is None:
        return int16(-1)
    b = s.encode()
    return int16(len(b)) + b


def uvarint(v):
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v):
    """Zig-zag signed varint (also used for varlong)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s):
    b = s.encode()
    return uvarint(len(b) + 1) + b


_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- requests -----------------------------------------------------------------

def request_header(api_key, api_version, correlation_id, client_id="sluice-wire-test", flexible=False):
    """Request header v1 (non-flexible) or v2 (flexible: adds an empty tagged-field section)."""
    h = int16(api_key) + int16(api_version) + int32(correlation_id) + string(client_id)
    if flexible:
        h += uvarint(0)
    return h


def frame(payload: bytes) -> bytes:
    return int32(len(payload)) + payload


def api_versions_request(version, correlation_id):
    if version >= 3:
        body = compact_string("sluice-wire-test") + compact_string("0.1") + uvarint(0)
        return frame(request_header(API_VERSIONS, version, correlation_id, flexible=True) + body)
    return frame(request_header(API_VERSIONS, version, correlation_id))


def metadata_request_v1(correlation_id, topics=None):
    """Metadata v1: topics array (null = all topics)."""
    if topics is None:
        body = int32(-1)
    else:
        body = int32(len(topics)) + b"".join(string(t) for t in topics)
    return frame(request_header(API_METADATA, 1, correlation_id) + body)


def record_batch(records, base_timestamp_ms=None):
    """A magic-v2 record batch, uncompressed, no producer id. `records` is a list of (key, value)."""
    ts = int(time.time() * 1000) if base_timestamp_ms is None else base_timestamp_ms
    encoded = b""
    for delta, (key, value) in enumerate(records):
        body = int8(0) + varint(0) + varint(delta)
        body += varint(-1) if key is None else varint(len(key)) + key
        body += varint(-1) if value is None else varint(len(value)) + value
        body += varint(0)  # headers
        encoded += varint(len(body)) + body
    after_crc = (int16(0) + int32(len(records) - 1) + int64(ts) + int64(ts)
                 + int64(-1) + int16(-1) + int32(-1) + int32(len(records)) + encoded)
    after_length = int32(0) + int8(2) + uint32(crc32c(after_crc)) + after_crc
    return int64(0) + int32(len(after_length)) + after_length


def produce_request(version, correlation_id, acks, topic, partition, batch, timeout_ms=10000):
    """Produce v3-v8 (non-flexible)."""
    assert 3 <= version <= 8, version
    body = (string(None) + int16(acks) + int32(timeout_ms)
            + int32(1) + string(topic)
            + int32(1) + int32(partition) + int32(len(batch)) + batch)
    return frame(request_header(API_PRODUCE, version, correlation_id) + body)


# -- responses ----------------------------------------------------------------

class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n):
        assert self.pos + n <= len(self.data), f"short read: need {n} at {self.pos} of {len(self.data)}"
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int16(self): return struct.unpack(">h", self.take(2))[0]
    def int32(self): return struct.unpack(">i", self.take(4))[0]
    def int64(self): return struct.unpack(">q", self.take(8))[0]

    def remaining(self):
        return len(self.data) - self.pos


def connect(bootstrap: str, timeout: float = 10.0) -> socket.socket:
    host, port = bootstrap.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(sock) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 0 <= size < 64 * 1024 * 1024, f"response frame size {size}"
    return recv_exact(sock, size)


def parse_api_versions_v0(body: bytes):
    """Response header v0 (correlation id) + ApiVersions body v0:
    error_code, [api_key, min, max]. Returns (correlation_id, error_code, {key: (min, max)}, trailing bytes)."""
    r = Reader(body)
    corr = r.int32()
    err = r.int16()
    n = r.int32()
    assert 0 <= n < 10000, n
    keys = {}
    for _ in range(n):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        keys[k] = (lo, hi)
    return corr, err, keys, r.remaining()


def parse_api_versions_v1(body: bytes):
    """Response header v0 + ApiVersions body v1 (v0 plus throttle_time_ms)."""
    r = Reader(body)
    corr = r.int32()
    err = r.int16()
    n = r.int32()
    keys = {}
    for _ in range(n):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        keys[k] = (lo, hi)
    throttle = r.int32()
    return corr, err, keys, throttle, r.remaining()


def correlation_id(body: bytes) -> int:
    return struct.unpack(">i", body[:4])[0]


def expect_closed(sock, timeout: float = 10.0) -> str:
    """Bounded wait for the peer to close: returns how it ended, raises if it stays open
    (or answers with data)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    got = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except socket.timeout:
            break
        if not chunk:
            return "eof"
        got += chunk
        if len(got) > 1 << 20:
            break
    raise AssertionError(f"connection still open after {timeout}s (received {len(got)} bytes)")
