"""Admin HTTP: /healthz, /readyz and Prometheus /metrics with per-API request counters."""

import re

from confluent_kafka import Producer

from conftest import http_get
from helpers import create_topic, read_partitions, unique_topic

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+\d+)?$')


def parse_prometheus(text):
    """{(name, labels-string): value} for every sample; asserts every line is valid exposition text."""
    samples = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            assert not line.startswith("#") or re.match(r"^# (HELP|TYPE) \S+", line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def _api_counter(samples, api):
    """Sum of request-counter samples (a sluice_*request*total metric) labelled api=<api>."""
    total = 0.0
    for (name, labels), value in samples.items():
        if name.startswith("sluice_") and "request" in name and name.endswith("_total") and "error" not in name:
            m = re.search(r'api="([^"]*)"', labels)
            if m and m.group(1).lower().replace("_", "") == api.lower():
                total += value
    return total


def test_health_and_ready(broker):
    assert http_get(broker.admin, "/healthz")[0] == 200
    assert http_get(broker.admin, "/readyz")[0] == 200
    assert http_get(broker.admin, "/no-such-page")[0] == 404


def test_metrics_after_traffic(broker):
    before = parse_prometheus(broker.metrics())
    topic = unique_topic("metrics")
    create_topic(broker.bootstrap, topic, partitions=1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(10):
        p.produce(topic, value=b"m%d" % i, partition=0)
        p.flush(10)
    assert p.flush(10) == 0
    read_partitions(broker.bootstrap, topic, {0: 10})

    status, body = http_get(broker.admin, "/metrics")
    assert status == 200
    text = body.decode()
    samples = parse_prometheus(text)
    assert any(name.startswith("sluice_") for name, _ in samples), "no sluice_ metrics"
    assert any("api=" in labels for _, labels in samples), "no per-API labels"
    # Per-API request counters moved by what we sent.
    assert _api_counter(samples, "produce") - _api_counter(before, "produce") >= 10
    assert _api_counter(samples, "fetch") - _api_counter(before, "fetch") >= 1
    assert _api_counter(samples, "metadata") - _api_counter(before, "metadata") >= 1
    assert _api_counter(samples, "createtopics") - _api_counter(before, "createtopics") >= 1
    # A latency histogram exists per API.
    assert re.search(r'^sluice_\w+_bucket\{[^}]*api="[^"]+"[^}]*le="[^"]+"', text, re.M), "no per-API histogram"
    # Per-topic traffic shows up under the topic's label.
    assert f'topic="{topic}"' in text, "no per-topic metrics for the topic we wrote"
