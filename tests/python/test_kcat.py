"""kcat from Debian (librdkafka 2.0.2). That librdkafka mis-skips non-empty tagged
fields, so these tests guard Sluice's response encoding as much as its data path."""

import json
import random
import shutil
import struct
import subprocess

import pytest

from helpers import create_topic, unique_topic

KCAT = shutil.which("kcat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed (tests/run-all.sh installs it)")

MSG_DELIM = 0x1E
KEY_DELIM = 0x1F
TIMEOUT_S = 60


def kcat(broker, *args, stdin=None):
    cmd = [KCAT, "-b", broker.bootstrap, "-X", "socket.timeout.ms=10000", *args]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\nstderr: {proc.stderr.decode(errors='replace')}")
    return proc


def test_metadata_listing(broker):
    topic = unique_topic("kcat-list")
    create_topic(broker.bootstrap, topic, partitions=4)
    md = json.loads(kcat(broker, "-L", "-J").stdout)
    assert [b["id"] for b in md["brokers"]] == [1]
    assert md["brokers"][0]["name"] == broker.bootstrap
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, sorted(topics)
    parts = sorted(topics[topic]["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    for p in parts:
        assert p["leader"] == 1
        assert [r["id"] for r in p["replicas"]] == [1]
        assert [r["id"] for r in p["isrs"]] == [1]
    # The plain-text listing parses too.
    text = kcat(broker, "-L", "-t", topic).stdout.decode()
    assert f'topic "{topic}" with 4 partitions:' in text, text


def _messages(seed, count):
    rng = random.Random(seed)
    allowed = bytes(b for b in range(256) if b not in (MSG_DELIM, KEY_DELIM))
    out = []
    for i in range(count):
        key = f"key-{i % 5}-".encode() + bytes(rng.choice(allowed) for _ in range(rng.randint(0, 8)))
        value = bytes(rng.choice(allowed) for _ in range(rng.randint(1, 3000)))
        out.append((key, value))
    return out


def _parse_records(raw: bytes):
    """Parses kcat -f '%p %o %K %S\\n%k%s' output: binary-safe thanks to the lengths."""
    records = []
    pos = 0
    while pos < len(raw):
        nl = raw.index(b"\n", pos)
        partition, offset, key_len, value_len = (int(x) for x in raw[pos:nl].split(b" "))
        pos = nl + 1
        key = raw[pos:pos + key_len]
        pos += key_len
        value = raw[pos:pos + value_len]
        pos += value_len
        records.append((partition, offset, key, value))
    return records


@pytest.mark.parametrize("extra", [
    [],
    ["-X", "api.version.request=true"],
    ["-z", "gzip"],
    ["-z", "snappy"],
    ["-z", "lz4"],
    ["-X", "compression.codec=zstd"],
], ids=["default", "api.version.request", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_byte_exact(broker, extra):
    topic = unique_topic("kcat-data")
    create_topic(broker.bootstrap, topic, partitions=3)
    expected = {}
    for partition in range(3):
        msgs = _messages(seed=partition * 1000 + len(extra), count=40)
        stdin = b"".join(k + bytes([KEY_DELIM]) + v + bytes([MSG_DELIM]) for k, v in msgs)
        kcat(broker, "-P", "-t", topic, "-p", str(partition), "-K", "\\x1f", "-D", "\\x1e",
             "-X", "acks=all", *extra, stdin=stdin)
        expected[partition] = [(partition, off, k, v) for off, (k, v) in enumerate(msgs)]

    # Compression is a producer setting; the consumer gets the other flags.
    consumer_extra = [] if any("compression" in a or a == "-z" for a in extra) else extra
    for partition in range(3):
        out = kcat(broker, "-C", "-t", topic, "-p", str(partition), "-o", "beginning", "-e",
                   "-f", "%p %o %K %S\\n%k%s", *consumer_extra).stdout
        got = _parse_records(out)
        assert len(got) == len(expected[partition])
        for g, e in zip(got, expected[partition]):
            assert g == e, f"record differs: got {g[:2]} key {g[2][:20]!r} want key {e[2][:20]!r}"


def test_headers_and_timestamps(broker):
    topic = unique_topic("kcat-headers")
    create_topic(broker.bootstrap, topic, partitions=1)
    kcat(broker, "-P", "-t", topic, "-p", "0", "-H", "trace=abc123", "-H", "empty=",
         stdin=b"one\ntwo\nthree\n")
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
               "-f", "%o|%h|%s|%T\\n").stdout.decode()
    lines = out.splitlines()
    assert [line.split("|")[:3] for line in lines] == [
        ["0", "trace=abc123,empty=", "one"],
        ["1", "trace=abc123,empty=", "two"],
        ["2", "trace=abc123,empty=", "three"],
    ]
    for line in lines:
        assert int(line.split("|")[3]) > 1_600_000_000_000, line


def test_auto_create_on_produce(broker):
    """The broker fixture runs with auto.create.topics.enable=true and 3 partitions."""
    topic = unique_topic("kcat-auto")
    kcat(broker, "-P", "-t", topic, "-p", "0", stdin=b"hello\n")
    md = json.loads(kcat(broker, "-L", "-J", "-t", topic).stdout)
    (entry,) = [t for t in md["topics"] if t["topic"] == topic]
    assert len(entry["partitions"]) == 3
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-f", "%R%s").stdout
    assert out == struct.pack(">i", 5) + b"hello"


def test_consume_from_end_offsets(broker):
    topic = unique_topic("kcat-offsets")
    create_topic(broker.bootstrap, topic, partitions=1)
    kcat(broker, "-P", "-t", topic, "-p", "0", stdin=b"".join(b"m%d\n" % i for i in range(10)))
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "-3", "-e", "-f", "%o:%s\\n").stdout
    assert out == b"7:m7\n8:m8\n9:m9\n"
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "4", "-c", "2", "-f", "%o:%s\\n").stdout
    assert out == b"4:m4\n5:m5\n"
