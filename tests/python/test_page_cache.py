"""The page-cache budget (log.page.cache.max.bytes, storage/src/page_cache.rs): past it, the
oldest data leaves the kernel's page cache once written back, and a consumer reading it
from the beginning gets every record back, from disk, without refilling the cache. Checked with confluent-kafka (librdkafka) and the segment file's page residency
(mincore), which the broker cannot fake."""

import ctypes
import ctypes.util
import mmap
import os
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition

from helpers import consumer, create_topic, payload, unique_topic

RECORDS = 24_000
SIZE = 1024
PAGE = mmap.PAGESIZE

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def fs_type(path: Path) -> str:
    """The file system type of the longest mount point holding `path` (/proc/mounts)."""
    best, kind = "", "unknown"
    real = str(path.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


def resident(path: Path) -> list:
    """One bool per page of `path`: is it in the page cache (mincore; maps, faults nothing)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = ctypes.create_string_buffer((size + PAGE - 1) // PAGE)
            rc = _libc.mincore(addr, size, vec)
            assert rc == 0, os.strerror(ctypes.get_errno())
            return [b & 1 == 1 for b in vec.raw]
        finally:
            _libc.munmap(addr, size)


def test_old_data_leaves_the_page_cache_and_is_still_served(sluice_factory):
    broker = sluice_factory("--set", "log.page.cache.max.bytes=2097152")
    topic = unique_topic("pagecache")
    create_topic(broker.bootstrap, topic, partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, key=str(i).encode(), value=payload(i, SIZE))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0

    segment = next((broker.data_dir / f"{topic}-0").glob("*.log"))
    check_residency = fs_type(segment) not in ("tmpfs", "ramfs")
    if check_residency:
        # The broker's pass runs every 20-250 ms, writing back and dropping the oldest data past
        # the budget; bounded wait for most of the file to leave the cache.
        deadline = time.monotonic() + 20
        while True:
            pages = resident(segment)
            old = pages[: len(pages) // 2]
            if not any(old) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not any(old), f"{sum(old)} of the first {len(old)} pages still cached"
        assert pages[-1], "the newest data stays cached"

    # A consumer from the beginning gets everything back, in order, from disk.
    cons = consumer(broker.bootstrap, **{"enable.auto.commit": False})
    cons.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < RECORDS and time.monotonic() < deadline:
        for msg in cons.consume(1000, timeout=1.0):
            assert msg.error() is None, msg.error()
            assert msg.offset() == seen
            assert msg.key() == str(seen).encode()
            assert msg.value() == payload(seen, SIZE)
            seen += 1
    cons.close()
    assert seen == RECORDS

    if check_residency:
        # The broker's prefetch thread may still be undoing a late prefetch: bounded wait.
        deadline = time.monotonic() + 5
        while True:
            old = resident(segment)[: len(pages) // 2]
            if not any(old) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not any(old), f"reading old data refilled the cache: {sum(old)} pages"
    else:
        pytest.skip("data dir on tmpfs: page residency not checked (records were)")
