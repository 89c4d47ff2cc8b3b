"""Consumer lag on /metrics, kafka-exporter style, against lag computed the way KEDA's
Kafka scaler does it (FindCoordinator + OffsetFetch for the group's committed offsets,
ListOffsets latest for the partition ends; lag = latest - committed), here with
kafka-python. Checks kafka_consumergroup_lag, kafka_consumergroup_current_offset,
kafka_topic_partition_current_offset and kafka_topic_partition_oldest_offset with their
kafka-exporter labels, for a group that committed through a subscribed member and one that
committed offsets without joining (a "simple" consumer), and that the gauges follow a
member that catches up and a group that is deleted."""

import re
import time

from confluent_kafka import Consumer, TopicPartition

from conftest import http_get
from group_broker import (PARTITIONS, GroupRun, new_topic, partition_ends, produce_confluent,
                          unique)
from helpers import OP_TIMEOUT_S, admin

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
SCRAPE_WAIT_S = 15.0


def scrape(broker):
    """{name: {frozenset(labels.items()): value}} from /metrics."""
    status, body = http_get(broker.admin, "/metrics")
    assert status == 200, f"/metrics answered {status}"
    out = {}
    for line in body.decode().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), {})[labels] = float(m.group(3))
    return out


def series(samples, name, **labels):
    """{partition: value} of metric `name` for the given labels (plus partition)."""
    out = {}
    for ls, value in samples.get(name, {}).items():
        d = dict(ls)
        if all(d.get(k) == v for k, v in labels.items()) and "partition" in d:
            assert set(d) == set(labels) | {"partition"}, f"{name} labels {sorted(d)}"
            out[int(d["partition"])] = value
    return out


def keda_lag(bootstrap, group, topic):
    """(committed, latest, oldest, lag) per partition, the way KEDA computes lag."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka import TopicPartition as KTP
    tps = [KTP(topic, p) for p in range(PARTITIONS)]
    ka = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    cons = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        fetched = ka.list_group_offsets({group: tps})[group]  # FindCoordinator + OffsetFetch
        committed = {tp.partition: (fetched[tp].offset if tp in fetched else -1) for tp in tps}
        latest = {tp.partition: o for tp, o in cons.end_offsets(tps).items()}  # ListOffsets -1
        oldest = {tp.partition: o for tp, o in cons.beginning_offsets(tps).items()}
    finally:
        cons.close()
        ka.close()
    lag = {p: latest[p] - committed[p] for p in committed if committed[p] >= 0}
    return committed, latest, oldest, lag


def wait_metrics(broker, check, what):
    """Scrapes until check(samples) returns None (all good) or SCRAPE_WAIT_S passes."""
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while True:
        samples = scrape(broker)
        problem = check(samples)
        if problem is None:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics within {SCRAPE_WAIT_S}s: {what}: {problem}")
        time.sleep(0.5)


def expect_group(broker, group, topic):
    """Compares the group's and the topic's gauges with the KEDA-style computation."""
    committed, latest, oldest, lag = keda_lag(broker.bootstrap, group, topic)

    def check(samples):
        got = {
            "lag": series(samples, "kafka_consumergroup_lag", consumergroup=group, topic=topic),
            "current": series(samples, "kafka_consumergroup_current_offset",
                              consumergroup=group, topic=topic),
            "latest": series(samples, "kafka_topic_partition_current_offset", topic=topic),
            "oldest": series(samples, "kafka_topic_partition_oldest_offset", topic=topic),
        }
        want = {"lag": lag, "current": {p: o for p, o in committed.items() if o >= 0},
                "latest": latest, "oldest": oldest}
        for k in want:
            if got[k] != want[k]:
                return f"{k}: /metrics {got[k]} != client {want[k]}"
        return None

    wait_metrics(broker, check, f"gauges of group {group} on {topic}")
    return committed, latest, oldest, lag


def test_lag_gauges_match_keda_computation(gbroker, runs):
    topic = new_topic(gbroker.bootstrap, "glag")
    where = produce_confluent(gbroker.bootstrap, topic, range(600))
    ends = partition_ends(where)

    # Group 1: a subscribed member consumes everything and commits, then leaves.
    run = GroupRun(gbroker.bootstrap, topic, "confluent")
    runs.append(run)
    run.add("m0", strategy="range")
    run.wait_seen(set(where), timeout=60)
    run.stop_all()

    # Group 2: commits chosen offsets without joining (generation -1, as tools do).
    simple = unique("simple")
    chosen = {p: ends[p] // (p + 2) for p in range(PARTITIONS)}
    cons = Consumer({"bootstrap.servers": gbroker.bootstrap, "group.id": simple,
                     "enable.auto.commit": False})
    try:
        cons.commit(offsets=[TopicPartition(topic, p, o) for p, o in chosen.items()],
                    asynchronous=False)
    finally:
        cons.close()

    # Ten more messages per partition, and partition 0's head deleted up to offset 5.
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": gbroker.bootstrap, "acks": "all"})
    for i in range(10 * PARTITIONS):
        producer.produce(topic, value=b"more-%d" % i, partition=i % PARTITIONS)
    assert producer.flush(30) == 0
    client = admin(gbroker.bootstrap)  # outlives its futures
    futures = client.delete_records([TopicPartition(topic, 0, 5)], request_timeout=OP_TIMEOUT_S)
    for f in futures.values():
        f.result(timeout=OP_TIMEOUT_S)

    committed, latest, oldest, lag = expect_group(gbroker, run.group, topic)
    assert committed == ends
    assert latest == {p: ends[p] + 10 for p in range(PARTITIONS)}
    assert oldest == {0: 5, **{p: 0 for p in range(1, PARTITIONS)}}
    assert lag == {p: 10 for p in range(PARTITIONS)}

    committed, latest, _, lag = expect_group(gbroker, simple, topic)
    assert committed == chosen
    assert lag == {p: ends[p] + 10 - chosen[p] for p in range(PARTITIONS)}
    print(f"lag of {simple}: {lag} (total {sum(lag.values())})")

    # Group 1 catches up: its lag goes to 0 on /metrics.
    again = GroupRun(gbroker.bootstrap, topic, "confluent", group=run.group)
    runs.append(again)
    again.add("m1", strategy="range")
    again.wait(lambda r: {p: o for p, o in r.events()["m1"].commits} == latest
               if r.events()["m1"].commits else False, 60,
               "m1 committed the partition ends")
    committed, _, _, lag = expect_group(gbroker, run.group, topic)
    assert lag == {p: 0 for p in range(PARTITIONS)}
    again.stop_all()

    # A deleted group leaves /metrics; the other group's series stay.
    fut = client.delete_consumer_groups([simple], request_timeout=OP_TIMEOUT_S)
    fut[simple].result(timeout=OP_TIMEOUT_S)
    wait_metrics(gbroker, lambda s: (
        series(s, "kafka_consumergroup_lag", consumergroup=simple, topic=topic) or None) and
        "still exported", f"no series for deleted group {simple}")
    assert series(scrape(gbroker), "kafka_consumergroup_lag",
                  consumergroup=run.group, topic=topic) == {p: 0 for p in range(PARTITIONS)}
