"""Durability: SIGKILL mid-stream loses no acknowledged acks=all write; consumers resume;
a clean (SIGTERM) restart exits 0 and is quickly ready again."""

import threading
import time

from confluent_kafka import KafkaError, Producer, TopicPartition

from helpers import consume_exactly, consumer, create_topic, read_partitions, unique_topic

PARTITIONS = 3


class AckRecorder:
    """Produces numbered values in a background thread with acks=all and no retries
    (each value is written at most once by the client), recording every acknowledgement."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
            "retries": 0, "message.timeout.ms": 5000, "socket.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 200,
        })
        self.acked = {}  # value -> (partition, offset)
        self.failed = 0
        self.twice = []
        self.sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg):
        with self.lock:
            if err is None:
                if msg.value() in self.acked:
                    self.twice.append(msg.value())
                self.acked[msg.value()] = (msg.partition(), msg.offset())
            else:
                self.failed += 1

    def _run(self):
        deadline = time.monotonic() + 60  # bounded even if nobody stops us
        while not self.stop.is_set() and time.monotonic() < deadline:
            if len(self.producer) >= 500:  # bounded in-flight: keeps the log (and the check) small
                self.producer.poll(0.01)
                continue
            value = b"durable-%06d" % self.sent
            try:
                self.producer.produce(self.topic, value=value, key=b"k%d" % (self.sent % 17),
                                      partition=self.sent % PARTITIONS, on_delivery=self._on_delivery)
                self.sent += 1
            except BufferError:
                pass
            self.producer.poll(0.001)
        self.producer.flush(15)

    def acked_count(self):
        with self.lock:
            return len(self.acked)


def test_sigkill_loses_no_acknowledged_write(broker):
    topic = unique_topic("durable")
    create_topic(broker.bootstrap, topic, partitions=PARTITIONS)

    # A consumer that reads part of the stream before the crash and must resume after it.
    early = consumer(broker.bootstrap, **{"reconnect.backoff.max.ms": 200})
    early.assign([TopicPartition(topic, 0, 0)])

    rec = AckRecorder(broker.bootstrap, topic)
    rec.thread.start()
    deadline = time.monotonic() + 30
    while rec.acked_count() < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rec.acked_count() >= 2000, f"only {rec.acked_count()} acks in 30 s before the crash"
    first = consume_exactly_some(early, 100)

    broker.kill()  # SIGKILL while the producer is still sending
    rec.stop.set()
    rec.thread.join(timeout=30)
    assert not rec.thread.is_alive()
    acked = dict(rec.acked)
    assert acked, "nothing acknowledged"
    assert not rec.twice, f"delivery reported twice for {rec.twice[:5]}"

    restart_s = broker.start()
    assert restart_s < 10, f"restart after SIGKILL took {restart_s:.1f}s"

    cons = consumer(broker.bootstrap)
    try:
        ends = {p: cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(PARTITIONS)}
    finally:
        cons.close()
    for p, (low, high) in ends.items():
        assert low == 0, f"log start of partition {p} moved to {low}"
    got = read_partitions(broker.bootstrap, topic, {p: high for p, (_, high) in ends.items()}, timeout=60)

    log = {}
    for p, msgs in got.items():
        assert [m.offset() for m in msgs] == list(range(len(msgs))), f"offsets of partition {p} not contiguous"
        for m in msgs:
            assert m.value() not in log, f"{m.value()} stored twice: {log[m.value()]} and {(p, m.offset())}"
            log[m.value()] = (p, m.offset())
    missing = [(v, at) for v, at in acked.items() if log.get(v) != at]
    assert not missing, (f"{len(missing)} of {len(acked)} acknowledged writes lost or moved, e.g. "
                         f"{missing[:5]} (stored: {[log.get(v) for v, _ in missing[:5]]})")

    # The consumer created before the crash resumes where it was, with no gap or repeat.
    want = len(got[0]) - len(first)
    # Connection errors reported while the broker was down are expected client events.
    rest = consume_exactly(early, want, timeout=60,
                           tolerate=(KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN))
    early.close()
    offsets = [m.offset() for m in first + rest]
    assert offsets == list(range(len(got[0])))
    assert [m.value() for m in first + rest] == [m.value() for m in got[0]]


def consume_exactly_some(cons, count, timeout=30.0):
    """Like consume_exactly but tolerates more data arriving after `count` (the stream is live)."""
    msgs = []
    deadline = time.monotonic() + timeout
    while len(msgs) < count and time.monotonic() < deadline:
        m = cons.poll(0.2)
        if m is None:
            continue
        assert m.error() is None, m.error()
        msgs.append(m)
    assert len(msgs) == count
    return msgs


def test_clean_restart_is_quick_and_keeps_data(broker):
    topic = unique_topic("clean")
    create_topic(broker.bootstrap, topic, partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    values = [b"v%d" % i for i in range(500)]
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % 2)
    assert p.flush(30) == 0

    began = time.monotonic()
    code = broker.stop()
    stop_s = time.monotonic() - began
    assert code == 0, f"SIGTERM exit code {code}"
    assert stop_s < 10, f"shutdown took {stop_s:.1f}s"
    ready_s = broker.start()
    assert ready_s < 10, f"clean restart took {ready_s:.1f}s to be ready"

    got = read_partitions(broker.bootstrap, topic, {0: 250, 1: 250})
    assert [m.value() for m in got[0]] == values[0::2]
    assert [m.value() for m in got[1]] == values[1::2]
    # And it keeps accepting writes at the next offsets.
    reports = []
    p2 = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    p2.produce(topic, value=b"after", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p2.flush(15) == 0
    assert reports == [(None, 250)]

    # Two restarts in a row keep everything too.
    assert broker.restart() < 10
    got = read_partitions(broker.bootstrap, topic, {0: 251, 1: 250})
    assert got[0][-1].value() == b"after"
