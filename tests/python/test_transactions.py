"""Transactions (issue 6, the exactly-once half) with confluent-kafka and, where no client
library exposes the API, raw requests (txn_wire.py).

What a user would notice, checked against Kafka's documented behaviour:
- commit and abort: a read_committed consumer sees exactly the committed messages (and the
  plain producers' ones), in offset order, and gets past aborted data and the markers; a
  read_uncommitted one sees every data record. One control marker per partition per
  finished transaction.
- the last stable offset: an open transaction holds back read_committed consumers at its
  first offset, later messages from other producers included; ListOffsets(latest,
  READ_COMMITTED) answers the LSO.
- consume-transform-produce with send_offsets_to_transaction, the processor SIGKILLed twice
  and restarted: every input exactly once in the committed output, offsets at the end.
- a dead producer's transaction is aborted after transaction.timeout.ms, also when the
  broker was restarted in between.
- a second producer with the same transactional.id fences the first.
- a broker restart (SIGTERM and SIGKILL) with a transaction open, written to before and
  after it: it commits or aborts as a whole, never torn; a restart right after a commit
  was answered: the commit completes.
- transactional offset commits are visible only after commit.
- KIP-890's defence: a transactional produce to a partition not added to the transaction is
  refused with INVALID_TXN_STATE; `transaction.version` >= 2 is not advertised.
- ListTransactions / DescribeTransactions / DescribeProducers (not in confluent-kafka 2.16's
  AdminClient, so raw requests).

Every wait is bounded; every broker is started by the test's fixture on free loopback ports.
"""

