"""kafka-python 3.x: produce and consume (assign + seek_to_beginning) with codecs,
and KafkaAdminClient topic admin including the error codes a client acts on."""

import time

import kafka
import kafka.errors as Errors
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

import kafka_wire as w
from helpers import payload, unique_topic

TIMEOUT_MS = 15000


def test_version_is_3x():
    assert kafka.__version__.startswith("3."), kafka.__version__


@pytest.fixture
def admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    yield client
    client.close()


def _create(admin, name, partitions, configs=None):
    admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                                "configs": configs or {}}}, timeout_ms=TIMEOUT_MS)
    admin.wait_for_topics([name], timeout_ms=TIMEOUT_MS)


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume(broker, admin, codec):
    topic = unique_topic(f"kp-{codec}")
    _create(admin, topic, 3)
    # kafka-python 3.x enables idempotence by default, which needs InitProducerId (not in Sluice yet).
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type=codec,
                             linger_ms=5, request_timeout_ms=TIMEOUT_MS, enable_idempotence=False)
    sent = {}
    futures = []
    for i in range(150):
        key = f"key-{i % 6}".encode()
        value = payload(5000 + i, 1 + (i * 53) % 3000)
        headers = [("i", str(i).encode()), ("z", b"\x00\xff")]
        futures.append((key, value, headers, producer.send(topic, key=key, value=value, headers=headers)))
    producer.flush(timeout=30)
    for key, value, headers, fut in futures:
        md = fut.get(timeout=30)
        sent.setdefault(md.partition, []).append((md.offset, key, value, headers))
    producer.close(timeout=10)
    assert len(sent) == 3 and sum(len(v) for v in sent.values()) == 150, {p: len(v) for p, v in sent.items()}
    for p, rows in sent.items():
        rows.sort()
        assert [r[0] for r in rows] == list(range(len(rows))), f"offsets on partition {p}"

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=TIMEOUT_MS + 1000)
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        got = {p: [] for p in range(3)}
        deadline = time.monotonic() + 30
        while sum(len(v) for v in got.values()) < 150 and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    got[tp.partition].append((r.offset, r.key, r.value, list(r.headers)))
        for p in range(3):
            assert got[p] == sent.get(p, []), f"partition {p} differs"
        assert consumer.end_offsets(tps) == {TopicPartition(topic, p): len(sent.get(p, [])) for p in range(3)}
        assert consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}
    finally:
        consumer.close()


def test_default_producer_is_idempotent(broker):
    """kafka-python 3.x enables idempotence by default (InitProducerId); runs when the broker
    advertises InitProducerId, else it is skipped and a default producer fails with
    IncompatibleBrokerVersion."""
    s = w.connect(broker.bootstrap)
    s.sendall(w.api_versions_request(0, 1))
    _, _, keys, _ = w.parse_api_versions_v0(w.read_frame(s))
    s.close()
    if 22 not in keys:
        pytest.skip("idempotent producer (InitProducerId) not implemented yet")
    topic = unique_topic("kp-idem")
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    try:
        _create(admin, topic, 1)
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT_MS)
    futures = [producer.send(topic, key=b"k", value=b"idem-%d" % i, partition=0) for i in range(20)]
    producer.flush(timeout=30)
    offsets = [f.get(timeout=30).offset for f in futures]
    producer.close(timeout=10)
    assert offsets == list(range(20))
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning()
        values = []
        deadline = time.monotonic() + 30
        while len(values) < 20 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
        assert values == [b"idem-%d" % i for i in range(20)]
    finally:
        consumer.close()


def test_admin_topics_and_configs(broker, admin):
    topic = unique_topic("kp-admin")
    _create(admin, topic, 2, {"retention.ms": "123456", "cleanup.policy": "compact"})
    assert topic in admin.list_topics()
    desc = admin.describe_topics([topic])
    assert len(desc) == 1 and desc[0]["name"] == topic
    assert sorted(p["partition_index"] for p in desc[0]["partitions"]) == [0, 1]

    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    configs = res["topic"][topic]
    assert configs["retention.ms"]["value"] == "123456"
    assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["cleanup.policy"]["value"] == "compact"
    assert configs["segment.bytes"]["config_source"] in ("DEFAULT_CONFIG", "STATIC_BROKER_CONFIG")
    # The default filter ('modified') shows only what was set on the topic.
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    assert set(res["topic"][topic]) == {"retention.ms", "cleanup.policy"}

    admin.create_partitions({topic: 4}, timeout_ms=TIMEOUT_MS)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        parts = admin.describe_topics([topic])[0]["partitions"]
        if len(parts) == 4:
            break
        time.sleep(0.2)
    assert sorted(p["partition_index"] for p in parts) == [0, 1, 2, 3]

    admin.delete_topics([topic], timeout_ms=TIMEOUT_MS)
    deadline = time.monotonic() + 15
    while topic in admin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic not in admin.list_topics()


def test_admin_error_cases(broker, admin):
    topic = unique_topic("kp-errors")
    _create(admin, topic, 1)
    with pytest.raises(Errors.TopicAlreadyExistsError):
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=TIMEOUT_MS)
    with pytest.raises(Errors.InvalidTopicError):
        admin.create_topics({"bad topic name!": {"num_partitions": 1, "replication_factor": 1}},
                            timeout_ms=TIMEOUT_MS)
    with pytest.raises(Errors.InvalidTopicError):
        admin.create_topics({"x" * 250: {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=TIMEOUT_MS)
    with pytest.raises(Errors.InvalidPartitionsError):
        admin.create_topics({unique_topic("kp-zero"): {"num_partitions": 0, "replication_factor": 1}},
                            timeout_ms=TIMEOUT_MS)
    with pytest.raises(Errors.UnknownTopicOrPartitionError):
        admin.delete_topics([unique_topic("kp-missing")], timeout_ms=TIMEOUT_MS)
    with pytest.raises(Errors.InvalidPartitionsError):
        admin.create_partitions({topic: 1}, timeout_ms=TIMEOUT_MS)
    with pytest.raises(Errors.UnknownTopicOrPartitionError):
        admin.create_partitions({unique_topic("kp-missing"): 3}, timeout_ms=TIMEOUT_MS)
