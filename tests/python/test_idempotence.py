"""Idempotent producers (issue 6, the idempotence half): exactly-once writes across a
broker crash, with a real client, and Kafka's sequence rules on the wire.

The confluent-kafka test is the issue's: 100,000 messages from an idempotent producer
while the broker is SIGKILLed and restarted in the middle; the topic must hold each
message exactly once, in order per partition. librdkafka retries what was in flight when
the broker died; batches that had reached the log are recognised as duplicates (the
broker rebuilds producer state from the log after the crash) and not written twice.
"""

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

import kafka_wire as w
from helpers import create_topic, unique_topic

MESSAGES = 100_000
PARTITIONS = 3


def test_idempotent_producer_exactly_once_across_sigkill(broker):
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Long enough to ride out the restart; librdkafka keeps retrying until then.
        "message.timeout.ms": 120_000,
        "reconnect.backoff.max.ms": 500,
    })
    errors, acked = [], [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[0] += 1

    def produce_all():
        for i in range(MESSAGES):
            while True:
                try:
                    producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 1000 == 0:
                producer.poll(0)

    sender = threading.Thread(target=produce_all, daemon=True)
    sender.start()
    deadline = time.time() + 60
    while acked[0] < MESSAGES // 3 and time.time() < deadline:
        producer.poll(0.05)
    assert acked[0] >= MESSAGES // 3, f"only {acked[0]} acknowledged before the crash"
    broker.kill()
    time.sleep(0.5)
    broker.start()
    sender.join(timeout=120)
    assert not sender.is_alive(), "producer thread did not finish"
    remaining = producer.flush(120)
    assert remaining == 0, f"{remaining} messages never delivered"
    assert not errors, f"delivery errors: {errors[:5]}"
    assert acked[0] == MESSAGES

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("idem-check"),
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = {p: [] for p in range(PARTITIONS)}
    eof = set()
    deadline = time.time() + 120
    while len(eof) < PARTITIONS and time.time() < deadline:
        for m in consumer.consume(10_000, timeout=1.0):
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    eof.add(m.partition())
                    continue
                raise AssertionError(m.error())
            eof.discard(m.partition())
            seen[m.partition()].append(int(m.value()))
    consumer.close()
    for p in range(PARTITIONS):
        expected = list(range(p, MESSAGES, PARTITIONS))
        assert len(seen[p]) == len(expected), f"partition {p}: {len(seen[p])} records, expected {len(expected)}"
        assert seen[p] == expected, f"partition {p}: duplicates, gaps or reordering"


# -- Kafka's sequence rules, on the wire --------------------------------------------

def idempotent_batch(producer_id, epoch, base_sequence, values):
    """A magic-v2 batch carrying a producer id, epoch and base sequence."""
    ts = int(time.time() * 1000)
    encoded = b""
    for delta, value in enumerate(values):
        body = w.int8(0) + w.varint(0) + w.varint(delta) + w.varint(-1) + w.varint(len(value)) + value + w.varint(0)
        encoded += w.varint(len(body)) + body
    after_crc = (w.int16(0) + w.int32(len(values) - 1) + w.int64(ts) + w.int64(ts)
                 + w.int64(producer_id) + w.int16(epoch) + w.int32(base_sequence)
                 + w.int32(len(values)) + encoded)
    after_length = w.int32(0) + w.int8(2) + w.uint32(w.crc32c(after_crc)) + after_crc
    return w.int64(0) + w.int32(len(after_length)) + after_length


def produce_v8(sock, correlation_id, topic, batch):
    """Sends Produce v8 (acks=all) and returns (error code, base offset)."""
    sock.sendall(w.produce_request(8, correlation_id, -1, topic, 0, batch))
    r = w.Reader(w.read_frame(sock))
    assert r.int32() == correlation_id
    assert r.int32() == 1  # topics
    r.take(r.int16())  # name
    assert r.int32() == 1  # partitions
    r.int32()  # index
    error = r.int16()
    base_offset = r.int64()
    return error, base_offset


OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def test_sequence_rules_duplicates_gaps_and_fencing(broker):
    topic = unique_topic("seq")
    create_topic(broker.bootstrap, topic, partitions=1)
    pid = 424242
    s = w.connect(broker.bootstrap)
    try:
        first = idempotent_batch(pid, 0, 0, [b"a", b"b", b"c"])
        assert produce_v8(s, 1, topic, first) == (0, 0)
        # A retry of the same batch is answered with its original offset and not written.
        assert produce_v8(s, 2, topic, first) == (0, 0)
        assert produce_v8(s, 3, topic, idempotent_batch(pid, 0, 3, [b"d"])) == (0, 3)
        # A gap in the sequence.
        error, _ = produce_v8(s, 4, topic, idempotent_batch(pid, 0, 7, [b"x"]))
        assert error == OUT_OF_ORDER_SEQUENCE_NUMBER
        # A new epoch starts at sequence 0; the old epoch is then fenced.
        assert produce_v8(s, 5, topic, idempotent_batch(pid, 1, 0, [b"e"])) == (0, 4)
        error, _ = produce_v8(s, 6, topic, idempotent_batch(pid, 0, 4, [b"y"]))
        assert error == INVALID_PRODUCER_EPOCH
    finally:
        s.close()

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("seq-check"),
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.time() + 20
    while len(values) < 5 and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            values.append(m.value())
    # Nothing more arrives: the duplicate and the refused batches were not written.
    assert consumer.poll(1.0) is None
    consumer.close()
    assert values == [b"a", b"b", b"c", b"d", b"e"]


def test_duplicate_detection_survives_a_clean_restart(broker):
    """Producer state is snapshotted at shutdown and reloaded: a retry after a restart is
    still recognised."""
    topic = unique_topic("seq-restart")
    create_topic(broker.bootstrap, topic, partitions=1)
    batch = idempotent_batch(777, 0, 0, [b"only-once"])
    with w.connect(broker.bootstrap) as s:
        assert produce_v8(s, 1, topic, batch) == (0, 0)
    broker.restart()
    with w.connect(broker.bootstrap) as s:
        assert produce_v8(s, 2, topic, batch) == (0, 0)
        assert produce_v8(s, 3, topic, idempotent_batch(777, 0, 1, [b"next"])) == (0, 1)