import collections
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import (Consumer, IsolationLevel, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import OffsetSpec

import txn_wire as tw
from helpers import OP_TIMEOUT_S, admin, create_topic, unique_topic

HERE = Path(__file__).resolve().parent
TXN_BROKER_ARGS = ("--num-partitions", "3", "--auto-create-topics-enable", "true",
                   "--set", "group.initial.rebalance.delay.ms=0")
PARTITION_EOF = KafkaError._PARTITION_EOF
FENCED_CODES = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


@pytest.fixture
def tbroker(sluice_factory):
    return sluice_factory(*TXN_BROKER_ARGS)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ----------------------------------------------------------------------------- helpers
def txn_producer(bootstrap, transactional_id, **extra):
    """A transactional producer after init_transactions."""
    conf = {"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
            "transaction.timeout.ms": 60000, "linger.ms": 5}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


class Delivered:
    """Delivery-report collector: (topic, partition) -> [(offset, value)]."""

    def __init__(self):
        self.by_tp = collections.defaultdict(list)
        self.errors = []

    def __call__(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.by_tp[(msg.topic(), msg.partition())].append((msg.offset(), msg.value()))

    def values(self, topic, partition):
        return [v for _, v in sorted(self.by_tp[(topic, partition)])]

    def all(self):
        return {tp: sorted(v) for tp, v in self.by_tp.items()}


def produce_plain(bootstrap, messages, idempotent=False):
    """messages: [(topic, partition, value)]; returns {(topic, partition): [(offset, value)]}."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": idempotent})
    d = Delivered()
    for topic, partition, value in messages:
        p.produce(topic, value=value, partition=partition, on_delivery=d)
    assert p.flush(30) == 0, "plain producer did not deliver within 30 s"
    assert not d.errors, d.errors
    return d.by_tp


def end_offsets(bootstrap, tps, isolation):
    """ListOffsets(latest) at the given isolation level: {TopicPartition key (topic, p): offset}."""
    client = admin(bootstrap)
    futures = client.list_offsets({TopicPartition(t, p): OffsetSpec.latest() for t, p in tps},
                                  isolation_level=isolation, request_timeout=OP_TIMEOUT_S)
    return {(tp.topic, tp.partition): f.result(timeout=OP_TIMEOUT_S).offset for tp, f in futures.items()}


def wait_stable(bootstrap, tps, timeout=15.0):
    """Bounded wait until the LSO equals the high watermark on every partition (every
    transaction on them finished and its markers written); returns the high watermarks."""
    deadline = time.monotonic() + timeout
    while True:
        hw = end_offsets(bootstrap, tps, IsolationLevel.READ_UNCOMMITTED)
        lso = end_offsets(bootstrap, tps, IsolationLevel.READ_COMMITTED)
        if hw == lso:
            return hw
        assert time.monotonic() < deadline, f"LSO {lso} never reached the high watermark {hw} within {timeout}s"
        time.sleep(0.2)


def reader(bootstrap, isolation, **extra):
    conf = {"bootstrap.servers": bootstrap, "group.id": unique("txn-reader"),
            "enable.auto.commit": False, "enable.partition.eof": True,
            "isolation.level": isolation, "auto.offset.reset": "error"}
    conf.update(extra)
    return Consumer(conf)


def consume_to(cons, ends, timeout=30.0, seen=None):
    """Polls an assigned consumer until each (topic, partition) in `ends` reported EOF at an
    offset >= its end; returns {(topic, partition): [(offset, value)]} (added to `seen`)."""
    seen = seen if seen is not None else collections.defaultdict(list)
    eof = {}
    deadline = time.monotonic() + timeout
    while any(eof.get(tp, -1) < end for tp, end in ends.items()):
        assert time.monotonic() < deadline, (
            f"not at the end within {timeout}s: EOF at {eof}, wanted {ends}; "
            f"got {{tp: len}} {{{', '.join(f'{k}: {len(v)}' for k, v in seen.items())}}}")
        m = cons.poll(0.2)
        if m is None:
            continue
        tp = (m.topic(), m.partition())
        if m.error() is not None:
            assert m.error().code() == PARTITION_EOF, f"consumer error: {m.error()}"
            eof[tp] = m.offset()
            continue
        eof.pop(tp, None)
        seen[tp].append((m.offset(), m.value()))
    return seen


def read_all(bootstrap, tps, isolation, ends=None, timeout=30.0):
    """Reads the partitions from offset 0 to `ends` (default: the high watermarks) and
    checks the consumer's position is then exactly at the end. Returns
    {(topic, partition): [(offset, value)]}."""
    ends = ends or end_offsets(bootstrap, tps, IsolationLevel.READ_UNCOMMITTED)
    cons = reader(bootstrap, isolation)
    try:
        cons.assign([TopicPartition(t, p, 0) for t, p in tps])
        seen = consume_to(cons, ends, timeout)
        positions = {(tp.topic, tp.partition): tp.offset for tp in cons.position(cons.assignment())}
    finally:
        cons.close()
    for tp, end in ends.items():
        # An empty partition's position stays "invalid" (-1001); otherwise it is the end:
        # a read_committed consumer is past the aborted records and the last marker.
        if end > 0:
            assert positions[tp] == end, f"{isolation} consumer position on {tp} is {positions[tp]}, end {end}"
    return {tp: seen.get(tp, []) for tp in tps}


def assert_in_offset_order(records, what):
    offsets = [o for o, _ in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), f"{what}: offsets {offsets}"


# ----------------------------------------------------------------------------- 1. commit and abort
def test_commit_and_abort_read_committed_and_uncommitted(tbroker):
    b = tbroker.bootstrap
    ta, tb_ = unique_topic("txn-a"), unique_topic("txn-b")
    create_topic(b, ta, partitions=3)
    create_topic(b, tb_, partitions=2)
    tps = [(ta, 0), (ta, 1), (ta, 2), (tb_, 0), (tb_, 1)]

    committed, aborted = Delivered(), Delivered()
    plain = collections.defaultdict(list)

    def add_plain(tag):
        for tp, recs in produce_plain(b, [(t, p, f"{tag}-{t}-{p}".encode()) for t, p in tps]).items():
            plain[tp].extend(recs)

    add_plain("plain0")
    producer = txn_producer(b, unique("tx-ca"))

    # 1: committed, with a plain producer writing in the middle of it.
    producer.begin_transaction()
    for i in range(5):
        for t, p in tps:
            producer.produce(t, value=f"c1-{t}-{p}-{i}".encode(), partition=p, on_delivery=committed)
    assert producer.flush(30) == 0
    add_plain("plain1")
    producer.commit_transaction(30)

    # 2: aborted; its records are in the log (flushed) before the abort.
    producer.begin_transaction()
    for i in range(4):
        for t, p in tps:
            producer.produce(t, value=f"a2-{t}-{p}-{i}".encode(), partition=p, on_delivery=aborted)
    assert producer.flush(30) == 0
    add_plain("plain2")
    producer.abort_transaction(30)

    # 3: committed again.
    producer.begin_transaction()
    for i in range(3):
        for t, p in tps:
            producer.produce(t, value=f"c3-{t}-{p}-{i}".encode(), partition=p, on_delivery=committed)
    producer.commit_transaction(30)
    add_plain("plain3")
    assert not committed.errors and not aborted.errors, (committed.errors, aborted.errors)
    for tp in tps:
        assert len(committed.by_tp[tp]) == 8 and len(aborted.by_tp[tp]) == 4, tp

    hw = wait_stable(b, tps)
    for tp in tps:
        # Data records plus one marker per transaction that touched the partition (three).
        data = len(committed.by_tp[tp]) + len(aborted.by_tp[tp]) + len(plain[tp])
        assert hw[tp] == data + 3, f"{tp}: high watermark {hw[tp]}, {data} data records + 3 markers expected"

    rc = read_all(b, tps, "read_committed", ends=hw)
    ru = read_all(b, tps, "read_uncommitted", ends=hw)
    for tp in tps:
        want_rc = sorted(committed.by_tp[tp] + plain[tp])
        want_ru = sorted(committed.by_tp[tp] + aborted.by_tp[tp] + plain[tp])
        assert_in_offset_order(rc[tp], f"read_committed {tp}")
        assert rc[tp] == want_rc, f"read_committed {tp}:\n got  {rc[tp]}\n want {want_rc}"
        assert ru[tp] == want_ru, f"read_uncommitted {tp}:\n got  {ru[tp]}\n want {want_ru}"
        # The committed values come in the order they were produced.
        assert [v for _, v in rc[tp] if v.startswith(b"c")] == committed.values(*tp)


def test_interleaved_transactions_over_small_segments_and_a_restart(tbroker):
    """Two transactional producers and a plain one write to the same partitions at once,
    one transaction committing and the other aborting, over 2 KiB segments (so aborted
    transactions span segments and the aborted-transaction index is per segment). While
    one is finished and the other open, the LSO is the open one's first offset. After a
    SIGKILL restart (indexes rebuilt), read_committed still sees exactly the same."""
    b = tbroker.bootstrap
    topic = unique_topic("txn-mix")
    create_topic(b, topic, partitions=2, config={"segment.bytes": "2048"})
    tps = [(topic, 0), (topic, 1)]
    p1, p2 = txn_producer(b, unique("tx-mix1")), txn_producer(b, unique("tx-mix2"))
    plain = Producer({"bootstrap.servers": b, "acks": "all", "linger.ms": 0})
    committed, aborted, plain_sent = Delivered(), Delivered(), Delivered()
    pad = b"." * 150
    for rnd in range(8):
        this = {p1: Delivered(), p2: Delivered()}
        p1.begin_transaction()
        p2.begin_transaction()
        for i in range(5):
            for name, prod in (("p1", p1), ("p2", p2)):
                prod.produce(topic, value=f"{name}-{rnd}-{i}-".encode() + pad, partition=i % 2,
                             on_delivery=this[prod])
                assert prod.flush(30) == 0  # one at a time, so the two interleave in the log
            plain.produce(topic, value=f"plain-{rnd}-{i}-".encode() + pad, partition=i % 2, on_delivery=plain_sent)
            assert plain.flush(30) == 0
        first_end, second_end = (p1, p2) if rnd % 2 == 0 else (p2, p1)
        commit_first = rnd % 4 < 2
        for prod, commit in ((first_end, commit_first), (second_end, not commit_first)):
            if commit:
                prod.commit_transaction(30)
            else:
                prod.abort_transaction(30)
            target = committed if commit else aborted
            for tp, recs in this[prod].by_tp.items():
                target.by_tp[tp].extend(recs)
            if prod is first_end:
                # The other transaction is still open: the LSO is its first offset.
                want = {tp: min(o for o, _ in this[second_end].by_tp[tp]) for tp in tps}
                assert end_offsets(b, tps, IsolationLevel.READ_COMMITTED) == want, f"round {rnd}"
    assert not (committed.errors or aborted.errors or plain_sent.errors)

    def check():
        hw = wait_stable(b, tps)
        rc = read_all(b, tps, "read_committed", ends=hw)
        ru = read_all(b, tps, "read_uncommitted", ends=hw)
        for tp in tps:
            want_rc = sorted(committed.by_tp[tp] + plain_sent.by_tp[tp])
            assert rc[tp] == want_rc, f"read_committed {tp}: {len(rc[tp])} records, {len(want_rc)} expected"
            want_ru = sorted(committed.by_tp[tp] + aborted.by_tp[tp] + plain_sent.by_tp[tp])
            assert ru[tp] == want_ru, f"read_uncommitted {tp}: {len(ru[tp])} records, {len(want_ru)} expected"
            assert hw[tp] == len(want_ru) + 16, f"{tp}: high watermark {hw[tp]}, {len(want_ru)} records + 16 markers expected"

    check()
    for q in range(2):  # the premise: several segments per partition
        segments = list((tbroker.data_dir / f"{topic}-{q}").glob("*.log"))
        assert len(segments) >= 3, f"partition {q}: {len(segments)} segments"
    tbroker.kill()
    tbroker.start()
    check()


# ----------------------------------------------------------------------------- 2. LSO
def test_open_transaction_holds_back_read_committed_at_the_lso(tbroker):
    b = tbroker.bootstrap
    topic = unique_topic("txn-lso")
    create_topic(b, topic, partitions=1)
    tp = (topic, 0)
    before = produce_plain(b, [(topic, 0, f"before-{i}".encode()) for i in range(3)])[tp]
    assert [o for o, _ in before] == [0, 1, 2]

    producer = txn_producer(b, unique("tx-lso"))
    producer.begin_transaction()
    inside = Delivered()
    for i in range(2):
        producer.produce(topic, value=f"inside-{i}".encode(), partition=0, on_delivery=inside)
    assert producer.flush(30) == 0
    assert [o for o, _ in inside.by_tp[tp]] == [3, 4]
    after = produce_plain(b, [(topic, 0, f"after-{i}".encode()) for i in range(2)])[tp]
    assert [o for o, _ in after] == [5, 6]

    assert end_offsets(b, [tp], IsolationLevel.READ_UNCOMMITTED) == {tp: 7}
    assert end_offsets(b, [tp], IsolationLevel.READ_COMMITTED) == {tp: 3}, "ListOffsets(READ_COMMITTED) must answer the LSO"

    cons = reader(b, "read_committed")
    try:
        cons.assign([TopicPartition(topic, 0, 0)])
        # librdkafka's watermark query is a ListOffsets at the consumer's isolation level:
        # the LSO for read_committed, the high watermark for read_uncommitted.
        assert cons.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 3)
        ru_cons = reader(b, "read_uncommitted")
        try:
            assert ru_cons.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 7)
        finally:
            ru_cons.close()
        seen = consume_to(cons, {tp: 3})
        assert seen[tp] == before, seen[tp]
        # Nothing past the LSO arrives while the transaction is open: not the transaction's
        # records, not the plain producer's later ones.
        quiet_until = time.monotonic() + 2.0
        while time.monotonic() < quiet_until:
            m = cons.poll(0.2)
            assert m is None or (m.error() is not None and m.error().code() == PARTITION_EOF), (
                f"read past the LSO: offset {m.offset()} value {m.value()}")
        assert cons.position([TopicPartition(topic, 0)])[0].offset == 3

        ru = read_all(b, [tp], "read_uncommitted", ends={tp: 7})
        assert ru[tp] == before + inside.by_tp[tp] + after

        producer.commit_transaction(30)
        assert wait_stable(b, [tp]) == {tp: 8}
        consume_to(cons, {tp: 8}, seen=seen)
        assert seen[tp] == before + inside.by_tp[tp] + after
        assert cons.position([TopicPartition(topic, 0)])[0].offset == 8
    finally:
        cons.close()


# ----------------------------------------------------------------------------- 3. consume-transform-produce
INPUTS = 10_000


class Processor:
    """One run of txn_processor.py."""

    def __init__(self, tmp, n, bootstrap, inp, out, group, tid, *extra):
        self.events = tmp / f"proc{n}.events"
        self.log = tmp / f"proc{n}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "txn_processor.py"), "--bootstrap", bootstrap,
                 "--input", inp, "--output", out, "--group", group, "--transactional-id", tid,
                 "--events", str(self.events), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)

    def lines(self):
        try:
            return self.events.read_text().splitlines()
        except FileNotFoundError:
            return []

    def committed(self):
        counts = [int(line.split()[1]) for line in self.lines() if line.startswith("C ")]
        return counts[-1] if counts else 0

    def wait_for(self, what, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred():
            code = self.proc.poll()
            assert code is None, f"processor exited with {code} while waiting for {what}\n{self.describe()}"
            assert time.monotonic() < deadline, f"processor: no {what} within {timeout}s\n{self.describe()}"
            time.sleep(0.1)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def describe(self):
        try:
            log = self.log.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            log = ""
        return f"events: {self.lines()[-15:]}\nlog tail:\n{log}"


def test_consume_transform_produce_exactly_once_with_two_processor_kills(tbroker, tmp_path):
    b = tbroker.bootstrap
    inp, out = unique_topic("ctp-in"), unique_topic("ctp-out")
    create_topic(b, inp, partitions=3)
    create_topic(b, out, partitions=3)
    group, tid = unique("ctp-group"), unique("ctp-tx")

    p = Producer({"bootstrap.servers": b, "acks": "all", "linger.ms": 10})
    for i in range(INPUTS):
        while True:
            try:
                p.produce(inp, key=str(i).encode(), value=str(i).encode(), partition=i % 3)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    in_tps = [(inp, q) for q in range(3)]
    out_tps = [(out, q) for q in range(3)]
    in_ends = end_offsets(b, in_tps, IsolationLevel.READ_UNCOMMITTED)
    assert sum(in_ends.values()) == INPUTS

    runs = []
    try:
        # Run 1: killed wherever it is once a quarter of the input is committed.
        runs.append(Processor(tmp_path, 1, b, inp, out, group, tid))
        runs[-1].wait_for("2,500 committed", lambda: runs[-1].committed() >= INPUTS // 4, 90)
        runs[-1].kill()

        # Run 2: killed with a transaction open whose records are in the output log.
        hw_before = sum(end_offsets(b, out_tps, IsolationLevel.READ_UNCOMMITTED).values())
        runs.append(Processor(tmp_path, 2, b, inp, out, group, tid, "--pause-after", "2000"))
        runs[-1].wait_for("a pause in an open transaction",
                          lambda: any(line.startswith("P ") for line in runs[-1].lines()), 90)
        assert "P 0" in runs[-1].lines(), f"the paused batch was not flushed: {runs[-1].lines()}"
        assert sum(end_offsets(b, out_tps, IsolationLevel.READ_UNCOMMITTED).values()) > hw_before
        runs[-1].kill()

        # Run 3: to the end.
        runs.append(Processor(tmp_path, 3, b, inp, out, group, tid))
        from group_broker import committed_confluent

        deadline = time.monotonic() + 120
        while True:
            got = committed_confluent(b, group, inp, partitions=3)
            if got == {q: in_ends[(inp, q)] for q in range(3)}:
                break
            code = runs[-1].proc.poll()
            assert code is None, f"processor exited with {code}\n{runs[-1].describe()}"
            assert time.monotonic() < deadline, f"group offsets {got}, input ends {in_ends}\n{runs[-1].describe()}"
            time.sleep(0.3)
        for run in runs:
            assert not [line for line in run.lines() if line.startswith("E ")], run.describe()
    finally:
        for run in runs:
            run.kill()

    hw = wait_stable(b, out_tps)
    rc = read_all(b, out_tps, "read_committed", ends=hw, timeout=60)
    ids = collections.Counter()
    for q in range(3):
        values = [v for _, v in rc[(out, q)]]
        assert all(v.startswith(b"out:") for v in values)
        seq = [int(v[4:]) for v in values]
        ids.update(seq)
        # Each output partition holds its input partition's messages, in input order, once.
        assert seq == list(range(q, INPUTS, 3)), (
            f"output partition {q}: {len(seq)} records; first differences at "
            f"{next((i for i, (x, y) in enumerate(zip(seq, range(q, INPUTS, 3))) if x != y), len(seq))}")
    assert len(ids) == INPUTS and set(ids.values()) == {1}
    # The aborted attempts are in the log (so the kills did leave transactions to abort).
    ru = read_all(b, out_tps, "read_uncommitted", ends=hw, timeout=60)
    assert sum(len(v) for v in ru.values()) > INPUTS


# ----------------------------------------------------------------------------- 4. timeout abort
@pytest.mark.parametrize("restart", [False, True], ids=["running", "broker-restarted"])
def test_dead_producers_transaction_is_aborted_after_its_timeout(sluice_factory, tmp_path, restart):
    """With `restart`, the broker is SIGKILLed and restarted while the dead producer's
    transaction is open: the recovered coordinator still times it out."""
    broker = sluice_factory(*TXN_BROKER_ARGS,
                            "--set", "transaction.abort.timed.out.transaction.cleanup.interval.ms=500")
    b = broker.bootstrap
    topic = unique_topic("txn-timeout")
    create_topic(b, topic, partitions=1)
    tp = (topic, 0)
    before = produce_plain(b, [(topic, 0, b"before")])[tp]
    tid = unique("tx-dead")
    events = tmp_path / "hang.events"
    with open(tmp_path / "hang.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "txn_hang.py"), "--bootstrap", b, "--topic", topic,
             "--partition", "0", "--transactional-id", tid, "--timeout-ms", "5000", "--count", "5",
             "--events", str(events)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (events.exists() and events.read_text().strip()):
            assert proc.poll() is None, (tmp_path / "hang.log").read_text()
            assert time.monotonic() < deadline, "the hanging producer never wrote its transaction"
            time.sleep(0.05)
        opened = time.monotonic()
        _, remaining, first, last = events.read_text().split()
        assert (remaining, first, last) == ("0", "1", "5")
        after = produce_plain(b, [(topic, 0, b"after")])[tp]
        assert after[0][0] == 6
        if time.monotonic() - opened < 3.0:  # well inside the 5 s timeout
            assert end_offsets(b, [tp], IsolationLevel.READ_COMMITTED) == {tp: 1}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    if restart:
        broker.kill()
        broker.start()

    # The broker aborts it: the LSO passes it (abort marker at 7) within the bound.
    assert wait_stable(b, [tp], timeout=30) == {tp: 8}
    rc = read_all(b, [tp], "read_committed", ends={tp: 8})
    assert rc[tp] == before + after
    with tw.Conn(b) as c:
        d = c.describe_transactions([tid])[tid]
        assert d["error_code"] == 0 and d["state"] == "CompleteAbort", d

    # The transactional id is usable again, and its next transaction commits.
    p = txn_producer(b, tid)
    p.begin_transaction()
    p.produce(topic, value=b"next", partition=0)
    p.commit_transaction(30)
    assert wait_stable(b, [tp]) == {tp: 10}
    rc = read_all(b, [tp], "read_committed", ends={tp: 10})
    assert [v for _, v in rc[tp]] == [b"before", b"after", b"next"]


# ----------------------------------------------------------------------------- 5. fencing
def test_same_transactional_id_fences_the_older_producer(tbroker):
    b = tbroker.bootstrap
    topic = unique_topic("txn-fence")
    create_topic(b, topic, partitions=2)
    tps = [(topic, 0), (topic, 1)]
    tid = unique("tx-fence")

    a = txn_producer(b, tid)
    a.begin_transaction()
    a_sent = Delivered()
    for i in range(3):
        a.produce(topic, value=f"A-{i}".encode(), partition=0, on_delivery=a_sent)
    assert a.flush(30) == 0 and len(a_sent.by_tp[(topic, 0)]) == 3

    bp = txn_producer(b, tid)  # bumps the epoch: A is a zombie now, its transaction aborted

    a.produce(topic, value=b"A-late", partition=0)
    a.produce(topic, value=b"A-late", partition=1)
    with pytest.raises(KafkaException) as info:
        a.commit_transaction(30)
    err = info.value.args[0]
    assert err.code() in FENCED_CODES, f"expected a fenced error, got {err!r}"
    assert err.fatal(), f"a fenced producer's error is fatal: {err!r}"

    bp.begin_transaction()
    b_sent = Delivered()
    for i in range(3):
        bp.produce(topic, value=f"B-{i}".encode(), partition=i % 2, on_delivery=b_sent)
    bp.commit_transaction(30)

    hw = wait_stable(b, tps)
    rc = read_all(b, tps, "read_committed", ends=hw)
    assert [v for _, v in rc[(topic, 0)]] == [b"B-0", b"B-2"]
    assert [v for _, v in rc[(topic, 1)]] == [b"B-1"]
    ru = read_all(b, tps, "read_uncommitted", ends=hw)
    assert [v for _, v in ru[(topic, 0)]][:3] == [b"A-0", b"A-1", b"A-2"], "A's records were written"
    assert b"A-late" not in [v for recs in ru.values() for _, v in recs], "a fenced producer's write landed"


# ----------------------------------------------------------------------------- 6. broker restart
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_broker_restart_with_an_open_transaction_is_never_torn(tbroker, how):
    b = tbroker.bootstrap
    topic = unique_topic(f"txn-restart-{how}")
    create_topic(b, topic, partitions=3)
    tps = [(topic, q) for q in range(3)]
    tid = unique("tx-restart")
    producer = txn_producer(b, tid, **{"reconnect.backoff.max.ms": 500})
    producer.begin_transaction()
    sent = Delivered()
    for i in range(200):
        producer.produce(topic, value=f"r-{i}".encode(), partition=i % 2, on_delivery=sent)
    assert producer.flush(30) == 0
    assert sum(len(v) for v in sent.by_tp.values()) == 200

    if how == "sigterm":
        tbroker.stop()
    else:
        tbroker.kill()
    tbroker.start()

    try:
        # More of the same transaction after the restart, partition 2 added only now.
        for i in range(200, 300):
            producer.produce(topic, value=f"r-{i}".encode(), partition=i % 3, on_delivery=sent)
        producer.commit_transaction(60)
        outcome = "committed"
    except KafkaException as exc:
        err = exc.args[0]
        outcome = f"failed: {err!r}"
        if err.txn_requires_abort():
            producer.abort_transaction(60)
        else:
            # Fatal (or the producer gave up): a new producer with the same id aborts it.
            producer = txn_producer(b, tid)
    print(f"commit after broker {how}: {outcome}")

    hw = wait_stable(b, tps, timeout=30)
    rc = read_all(b, tps, "read_committed", ends=hw)
    visible = sum(len(v) for v in rc.values())
    if outcome == "committed":
        assert not sent.errors, sent.errors
        assert sum(len(v) for v in sent.by_tp.values()) == 300
        for tp in tps:
            assert [v for _, v in rc[tp]] == sent.values(*tp), f"{tp}: a committed transaction is not all there"
    else:
        assert visible == 0, f"a failed transaction left {visible} records visible"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_broker_restart_right_after_commit_completes_the_commit(tbroker, how):
    """EndTxn answered, markers perhaps not yet written: the restarted coordinator finishes
    the commit, and every record of the transaction becomes visible."""
    b = tbroker.bootstrap
    topic = unique_topic(f"txn-commit-restart-{how}")
    create_topic(b, topic, partitions=3)
    tps = [(topic, q) for q in range(3)]
    tid = unique("tx-commit-restart")
    producer = txn_producer(b, tid)
    producer.begin_transaction()
    sent = Delivered()
    for i in range(300):
        producer.produce(topic, value=f"k-{i}".encode(), partition=i % 3, on_delivery=sent)
    producer.commit_transaction(30)
    if how == "sigterm":
        tbroker.stop()
    else:
        tbroker.kill()
    tbroker.start()
    hw = wait_stable(b, tps, timeout=30)
    rc = read_all(b, tps, "read_committed", ends=hw)
    for tp in tps:
        assert [v for _, v in rc[tp]] == sent.values(*tp), f"{tp}: the committed transaction is not all there"
        assert hw[tp] == len(sent.by_tp[tp]) + 1, f"{tp}: high watermark {hw[tp]} (records + one marker expected)"
    with tw.Conn(b) as c:  # the coordinator recovered the transactional id's state
        tw.coordinator_ready(c, tid)
        assert wait_state(c, tid, "CompleteCommit")["topics"] == {}
        assert c.list_transactions(state_filters=["CompleteCommit"])[2].get(tid, (None, None))[1] == "CompleteCommit"


# ----------------------------------------------------------------------------- 7. transactional offsets
def test_transactional_offset_commits_are_visible_only_after_commit(tbroker):
    from group_broker import committed_confluent

    b = tbroker.bootstrap
    inp, out = unique_topic("txo-in"), unique_topic("txo-out")
    create_topic(b, inp, partitions=3)
    create_topic(b, out, partitions=1)
    produce_plain(b, [(inp, q, f"m-{q}-{i}".encode()) for i in range(10) for q in range(3)])
    group = unique("txo-group")

    cons = Consumer({"bootstrap.servers": b, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    producer = txn_producer(b, unique("tx-offsets"))
    try:
        cons.subscribe([inp])
        got, deadline = 0, time.monotonic() + 30
        while got < 30:
            assert time.monotonic() < deadline, f"consumed {got} of 30"
            for m in cons.consume(30, timeout=0.5):
                assert m.error() is None, m.error()
                got += 1
        cons.commit(offsets=[TopicPartition(inp, q, 2) for q in range(3)], asynchronous=False)
        baseline = {0: 2, 1: 2, 2: 2}
        assert committed_confluent(b, group, inp, partitions=3) == baseline

        # Sent and aborted: no change, neither while open nor after.
        producer.begin_transaction()
        producer.produce(out, value=b"aborted", partition=0)
        producer.send_offsets_to_transaction([TopicPartition(inp, q, 5 + q) for q in range(3)],
                                             cons.consumer_group_metadata(), 30)
        assert committed_confluent(b, group, inp, partitions=3) == baseline, "visible while the transaction is open"
        producer.abort_transaction(30)
        time.sleep(1.0)
        assert committed_confluent(b, group, inp, partitions=3) == baseline, "an aborted offset commit became visible"

        # Sent and committed: visible, exactly the sent offsets.
        producer.begin_transaction()
        producer.produce(out, value=b"committed", partition=0)
        sent = {q: 7 + q for q in range(3)}
        producer.send_offsets_to_transaction([TopicPartition(inp, q, o) for q, o in sent.items()],
                                             cons.consumer_group_metadata(), 30)
        assert committed_confluent(b, group, inp, partitions=3) == baseline, "visible while the transaction is open"
        producer.commit_transaction(30)
        deadline = time.monotonic() + 10
        while committed_confluent(b, group, inp, partitions=3) != sent:
            assert time.monotonic() < deadline, (
                f"committed offsets {committed_confluent(b, group, inp, partitions=3)}, sent {sent}")
            time.sleep(0.2)
        assert {tp.partition: tp.offset for tp in cons.committed([TopicPartition(inp, q) for q in range(3)],
                                                                 timeout=15)} == sent
    finally:
        cons.close()
    hw = wait_stable(b, [(out, 0)])
    assert [v for _, v in read_all(b, [(out, 0)], "read_committed", ends=hw)[(out, 0)]] == [b"committed"]


# ----------------------------------------------------------------------------- 8. KIP-890 defence
def test_transactional_produce_to_a_partition_not_in_the_transaction_is_refused(tbroker):
    b = tbroker.bootstrap
    topic = unique_topic("kip890")
    create_topic(b, topic, partitions=2)
    tid = unique("tx-raw")
    with tw.Conn(b) as c:
        tw.coordinator_ready(c, tid)
        err, pid, epoch = tw.retry_coordinator(lambda: c.init_producer_id(tid, 60000))
        assert err == 0 and pid >= 0 and epoch >= 0, (err, pid, epoch)
        added = tw.retry_coordinator(
            lambda: (c.add_partitions_to_txn(tid, pid, epoch, {topic: [0]}).get((topic, 0)),))
        assert added == (0,), f"AddPartitionsToTxn: {added}"

        assert c.produce(tid, topic, 0, tw.txn_batch(pid, epoch, 0, [b"in-txn"])) == (0, 0)
        err, _ = c.produce(tid, topic, 1, tw.txn_batch(pid, epoch, 0, [b"not-added"]))
        assert err == tw.INVALID_TXN_STATE, f"produce to a partition not in the transaction: error {err}"

        assert tw.retry_coordinator(lambda: c.end_txn(tid, pid, epoch, commit=True)) == 0
        hw = wait_stable(b, [(topic, 0), (topic, 1)])
        assert hw == {(topic, 0): 2, (topic, 1): 0}, f"nothing may be written to partition 1: {hw}"

        # After the commit the partition is no longer in a transaction: a late write of the
        # same producer (Jepsen's "write lands in the next transaction") is refused too.
        err, _ = c.produce(tid, topic, 0, tw.txn_batch(pid, epoch, 1, [b"after-commit"]))
        assert err == tw.INVALID_TXN_STATE, f"transactional produce after the commit: error {err}"
    assert end_offsets(b, [(topic, 0), (topic, 1)], IsolationLevel.READ_UNCOMMITTED) == hw
    rc = read_all(b, [(topic, 0)], "read_committed", ends={(topic, 0): 2})
    assert rc[(topic, 0)] == [(0, b"in-txn")]


def test_transaction_version_2_is_not_advertised(tbroker):
    with tw.Conn(tbroker.bootstrap) as c:
        finalized = c.finalized_features.get("transaction.version")
        supported = c.supported_features.get("transaction.version")
    assert finalized is None or finalized[1] < 2, f"finalized transaction.version {finalized}"
    assert supported is None or supported[1] < 2, f"supported transaction.version {supported}"


# ----------------------------------------------------------------------------- 9. operator APIs
def wait_state(conn, tid, state, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        d = conn.describe_transactions([tid])[tid]
        if d["state"] == state:
            return d
        assert time.monotonic() < deadline, f"{tid} is {d}, not {state}, after {timeout}s"
        time.sleep(0.1)


def test_list_and_describe_transactions_and_describe_producers(tbroker):
    b = tbroker.bootstrap
    topic = unique_topic("txn-ops")
    create_topic(b, topic, partitions=3)
    tid = unique("tx-ops")
    idem = produce_plain(b, [(topic, 2, f"idem-{i}".encode()) for i in range(4)], idempotent=True)
    assert len(idem[(topic, 2)]) == 4

    producer = txn_producer(b, tid, **{"transaction.timeout.ms": 20000})
    began = time.time() * 1000
    producer.begin_transaction()
    sent = Delivered()
    for i in range(3):
        producer.produce(topic, value=f"t-{i}".encode(), partition=0, on_delivery=sent)
    for i in range(2):
        producer.produce(topic, value=f"u-{i}".encode(), partition=1, on_delivery=sent)
    assert producer.flush(30) == 0
    first = {q: min(o for o, _ in sent.by_tp[(topic, q)]) for q in (0, 1)}

    with tw.Conn(b) as c:
        d = c.describe_transactions([tid])[tid]
        assert d["error_code"] == 0, d
        assert d["state"] == "Ongoing", d
        assert d["timeout_ms"] == 20000, d
        assert d["topics"] == {topic: [0, 1]}, d
        assert began - 5000 <= d["start_time_ms"] <= time.time() * 1000 + 5000, d
        pid, epoch = d["producer_id"], d["producer_epoch"]
        assert pid >= 0 and epoch >= 0, d

        err, unknown, states = c.list_transactions()
        assert err == 0 and unknown == [], (err, unknown)
        assert states.get(tid) == (pid, "Ongoing"), states
        assert tid in c.list_transactions(state_filters=["Ongoing"])[2]
        assert tid not in c.list_transactions(state_filters=["CompleteCommit"])[2]
        assert c.list_transactions(producer_id_filters=[pid])[2] == {tid: (pid, "Ongoing")}
        assert c.list_transactions(state_filters=["NoSuchState"])[1] == ["NoSuchState"]

        producers = c.describe_producers(topic, [0, 1, 2])
        for q, count in ((0, 3), (1, 2)):
            err, ps = producers[q]
            assert err == 0 and len(ps) == 1, producers[q]
            assert ps[0]["producer_id"] == pid and ps[0]["producer_epoch"] == epoch, ps
            assert ps[0]["last_sequence"] == count - 1, ps
            assert ps[0]["current_txn_start_offset"] == first[q], (ps, first)
        err, ps = producers[2]
        assert err == 0 and len(ps) == 1, producers[2]
        assert ps[0]["producer_id"] != pid and ps[0]["last_sequence"] == 3, ps
        assert ps[0]["current_txn_start_offset"] == -1, ps

        producer.commit_transaction(30)
        d = wait_state(c, tid, "CompleteCommit")
        assert d["producer_id"] == pid and d["topics"] == {}, d
        assert c.list_transactions(state_filters=["CompleteCommit"])[2].get(tid) == (pid, "CompleteCommit")
        assert tid not in c.list_transactions(state_filters=["Ongoing"])[2]
        producers = c.describe_producers(topic, [0, 1])
        for q, count in ((0, 3), (1, 2)):
            err, ps = producers[q]
            assert err == 0 and len(ps) == 1, producers[q]
            assert ps[0]["last_sequence"] == count - 1 and ps[0]["current_txn_start_offset"] == -1, ps

        producer.begin_transaction()
        producer.produce(topic, value=b"gone", partition=2)
        assert producer.flush(30) == 0
        assert wait_state(c, tid, "Ongoing")["topics"] == {topic: [2]}
        producer.abort_transaction(30)
        wait_state(c, tid, "CompleteAbort")

        missing = unique("tx-missing")
        assert c.describe_transactions([missing])[missing]["error_code"] == tw.TRANSACTIONAL_ID_NOT_FOUND
