"""Stream processors end to end: real brokers, real ``kctl stream`` processes killed with SIGKILL,
restarted and rebalanced; then every output is checked against the input.

Processors write to files (never pipes) and are always killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from kctl.client.consumer import Consumer
from kctl.client.producer import Producer
from kctl.cluster.groups import GroupAdmin
from kctl.errors import UnknownGroupError
from kctl.storage.records import Record
from tests.conftest import KCTL, run_kctl

pytestmark = pytest.mark.e2e


class Stream:
    """One ``kctl stream ...`` process with its output in files."""

    def __init__(self, data_dir: str, workdir: Path, name: str, args: list[str]) -> None:
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([*KCTL, "--data-dir", data_dir, "-o", "json", "stream", *args],
                                         stdout=out, stderr=err)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def summary(self) -> dict:
        return json.loads(self.out.read_text())

    def stderr(self) -> str:
        return self.err.read_text()


def read_all(data_dir: str, topic: str) -> list[tuple[int, Record]]:
    """Every committed record of ``topic``, as (partition, record), in offset order per partition."""
    out: list[tuple[int, Record]] = []
    with Consumer(data_dir) as c:
        tps = c.partitions_of(topic)
        ends = {tp: c.watermarks(tp)[1] for tp in tps}
        c.assign({tp: 0 for tp in tps})
        while any(c.position(tp) < ends[tp] for tp in tps):
            for b in c.poll(0.5):
                out.extend((b.partition, r) for r in b.records or ())
    out.sort(key=lambda pr: (pr[0], pr[1].offset))
    return out


def count_records(data_dir: str, topic: str) -> int:
    with Consumer(data_dir) as c:
        return sum(c.watermarks(tp)[1] for tp in c.partitions_of(topic))


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def members(data_dir: str, group: str) -> list[dict]:
    try:
        return GroupAdmin(data_dir).describe_group(group)["members"]
    except UnknownGroupError:
        return []


def source(rec: Record) -> tuple[int, int]:
    headers = dict(rec.headers)
    _topic, p, off = headers["kctl.input"].decode().rsplit(":", 2)
    return int(p), int(off)


class Feeder(threading.Thread):
    """Produces ``records`` (key, value) pairs in small acknowledged chunks while processors run."""

    def __init__(self, data_dir: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        super().__init__(daemon=True)
        self.data_dir, self.topic, self.records = data_dir, topic, records
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Producer(self.data_dir, acks="all") as p:
                for i, (k, v) in enumerate(self.records):
                    p.send(self.topic, v, key=k)
                    if i % 100 == 99:
                        p.flush()
                        time.sleep(0.03)
            if p.failed:
                raise AssertionError(f"{p.failed} records not delivered: {p.first_error}")
        except BaseException as exc:
            self.error = exc


def test_map_killed_mid_stream_loses_nothing_and_duplicates_nothing(make_cluster, data_dir, tmp_path):
    cluster = make_cluster()
    cluster.create_topic("in", partitions=3, config={"min.insync.replicas": 2})
    cluster.create_topic("out", partitions=2)
    records = [(None if i % 5 == 0 else f"k{i % 37}".encode(), f"v{i}".encode()) for i in range(4000)]
    feeder = Feeder(data_dir, "in", records)
    args = ["map", "--from", "in", "--to", "out", "--expr", "value.upper()", "--commit-interval", "3"]
    started: list[Stream] = []
    try:
        first = Stream(data_dir, tmp_path, "first", args)
        started.append(first)
        wait_until(lambda: members(data_dir, "stream-in-out"), 30, "the processor to join")
        feeder.start()
        wait_until(lambda: count_records(data_dir, "out") >= 800, 30, "the first outputs")
        first.kill()  # SIGKILL mid-stream: outputs since the last commit (up to 3 s) are not committed
        second = Stream(data_dir, tmp_path, "second", args)
        started.append(second)
        feeder.join(60)
        assert feeder.error is None, feeder.error
        wait_until(lambda: count_records(data_dir, "out") >= len(records), 30, "every output")
        doc = GroupAdmin(data_dir).describe_group("stream-in-out")
        assert [m["client_id"] for m in doc["members"]] == ["kctl-stream-map"]
        assert second.stop() == 0, second.stderr()
        summary = second.summary()
    finally:
        for s in started:
            if s.proc.poll() is None:
                s.kill()
    assert summary["duplicates"] > 0, "the restart found nothing already produced: the test did not exercise it"

    inputs = {(p, r.offset): r for p, r in read_all(data_dir, "in")}
    assert len(inputs) == len(records)
    outputs = read_all(data_dir, "out")
    sources = Counter(source(r) for _q, r in outputs)
    assert not [s for s, n in sources.items() if n > 1], "duplicated outputs"
    assert set(sources) == set(inputs), f"{len(set(inputs) - set(sources))} input records have no output"
    for q, r in outputs:
        original = inputs[source(r)]
        assert r.value == original.value.upper() and r.key == original.key
        assert dict(r.headers)["kctl.stream"] == b"stream-in-out"
        if r.key is None:
            assert q == source(r)[0] % 2  # unkeyed outputs stay with their input partition
    committed = GroupAdmin(data_dir).coordinator("stream-in-out").committed()
    assert committed == {("in", p): cluster.partition("in", p).high_watermark for p in range(3)}
    types = [e["type"] for e in cluster.events()
             if e.get("group") == "stream-in-out" and e["type"].startswith("stream")]
    assert types == ["stream_started", "stream_started", "stream_stopped"]  # SIGKILL leaves no stopped event


def test_count_survives_a_kill_and_a_rebalance(make_cluster, data_dir, tmp_path):
    cluster = make_cluster()
    cluster.create_topic("words", partitions=4)
    cluster.create_topic("counts", partitions=2)
    rnd = random.Random(8)
    records = [(f"w{rnd.randrange(30)}".encode(), b"x") for _ in range(3000)]
    half = len(records) // 2
    args = ["count", "--from", "words", "--to", "counts", "--commit-interval", "2"]
    started: list[Stream] = []

    def start(name: str, state: str) -> Stream:
        s = Stream(data_dir, tmp_path, name, [*args, "--state-dir", str(tmp_path / state)])
        started.append(s)
        return s

    def feed(part: list[tuple[bytes | None, bytes]]) -> Feeder:
        f = Feeder(data_dir, "words", part)
        f.start()
        return f

    try:
        a = start("a", "state-a")
        wait_until(lambda: "initialised" in a.stderr(), 30, "a to take the partitions")
        b = start("b", "state-b")  # its own state directory, as on another machine
        wait_until(lambda: "initialised" in b.stderr(), 30, "b to take half of them")
        feeder = feed(records[:half])
        wait_until(lambda: count_records(data_dir, "counts") >= 600, 30, "the first counts")
        a.kill()  # mid-stream; b takes a's partitions and must rebuild their state from the changelog
        feeder.join(60)
        assert feeder.error is None, feeder.error
        wait_until(lambda: count_records(data_dir, "counts") >= half, 30, "b to catch up alone")
        again = start("a-again", "state-a")  # rejoins: partitions move back to a stale local store
        wait_until(lambda: "initialised" in again.stderr(), 30, "a to take partitions back")
        feeder = feed(records[half:])
        feeder.join(60)
        assert feeder.error is None, feeder.error
        wait_until(lambda: count_records(data_dir, "counts") >= len(records), 30, "an output for every input")
        time.sleep(0.5)
        for s in started[1:]:
            assert s.stop() == 0, s.stderr()
    finally:
        for s in started:
            if s.proc.poll() is None:
                s.kill()
    replayed = [int(n) for n in re.findall(r"from the changelog \((\d+) changelog record", b.stderr())]
    assert any(n > 0 for n in replayed), f"b never rebuilt a partition from the changelog:\n{b.stderr()}"

    expected = Counter(k for k, _v in records)
    updates: dict[bytes, list[int]] = defaultdict(list)
    for _q, r in read_all(data_dir, "counts"):
        assert r.key is not None
        updates[r.key].append(int(r.value))
    final = {k: v[-1] for k, v in updates.items()}
    assert final == dict(expected)  # the same totals as one uninterrupted run
    for k, seq in updates.items():
        assert seq == list(range(1, expected[k] + 1)), f"updates of {k!r} skip or repeat a count"


T0 = 1_700_000_000_000  # a multiple of the 5 s window


def test_filter_aggregate_window_and_errors(make_cluster, data_dir, tmp_path):
    cluster = make_cluster(brokers=1)
    for t in ("orders", "big", "odd", "totals", "averages", "windows", "partial"):
        cluster.create_topic(t, partitions=2)
    names = ["alice", "bob", "carol"]
    rows = [(names[i % 3].encode(), i * 10, T0 + i * 1000) for i in range(12)]
    with Producer(data_dir) as p:
        for k, amount, ts in rows:
            p.send("orders", json.dumps({"amount": amount}).encode(), key=k, timestamp=ts,
                   headers=[("source", b"test")])
        p.send("orders", b"not json", key=b"dave", timestamp=T0 + 20_000)

    def stream(*args: str) -> subprocess.CompletedProcess[bytes]:
        return run_kctl(data_dir, "-o", "json", "stream", *args, "-e")

    def last_values(topic: str) -> dict[bytes, bytes]:
        return {r.key: r.value for _q, r in read_all(data_dir, topic)}

    r = stream("filter", "--from", "orders", "--to", "big", "--expr", "text.startswith('{') and "
               "json.loads(value)['amount'] >= 50")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["records_out"] == 7
    big = sorted(json.loads(rec.value)["amount"] for _q, rec in read_all(data_dir, "big"))
    assert big == [50, 60, 70, 80, 90, 100, 110]
    assert all(dict(rec.headers)["source"] == b"test" for _q, rec in read_all(data_dir, "big"))

    script = tmp_path / "odd.py"  # answers 1 (keep) or 0 (drop) per line, as the filter protocol wants
    script.write_text("import json, sys\n"
                      "for line in sys.stdin:\n"
                      "    print(int(line.startswith('{') and json.loads(line)['amount'] // 10 % 2 == 1))\n")
    r = stream("filter", "--from", "orders", "--to", "odd", "--exec", f"python3 {script}")
    assert r.returncode == 0, r.stderr
    assert sorted(json.loads(rec.value)["amount"] for _q, rec in read_all(data_dir, "odd")) == [10, 30, 50, 70, 90,
                                                                                                110]

    r = stream("aggregate", "--from", "orders", "--to", "totals", "--field", "amount")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dropped"] == 1  # "not json"
    assert last_values("totals") == {b"alice": b"180", b"bob": b"220", b"carol": b"260"}
    assert "is not a number" in r.stderr.decode()

    r = stream("aggregate", "--from", "orders", "--to", "averages", "--field", "amount", "--agg", "avg",
               "--name", "avg")
    assert r.returncode == 0, r.stderr
    assert last_values("averages") == {b"alice": b"45", b"bob": b"55", b"carol": b"65"}

    r = stream("count", "--from", "orders", "--to", "windows", "--window", "5")
    assert r.returncode == 0, r.stderr
    expected = Counter(f"{k.decode()}@{ts - ts % 5000}".encode() for k, _a, ts in rows)
    expected[f"dave@{T0 + 20_000}".encode()] = 1
    assert {k: int(v) for k, v in last_values("windows").items()} == dict(expected)
    assert len(expected) == 9

    # a failing expression stops at its record, after committing the records before it
    r = stream("map", "--from", "orders", "--to", "partial", "--expr", "json.loads(value)['amount']")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.strip().splitlines()[-1].startswith("kctl: error: --expr")
    failed = re.search(r"failed on record orders-(\d+)@(\d+): JSONDecodeError", err)
    assert failed, err
    p, off = int(failed.group(1)), int(failed.group(2))
    assert GroupAdmin(data_dir).coordinator("stream-orders-partial").committed()[("orders", p)] == off
    assert len([1 for _q, rec in read_all(data_dir, "partial") if source(rec)[0] == p]) == off

    for args, code, message in [
        (["map", "--from", "orders", "--to", "big", "--expr", "value.upper("], 2, "invalid --expr"),
        (["map", "--from", "orders", "--to", "big", "--expr", "valeu"], 2, "unknown name(s) valeu"),
        (["filter", "--from", "orders", "--to", "big"], 2, "exactly one of --expr and --exec"),
        (["map", "--from", "orders", "--to", "orders", "--expr", "value"], 2, "read its own output"),
        (["map", "--from", "nope", "--to", "big", "--expr", "value"], 1, "topic 'nope' does not exist"),
        (["map", "--from", "orders", "--to", "big", "--name", "x", "--exec", "exit 3"], 1, "status 3 at start"),
        (["aggregate", "--from", "orders", "--to", "big", "--agg", "median"], 2, "--agg must be one of"),
    ]:
        r = run_kctl(data_dir, "stream", *args, "-e")
        assert r.returncode == code, (args, r.stderr)
        last = r.stderr.decode().strip().splitlines()[-1]
        assert last.startswith("kctl: error:") and message in last, (args, r.stderr)
    assert not os.path.exists(os.path.join(data_dir, "groups", "stream-x"))  # refused before joining
