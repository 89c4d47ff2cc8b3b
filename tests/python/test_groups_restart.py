"""Consumer groups across broker restarts and shutdown: members of each Python client
family keep running while the broker is SIGKILLed or SIGTERMed and restarted under them
(they reconnect, find the coordinator, finish the stream with nothing lost and nothing
re-read below an offset committed before the restart); and a broker with a rebalance
pending (JoinGroup requests parked in the coordinator) still stops promptly on SIGTERM.
Scenarios in group_scenarios.py; the stop-restart-resume scenario is in each client's
own test_groups_<client>.py."""

import pytest

import group_scenarios as sc
from group_broker import produce_confluent, produce_kafka_python

N = 4500


@pytest.mark.parametrize("client,how,opts", [
    ("confluent", "sigkill", {"strategy": "range"}),
    ("confluent", "sigterm", {"strategy": "cooperative-sticky"}),
    ("kafka-python", "sigkill", {}),
    ("aiokafka", "sigterm", {}),
], ids=["confluent-range-sigkill", "confluent-cooperative-sigterm", "kafka-python-sigkill",
        "aiokafka-sigterm"])
def test_members_ride_through_a_broker_restart(gbroker, runs, client, how, opts):
    produce = produce_kafka_python if client == "kafka-python" else produce_confluent
    label = f"{client} {opts.get('strategy', '')}".strip()
    sc.broker_restart_live(gbroker, runs, client, produce, N, how, label, **opts)


def test_broker_stops_promptly_while_a_rebalance_is_pending(gbroker, runs):
    sc.shutdown_during_rebalance(gbroker, runs, "confluent", "confluent range", strategy="range")
