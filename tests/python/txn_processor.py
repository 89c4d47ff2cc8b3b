"""A consume-transform-produce processor with exactly-once semantics, run as its own
process so that test_transactions.py can SIGKILL it and start it again.

    python txn_processor.py --bootstrap HOST:PORT --input T --output T --group G
        --transactional-id X --events FILE [--batch N] [--pause-after N] [--max-seconds S]

It subscribes to --input with `isolation.level=read_committed` in group --group, and for
each batch of at most --batch messages: begins a transaction, produces `out:<value>` (same
key, same partition number) to --output, sends the consumer's positions to the transaction
(`send_offsets_to_transaction`) and commits. When a commit fails with an abortable error it
aborts and rewinds to the committed offsets; a fatal error ends the process with exit 3.

--pause-after N: once N messages were processed by this process, the next batch is produced
and flushed (its records are in the output log, its transaction open) and then the process
writes `P` to --events and sleeps, so the test can kill it with a transaction in flight.

Events (one line each, flushed): `S` started, `I` init_transactions done, `C <count>` a
commit (count: messages committed by this process so far), `A <error>` an abort,
`P` paused, `E <error>` a fatal error. The process exits on its own after --max-seconds.
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--pause-after", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=170.0)
    args = ap.parse_args()

    events = open(args.events, "a", buffering=1)

    def event(line):
        events.write(line + "\n")
        events.flush()

    event("S")
    deadline = time.monotonic() + args.max_seconds
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.transactional_id,
        "transaction.timeout.ms": 60000,
        "linger.ms": 5,
    })
    producer.init_transactions(30)
    event("I")
    consumer.subscribe([args.input])

    processed = 0
    while time.monotonic() < deadline:
        msgs = consumer.consume(args.batch, timeout=0.5)
        msgs = [m for m in msgs if m.error() is None]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            while True:
                try:
                    producer.produce(args.output, key=m.key(), value=b"out:" + m.value(),
                                     partition=m.partition())
                    break
                except BufferError:
                    producer.poll(0.05)
        processed += len(msgs)
        if args.pause_after and processed >= args.pause_after:
            remaining = producer.flush(30)
            event(f"P {remaining}")
            while time.monotonic() < deadline:
                time.sleep(0.5)
            return
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        try:
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            commit_with_retries(producer)
            event(f"C {processed}")
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                event(f"E {err}")
                sys.exit(3)
            if not err.txn_requires_abort():
                event(f"E not abortable: {err}")
                sys.exit(3)
            event(f"A {err}")
            producer.abort_transaction(30)
            processed -= len(msgs)
            rewind(consumer)
    event("X")
    consumer.close()


def commit_with_retries(producer, attempts=10):
    for attempt in range(attempts):
        try:
            producer.commit_transaction(30)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == attempts - 1:
                raise
            time.sleep(0.2)


def rewind(consumer):
    """Back to the group's committed offsets (the start of the partition when none)."""
    committed = consumer.committed(consumer.assignment(), timeout=30)
    for tp in committed:
        consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))


if __name__ == "__main__":
    main()
