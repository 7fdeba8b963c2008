"""Workload processes of a chaos run, each writing its own history (:mod:`tests.chaos.history`).

    python -m tests.chaos.workload producer --data-dir D --history H --name p0.1 --topics t0,t1
    python -m tests.chaos.workload consumer --data-dir D --history H --name c0.1 --topics t0,t1
    python -m tests.chaos.workload group    --data-dir D --history H --name g0.1 --topics t0,t1 --group G

* **producer**: ``acks=all``, idempotent. Each round it writes a batch of unique values
  (``<name>-<n>``) to each of one to three random partitions, then flushes. A batch is logged
  ``invoke`` before it is handed to the producer and ``ok`` (with its base offset), ``fail``
  (certainly not written) or ``info`` (unknown) when its delivery report arrives.
* **consumer**: assign mode. Its first session reads every partition from the beginning; a
  restarted one starts at a random offset below the high watermark. Every poll is logged.
* **group**: a :class:`~kctl.client.group.GroupConsumer` member. Every poll is logged with the
  member id and generation before the records are marked delivered, and every commit is logged
  (``invoke`` then ``ok``), so a commit never covers a read the history lacks.

SIGTERM ends a worker cleanly (a producer flushes, a member commits and leaves). SIGUSR1 arms a
crash *inside* the next flush (producer) or commit (group member): a thread SIGKILLs the
process a random 0-3 ms after it starts, which is how the nemesis kills "mid-batch" and
"mid-commit". An unexpected exception is logged as ``crash`` (the checker reports it).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

from tests.chaos.history import HistoryWriter

_stop = threading.Event()
_armed = threading.Event()


def _on_term(*_args: object) -> None:
    _stop.set()


def _on_usr1(*_args: object) -> None:
    _armed.set()


def _die_soon(h: HistoryWriter, rng: random.Random, what: str) -> None:
    """SIGKILL this process from a thread a few milliseconds from now (a crash mid-operation)."""
    delay = rng.uniform(0.0, 0.003)

    def kill() -> None:
        time.sleep(delay)
        h.log("info", "self-kill", pid=os.getpid(), during=what)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()


def _tps(data_dir: str, topics: list[str]) -> list[tuple[str, int]]:
    from kctl.cluster.layout import ClusterLayout
    from kctl.cluster.metadata import MetadataStore

    md = MetadataStore(ClusterLayout.at(data_dir)).load()
    return [(t, p) for t in topics for p in range(len(md.topic(t).partitions))]


def _text(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", "replace")


def _reads(batches: list[Any]) -> list[list[Any]]:
    """Fetched batches as ``[topic, partition, first offset, [values]]`` runs of consecutive offsets."""
    out: list[list[Any]] = []
    for b in batches:
        if b.values is not None:
            out.append([b.topic, b.partition, b.first_offset, [_text(v) for v in b.values]])
            continue
        for r in b.records or ():
            last = out[-1] if out else None
            if last is not None and last[0] == b.topic and last[1] == b.partition \
                    and last[2] + len(last[3]) == r.offset:
                last[3].append(_text(r.value))
            else:
                out.append([b.topic, b.partition, r.offset, [_text(r.value)]])
    return out


# -- producer -------------------------------------------------------------------------------------
def run_producer(args: argparse.Namespace, h: HistoryWriter) -> None:
    from kctl.client.producer import Producer
    from kctl.errors import KctlError

    class TrackingProducer(Producer):
        """Tells a certain failure (the batch was never appended anywhere) from an unknown one."""

        definite = False
        last_definite = False

        def _write(self, batch: Any, deadline: float | None = None) -> None:  # type: ignore[override]
            try:
                super()._write(batch, deadline)
            except KctlError:
                self.definite = batch.placed is None
                raise

        def _report_failure(self, topic: str, partition: int, count: int, error: KctlError) -> None:
            self.last_definite, self.definite = self.definite, False
            super()._report_failure(topic, partition, count, error)

    rng = random.Random(args.seed)
    tps = _tps(args.data_dir, args.topics)
    outstanding: dict[tuple[str, int], deque[list[str]]] = {}
    seq = 0
    producer: TrackingProducer | None = None

    def delivered(report: Any) -> None:
        tp = (report.topic, report.partition)
        q = outstanding.get(tp)
        if not q:
            h.log("info", "unmatched-report", topic=tp[0], partition=tp[1], count=report.count)
            return
        values = q.popleft()
        base = {"topic": tp[0], "partition": tp[1], "values": values}
        if len(values) != report.count:  # never expected: one batch per partition per flush
            h.log("info", "send", error=f"report for {report.count} records, sent {len(values)}", **base)
            return
        if report.error is None:
            h.log("ok", "send", offset=report.base_offset, **base)
        else:
            assert producer is not None
            kind = "fail" if producer.last_definite else "info"
            h.log(kind, "send", error=f"{type(report.error).__name__}: {report.error}", **base)

    def unknown_all(why: str) -> None:
        for tp, q in outstanding.items():
            while q:
                h.log("info", "send", topic=tp[0], partition=tp[1], values=q.popleft(), error=why)

    while not _stop.is_set():
        try:
            if producer is None:
                producer = TrackingProducer(args.data_dir, acks="all", timeout=args.timeout,
                                            on_delivery=delivered)
            for tp in rng.sample(tps, rng.randint(1, min(3, len(tps)))):
                values = [f"{args.name}-{seq + i}" for i in range(rng.randint(1, args.max_batch))]
                seq += len(values)
                h.log("invoke", "send", topic=tp[0], partition=tp[1], values=values)
                outstanding.setdefault(tp, deque()).append(values)
                for v in values:
                    producer.send(tp[0], v.encode(), partition=tp[1])
            if _armed.is_set():
                _die_soon(h, rng, "flush")
            producer.flush()
        except KctlError as exc:
            unknown_all(f"{type(exc).__name__}: {exc}")
            if producer is not None:
                try:
                    producer.close()
                except KctlError:
                    pass
            producer = None
            time.sleep(0.1)
            continue
        unknown_all("no delivery report")
        if args.pause:
            time.sleep(rng.uniform(0, 2 * args.pause))
    if producer is not None:
        producer.close()
    unknown_all("closed without a report")


# -- assign-mode consumer ----------------------------------------------------------------------------
def run_consumer(args: argparse.Namespace, h: HistoryWriter) -> None:
    from kctl.client.consumer import Consumer
    from kctl.errors import KctlError

    rng = random.Random(args.seed)

    def on_reset(tp: tuple[str, int], old: int, new: int, why: str) -> None:
        h.log("info", "reset", topic=tp[0], partition=tp[1], why=why, **{"from": old, "to": new})

    c = Consumer(args.data_dir, on_reset=on_reset)
    try:
        positions: dict[tuple[str, int], int] = {}
        for tp in _tps(args.data_dir, args.topics):
            if args.from_beginning:
                positions[tp] = 0
            else:
                start, hw = c.watermarks(tp)
                positions[tp] = rng.randint(start, max(start, hw))
        c.assign(positions)  # type: ignore[arg-type]
        h.log("ok", "assign", positions=[[t, p, off] for (t, p), off in sorted(c.positions().items())])
        while not _stop.is_set():
            try:
                batches = c.poll(0.5, values_only=True)
            except KctlError as exc:
                h.log("fail", "poll", mode="assign", error=f"{type(exc).__name__}: {exc}")
                time.sleep(0.1)
                continue
            if batches:
                h.log("ok", "poll", mode="assign", reads=_reads(batches))
    finally:
        c.close()


# -- group member -------------------------------------------------------------------------------------
def run_group(args: argparse.Namespace, h: HistoryWriter) -> None:
    from kctl.client.group import GroupConsumer
    from kctl.errors import KctlError

    rng = random.Random(args.seed)

    def on_reset(tp: tuple[str, int], old: int, new: int, why: str) -> None:
        h.log("info", "reset", topic=tp[0], partition=tp[1], why=why, **{"from": old, "to": new})

    gc = GroupConsumer(args.data_dir, args.group, args.topics, commit_interval=args.commit_interval,
                       on_reset=on_reset, client_id=args.name)
    coord = getattr(gc, "_coord", None)
    if coord is not None and hasattr(coord, "commit"):
        original = coord.commit

        def logged_commit(offsets: Any) -> None:
            items = sorted([t, p, int(o)] for (t, p), o in offsets.items())
            h.log("invoke", "commit", offsets=items, member=gc.member_id, generation=gc.generation)
            if _armed.is_set():
                _die_soon(h, rng, "commit")
            original(offsets)
            h.log("ok", "commit", offsets=items, member=gc.member_id, generation=gc.generation)

        coord.commit = logged_commit
    else:
        h.log("info", "commit-logging-unavailable")
    try:
        while not _stop.is_set():
            try:
                batches = gc.poll(0.5, values_only=True)
            except KctlError as exc:
                h.log("fail", "poll", mode="group", error=f"{type(exc).__name__}: {exc}")
                time.sleep(0.1)
                continue
            if batches:
                h.log("ok", "poll", mode="group", reads=_reads(batches), member=gc.member_id,
                      generation=gc.generation)
                gc.delivered({(b.topic, b.partition): b.next_offset for b in batches})
    finally:
        gc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests.chaos.workload")
    parser.add_argument("role", choices=("producer", "consumer", "group"))
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--history", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--topics", required=True, type=lambda s: s.split(","))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group", default="chaos")
    parser.add_argument("--max-batch", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.01, help="mean seconds between producer rounds")
    parser.add_argument("--timeout", type=float, default=4.0, help="producer delivery timeout")
    parser.add_argument("--commit-interval", type=float, default=0.05)
    parser.add_argument("--from-beginning", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGUSR1, _on_usr1)
    h = HistoryWriter(args.history, args.name)
    h.log("info", "start", pid=os.getpid(), role=args.role)
    run = {"producer": run_producer, "consumer": run_consumer, "group": run_group}[args.role]
    from kctl.errors import KctlError

    try:
        run(args, h)
    except KctlError as exc:  # an expected failure (say, no live broker yet): the runner restarts us
        h.log("info", "exit", pid=os.getpid(), error=f"{type(exc).__name__}: {exc}")
        return 3
    except Exception as exc:  # an unexpected exception from kctl is itself a finding
        h.log("info", "crash", pid=os.getpid(), error="".join(traceback.format_exception(exc)))
        return 1
    h.log("info", "exit", pid=os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
