"""Consumer groups with confluent-kafka (librdkafka), for both the eager `range` and the
incremental `cooperative-sticky` assignors: three member processes over a 6-partition
topic share 30,000 keyed messages exactly once; a SIGKILLed member's partitions move to
the others within the session timeout with nothing lost; a new member joins mid-stream;
a static member (group.instance.id) restarts without a rebalance; committed offsets
survive a broker restart (SIGKILL and SIGTERM); a fresh consumer's join-to-first-message
time is measured.

The scenarios are in group_scenarios.py; members are group_member.py processes, each
checking every message byte for byte and committing synchronously after each batch.
The failure scenarios use 6,000 messages (throttled members, so that the failure lands
mid-stream) instead of the 30,000 of the exactly-once run. Members that ride through a
broker restart are in test_groups_restart.py.
"""

import statistics
import time
import uuid

import pytest
from confluent_kafka import Consumer

import group_scenarios as sc
from group_broker import message, new_topic, produce_confluent

STRATEGIES = ["range", "cooperative-sticky"]
N_EXACT = 30000
N_FAILURE = 6000


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_three_members_consume_every_message_exactly_once(gbroker, runs, strategy):
    sc.exactly_once(gbroker, runs, "confluent", produce_confluent, N_EXACT,
                    f"confluent {strategy}", strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_killed_member_partitions_move_and_nothing_is_lost(gbroker, runs, strategy):
    sc.killed_member(gbroker, runs, "confluent", produce_confluent, N_FAILURE,
                     f"confluent {strategy}", strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_new_member_joins_and_consumption_continues(gbroker, runs, strategy):
    sc.new_member_joins(gbroker, runs, "confluent", produce_confluent, N_FAILURE,
                        f"confluent {strategy}", strategy=strategy)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_static_member_restart_causes_no_rebalance(gbroker, runs, strategy):
    sc.static_member_restart(gbroker, runs, "confluent", produce_confluent, N_FAILURE,
                             f"confluent {strategy}", strategy=strategy)


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_committed_offsets_survive_broker_restart(gbroker, runs, how):
    sc.broker_restart(gbroker, runs, "confluent", produce_confluent, how, "confluent range",
                      strategy="range")




def test_time_from_join_to_first_message(gbroker):
    """A fresh consumer subscribes to a topic that has data; how long until its first
    message (group.initial.rebalance.delay.ms=0). Printed for the record; bounded so a
    hang fails."""
    topic = new_topic(gbroker.bootstrap, "gfirst")
    where = produce_confluent(gbroker.bootstrap, topic, range(60))
    times = []
    for _ in range(5):
        began = time.monotonic()
        cons = Consumer({"bootstrap.servers": gbroker.bootstrap,
                         "group.id": f"first-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            cons.subscribe([topic])
            deadline = began + 10
            msg = None
            while time.monotonic() < deadline:
                msg = cons.poll(0.05)
                if msg is not None:
                    break
            elapsed = time.monotonic() - began
            assert msg is not None, "no message within 10 s of subscribing"
            assert msg.error() is None, msg.error()
            seq = int(msg.value().split(b"|", 1)[0])
            assert (msg.key(), msg.value()) == message(seq)
            assert where[seq] == (msg.partition(), msg.offset())
        finally:
            cons.close()
        times.append(elapsed)
    print(f"confluent: join-to-first-message {', '.join(f'{t * 1000:.0f}' for t in times)} ms "
          f"(median {statistics.median(times) * 1000:.0f} ms)")
    assert max(times) < 10
