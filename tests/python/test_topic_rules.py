"""Rules a Kafka client can see at topic level: compacted topics refuse records without
a key, and replication factors the broker cannot honour are refused up front."""

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import NewTopic

from helpers import OP_TIMEOUT_S, admin, create_topic, unique_topic


def deliver(bootstrap, topic, key, value):
    """Produces one record; returns the delivery error code name, or None on success."""
    results = []
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    p.produce(topic, key=key, value=value, on_delivery=lambda err, msg: results.append(err))
    assert p.flush(OP_TIMEOUT_S) == 0
    assert len(results) == 1
    return None if results[0] is None else results[0].name()


def test_compacted_topic_refuses_records_without_a_key(broker):
    topic = unique_topic("compacted")
    create_topic(broker.bootstrap, topic, partitions=1, config={"cleanup.policy": "compact"})
    assert deliver(broker.bootstrap, topic, b"k", b"v") is None
    assert deliver(broker.bootstrap, topic, None, b"no key") == "INVALID_RECORD"
    # A delete-policy topic takes keyless records as usual.
    plain = unique_topic("plain")
    create_topic(broker.bootstrap, plain, partitions=1)
    assert deliver(broker.bootstrap, plain, None, b"no key") is None


def test_replication_factor_above_one_is_refused_with_a_reason(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("rf3")
    futures = client.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)],
                                   request_timeout=OP_TIMEOUT_S)
    try:
        futures[topic].result(timeout=OP_TIMEOUT_S)
        raise AssertionError("replication factor 3 was accepted")
    except KafkaException as e:
        err = e.args[0]
        assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err
        assert "replication factor 1" in err.str(), err.str()


def test_time_retention_moves_the_earliest_offset(sluice_factory):
    """retention.ms on a topic deletes old segments: a consumer's earliest offset moves up
    and the remaining records are still readable."""
    import time
    from confluent_kafka import Consumer, TopicPartition
    b = sluice_factory("--set", "log.retention.check.interval.ms=200")
    topic = unique_topic("retention")
    # Small segments so that there are whole old segments to delete.
    create_topic(b.bootstrap, topic, partitions=1, config={"segment.bytes": "1024", "retention.ms": "1500"})
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(20):
        p.produce(topic, key=str(i).encode(), value=b"x" * 200)
        p.flush(OP_TIMEOUT_S)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique_topic("ret"), "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=OP_TIMEOUT_S)
    assert (low, high) == (0, 20)
    deadline = time.time() + 20
    while time.time() < deadline:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=OP_TIMEOUT_S, cached=False)
        if low > 0:
            break
        time.sleep(0.3)
    assert 0 < low <= high == 20, (low, high)
    c.close()
