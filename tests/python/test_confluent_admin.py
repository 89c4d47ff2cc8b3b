"""Topic admin through confluent-kafka's AdminClient: create with configs and
validate_only, describe/alter configs (incremental and legacy), create partitions,
delete topics, describe cluster, delete records."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   NewPartitions, NewTopic, OffsetSpec, ResourceType)

from helpers import OP_TIMEOUT_S, admin, consume_exactly, consumer, create_topic, unique_topic, wait_for_topic


def _result(futures, key):
    return futures[key].result(timeout=OP_TIMEOUT_S)


def _error_code(fn):
    with pytest.raises(KafkaException) as info:
        fn()
    return info.value.args[0].code()


def _describe(client, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    (fut,) = client.describe_configs([res], request_timeout=OP_TIMEOUT_S).values()
    return fut.result(timeout=OP_TIMEOUT_S)


def _src(entry) -> int:
    """ConfigEntry.source as an int (the C layer hands over ints, ConfigSource is an Enum)."""
    return int(getattr(entry.source, "value", entry.source))


DYNAMIC_TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def _topics(client):
    return client.list_topics(timeout=10).topics


def test_create_with_configs_and_describe(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("cfg")
    futs = client.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1,
                  config={"retention.ms": "3600000", "cleanup.policy": "compact"})],
        operation_timeout=OP_TIMEOUT_S, request_timeout=OP_TIMEOUT_S)
    assert _result(futs, topic) is None
    md = wait_for_topic(broker.bootstrap, topic, 3)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2]

    configs = _describe(client, topic)
    # Real entries with sources: the ones set at creation are dynamic topic configs...
    assert configs["retention.ms"].value == "3600000"
    assert _src(configs["retention.ms"]) == DYNAMIC_TOPIC
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "compact"
    assert _src(configs["cleanup.policy"]) == DYNAMIC_TOPIC
    # ...and the others come from defaults, with a value (tools show them).
    for name in ("segment.bytes", "max.message.bytes", "retention.bytes", "min.insync.replicas"):
        assert name in configs, f"{name} missing from DescribeConfigs: {sorted(configs)}"
        entry = configs[name]
        assert entry.value is not None and entry.value != "", name
        assert _src(entry) in (ConfigSource.DEFAULT_CONFIG.value, ConfigSource.STATIC_BROKER_CONFIG.value,
                               ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value), (name, entry.source)
    assert int(configs["retention.bytes"].value) == -1


def test_create_validate_only_and_errors(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("validate")
    futs = client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                                validate_only=True, operation_timeout=OP_TIMEOUT_S,
                                request_timeout=OP_TIMEOUT_S)
    assert _result(futs, topic) is None
    time.sleep(0.5)
    assert topic not in _topics(client), "validate_only created the topic"

    create_topic(broker.bootstrap, topic, partitions=2)
    code = _error_code(lambda: _result(client.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1)], request_timeout=OP_TIMEOUT_S), topic))
    assert code == KafkaError.TOPIC_ALREADY_EXISTS

    bad = "bad/name"
    code = _error_code(lambda: _result(client.create_topics(
        [NewTopic(bad, num_partitions=1, replication_factor=1)], request_timeout=OP_TIMEOUT_S), bad))
    assert code == KafkaError.TOPIC_EXCEPTION  # INVALID_TOPIC_EXCEPTION (17)

    other = unique_topic("badcfg")
    code = _error_code(lambda: _result(client.create_topics(
        [NewTopic(other, num_partitions=1, replication_factor=1, config={"retention.ms": "soon"})],
        request_timeout=OP_TIMEOUT_S), other))
    assert code == KafkaError.INVALID_CONFIG

    code = _error_code(lambda: _result(client.create_topics(
        [NewTopic(other, num_partitions=1, replication_factor=3)], request_timeout=OP_TIMEOUT_S), other))
    assert code == KafkaError.INVALID_REPLICATION_FACTOR
    assert other not in _topics(client)


def test_incremental_and_legacy_alter_configs(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("alter")
    create_topic(broker.bootstrap, topic, partitions=1, config={"retention.ms": "86400000"})
    plain = unique_topic("plain")
    create_topic(broker.bootstrap, plain, partitions=1)
    default_retention_ms = _describe(client, plain)["retention.ms"].value
    assert default_retention_ms not in (None, "", "86400000")

    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
    ])
    (fut,) = client.incremental_alter_configs([res], request_timeout=OP_TIMEOUT_S).values()
    fut.result(timeout=OP_TIMEOUT_S)
    configs = _describe(client, topic)
    assert configs["retention.ms"].value == "7200000"
    assert configs["cleanup.policy"].value == "compact"
    assert _src(configs["cleanup.policy"]) == DYNAMIC_TOPIC

    # DELETE returns a config to its default.
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    (fut,) = client.incremental_alter_configs([res], request_timeout=OP_TIMEOUT_S).values()
    fut.result(timeout=OP_TIMEOUT_S)
    configs = _describe(client, topic)
    assert _src(configs["retention.ms"]) != DYNAMIC_TOPIC
    assert configs["retention.ms"].value == default_retention_ms

    # Legacy AlterConfigs replaces the whole set: cleanup.policy goes back to its default.
    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"segment.bytes": "1048576"})
    (fut,) = client.alter_configs([res], request_timeout=OP_TIMEOUT_S).values()
    fut.result(timeout=OP_TIMEOUT_S)
    configs = _describe(client, topic)
    assert configs["segment.bytes"].value == "1048576"
    assert _src(configs["segment.bytes"]) == DYNAMIC_TOPIC
    assert configs["cleanup.policy"].value == "delete"
    assert _src(configs["cleanup.policy"]) != DYNAMIC_TOPIC

    # Unknown topic → UNKNOWN_TOPIC_OR_PART; invalid value → INVALID_CONFIG.
    res = ConfigResource(ResourceType.TOPIC, unique_topic("nope"), incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    code = _error_code(lambda: list(client.incremental_alter_configs([res]).values())[0].result(OP_TIMEOUT_S))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "abc", incremental_operation=AlterConfigOpType.SET)])
    code = _error_code(lambda: list(client.incremental_alter_configs([res]).values())[0].result(OP_TIMEOUT_S))
    assert code == KafkaError.INVALID_CONFIG


def test_create_partitions_and_delete_topics(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("grow")
    create_topic(broker.bootstrap, topic, partitions=2)
    futs = client.create_partitions([NewPartitions(topic, 5)], operation_timeout=OP_TIMEOUT_S,
                                    request_timeout=OP_TIMEOUT_S)
    assert _result(futs, topic) is None
    wait_for_topic(broker.bootstrap, topic, 5)
    # The new partition takes writes.
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    reports = []
    p.produce(topic, value=b"in-new-partition", partition=4, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p.flush(15) == 0
    assert reports == [(None, 0)]

    # Shrinking is invalid.
    code = _error_code(lambda: _result(client.create_partitions([NewPartitions(topic, 3)],
                                                                request_timeout=OP_TIMEOUT_S), topic))
    assert code == KafkaError.INVALID_PARTITIONS

    futs = client.delete_topics([topic], operation_timeout=OP_TIMEOUT_S, request_timeout=OP_TIMEOUT_S)
    assert _result(futs, topic) is None
    deadline = time.monotonic() + OP_TIMEOUT_S
    while topic in _topics(client) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic not in _topics(client)

    missing = unique_topic("missing")
    code = _error_code(lambda: _result(client.delete_topics([missing], request_timeout=OP_TIMEOUT_S), missing))
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_recreate_deleted_topic_starts_empty(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("recreate")
    create_topic(broker.bootstrap, topic, partitions=1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(5):
        p.produce(topic, value=b"old-%d" % i, partition=0)
    assert p.flush(15) == 0
    _result(client.delete_topics([topic], request_timeout=OP_TIMEOUT_S), topic)
    deadline = time.monotonic() + OP_TIMEOUT_S
    while topic in _topics(client) and time.monotonic() < deadline:
        time.sleep(0.2)
    create_topic(broker.bootstrap, topic, partitions=1)
    cons = consumer(broker.bootstrap)
    try:
        assert cons.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 0)
    finally:
        cons.close()


def test_describe_cluster(broker):
    client = admin(broker.bootstrap)
    desc = client.describe_cluster(request_timeout=OP_TIMEOUT_S).result(timeout=OP_TIMEOUT_S)
    assert desc.cluster_id, "cluster id is empty"
    assert [n.id for n in desc.nodes] == [1]
    node = desc.nodes[0]
    assert f"{node.host}:{node.port}" == broker.bootstrap
    assert desc.controller is not None and desc.controller.id == 1
    # Metadata agrees.
    md = client.list_topics(timeout=10)
    assert md.cluster_id == desc.cluster_id
    assert md.controller_id == 1
    assert list(md.brokers) == [1]


def test_delete_records_moves_log_start(broker):
    client = admin(broker.bootstrap)
    topic = unique_topic("delrec")
    create_topic(broker.bootstrap, topic, partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(20):
        p.produce(topic, value=b"r%d" % i, partition=0)
        p.flush(10)  # one batch per record so the deletion point falls on a batch boundary too
    assert p.flush(10) == 0

    futs = client.delete_records([TopicPartition(topic, 0, 12)], request_timeout=OP_TIMEOUT_S,
                                 operation_timeout=OP_TIMEOUT_S)
    deleted = list(futs.values())[0].result(timeout=OP_TIMEOUT_S)
    assert deleted.low_watermark == 12

    (fut,) = client.list_offsets({TopicPartition(topic, 0): OffsetSpec.earliest()},
                                 request_timeout=OP_TIMEOUT_S).values()
    assert fut.result(timeout=OP_TIMEOUT_S).offset == 12
    cons = consumer(broker.bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        assert cons.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (12, 20)
        # Reading from the beginning starts at the new log start.
        cons.assign([TopicPartition(topic, 0, -2)])  # OFFSET_BEGINNING
        msgs = consume_exactly(cons, 8)
        assert [(m.offset(), m.value()) for m in msgs] == [(i, b"r%d" % i) for i in range(12, 20)]
    finally:
        cons.close()

    # Beyond the high watermark is OFFSET_OUT_OF_RANGE.
    futs = client.delete_records([TopicPartition(topic, 0, 100)], request_timeout=OP_TIMEOUT_S)
    code = _error_code(lambda: list(futs.values())[0].result(timeout=OP_TIMEOUT_S))
    assert code == KafkaError.OFFSET_OUT_OF_RANGE
