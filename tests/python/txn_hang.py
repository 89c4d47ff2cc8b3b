"""A transactional producer that opens a transaction, writes to it and then hangs, run as
its own process so that test_transactions.py can SIGKILL it and leave the transaction open.

    python txn_hang.py --bootstrap HOST:PORT --topic T --partition P --transactional-id X
        --timeout-ms MS --count N --events FILE

After init_transactions and begin_transaction it produces `hung-<i>` for i < N to the
partition, flushes (the records are in the log), writes `P <first offset> <last offset>`
to --events and sleeps; it exits by itself after 120 s.
"""

import argparse
import time

from confluent_kafka import Producer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partition", type=int, required=True)
    ap.add_argument("--transactional-id", required=True)
    ap.add_argument("--timeout-ms", type=int, required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--events", required=True)
    args = ap.parse_args()

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.transactional_id,
        "transaction.timeout.ms": args.timeout_ms,
    })
    producer.init_transactions(30)
    producer.begin_transaction()
    offsets = []

    def on_delivery(err, msg):
        offsets.append(-1 if err is not None else msg.offset())

    for i in range(args.count):
        producer.produce(args.topic, value=b"hung-%d" % i, partition=args.partition, on_delivery=on_delivery)
    remaining = producer.flush(30)
    with open(args.events, "a") as f:
        f.write(f"P {remaining} {min(offsets, default=-1)} {max(offsets, default=-1)}\n")
    time.sleep(120)


if __name__ == "__main__":
    main()
