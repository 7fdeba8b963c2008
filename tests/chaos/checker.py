"""A pure checker of a chaos history (see :mod:`tests.chaos.history` for its shape).

It looks for Jepsen's queue/log anomalies:

* ``lost``: an acknowledged write that no read saw, though offsets after it in its partition
  were read (by the final drain, or by anyone when it was never read at all);
* ``unseen``: an acknowledged write the final drain did not reach;
* ``duplicate``: one value read at two offsets (an idempotence failure);
* ``inconsistent-offset``: one offset read with two values, or an acknowledged offset that
  holds another value;
* ``aborted-read``: a value whose write certainly failed was read;
* ``phantom-read``: a value nobody ever tried to write was read;
* ``nonmonotonic-poll`` / ``skipping-poll``: a consumer went back, or jumped over offsets,
  within one partition (assign mode: within one session; group mode: within one generation);
* ``offset-reset``: a consumer's position was reset (there is no retention in a chaos run);
* ``nonmonotonic-send``: one producer's later write to a partition got a lower offset;
* ``double-assignment``: one partition assigned to two members in one generation;
* ``concurrent-ownership``: a member took a partition's ownership while another live member
  held it; ``read-without-ownership``: a member read a partition it did not own;
* ``commit-backwards``: a partition's committed offset went down;
* ``committed-unread``: an offset below the group's committed offset that no member read;
* ``worker-crash``: a workload process died of an unexpected exception.

Unknown outcomes (``info``, or an invoke never completed) are never counted as lost; they may
or may not be read. The checker takes the history as plain dicts and imports nothing from kctl.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TP = tuple[str, int]
Op = Mapping[str, Any]

ANOMALIES = (
    "lost",
    "unseen",
    "duplicate",
    "inconsistent-offset",
    "aborted-read",
    "phantom-read",
    "nonmonotonic-poll",
    "skipping-poll",
    "offset-reset",
    "nonmonotonic-send",
    "double-assignment",
    "concurrent-ownership",
    "read-without-ownership",
    "commit-backwards",
    "committed-unread",
    "worker-crash",
)

EXAMPLES_KEPT = 20


@dataclass
class CheckResult:
    """Anomalies found (a few examples of each, and exact counts) and figures about the run."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANOMALIES, 0))
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {a: [] for a in ANOMALIES})
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(self.counts.values())

    def add(self, kind: str, **detail: Any) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES_KEPT:
            self.examples[kind].append(detail)

    def found(self) -> dict[str, int]:
        """Only the anomalies that occurred."""
        return {k: v for k, v in self.counts.items() if v}

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "anomalies": self.found(), "stats": self.stats,
                "examples": {k: v for k, v in self.examples.items() if v}}

    def summary(self) -> str:
        s = self.stats
        head = (f"{s.get('faults', 0)} faults, {s.get('send_ok', 0)} acked, {s.get('send_fail', 0)} failed, "
                f"{s.get('send_info', 0)} unknown, {s.get('read_values', 0)} read, "
                f"{s.get('drained', 0)} drained, {s.get('commits', 0)} commits")
        body = ", ".join(f"{k} {self.counts[k]}" for k in ("lost", "unseen", "duplicate", "inconsistent-offset",
                                                              "aborted-read"))
        rest = ", ".join(f"{k} {v}" for k, v in self.found().items()
                         if k not in ("lost", "unseen", "duplicate", "inconsistent-offset", "aborted-read"))
        return f"{head}; {body}" + (f"; {rest}" if rest else "") + ("; VALID" if self.valid else "; INVALID")


def parse_tp(text: str) -> TP:
    """``orders-3`` -> ("orders", 3) (topic names may contain '-')."""
    topic, _, p = text.rpartition("-")
    return topic, int(p)


@dataclass
class _Write:
    tp: TP
    process: str
    invoked: float
    status: str = "invoked"  # invoked | ok | fail | info
    offset: int = -1


def check(history: Iterable[Op], trace: Iterable[Op] = ()) -> CheckResult:
    """Check a history (ops in any order; sorted by ``t`` here) and an optional group trace."""
    ops = sorted(history, key=lambda op: float(op.get("t", 0.0)))
    res = CheckResult()
    writes = _writes(ops, res)
    reads = _reads(ops, res)
    _check_writes(writes, reads, res)
    _check_sends(ops, writes, res)
    _check_polls(ops, res)
    _check_commits(ops, reads, res)
    _check_ownership(ops, sorted(trace, key=lambda op: float(op.get("t", 0.0))), res)
    for op in ops:
        if op.get("f") == "crash":
            res.add("worker-crash", process=op.get("process"), error=str(op.get("error", ""))[-500:])
    res.stats["faults"] = sum(1 for op in ops if op.get("fault"))
    res.stats["ops"] = len(ops)
    return res


# -- writes ---------------------------------------------------------------------------------------
def _writes(ops: list[Op], res: CheckResult) -> dict[str, _Write]:
    writes: dict[str, _Write] = {}
    for op in ops:
        if op.get("f") != "send":
            continue
        tp = (str(op["topic"]), int(op["partition"]))
        values = [str(v) for v in op.get("values", ())]
        kind = op.get("type")
        if kind == "invoke":
            for v in values:
                writes.setdefault(v, _Write(tp, str(op.get("process")), float(op.get("t", 0.0))))
            continue
        for i, v in enumerate(values):
            w = writes.setdefault(v, _Write(tp, str(op.get("process")), float(op.get("t", 0.0))))
            if kind == "ok":
                w.status = "ok"
                w.offset = int(op["offset"]) + i
            elif kind == "fail" and w.status == "invoked":
                w.status = "fail"
            elif kind == "info" and w.status == "invoked":
                w.status = "info"
    counts = defaultdict(int)
    for w in writes.values():
        counts[w.status] += 1
    res.stats["send_invoked"] = len(writes)
    res.stats["send_ok"] = counts["ok"]
    res.stats["send_fail"] = counts["fail"]
    res.stats["send_info"] = counts["info"] + counts["invoked"]
    return writes


@dataclass
class _Reads:
    at: dict[tuple[TP, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    where: dict[str, set[tuple[TP, int]]] = field(default_factory=lambda: defaultdict(set))
    max_offset: dict[TP, int] = field(default_factory=dict)
    final: dict[str, tuple[TP, int]] = field(default_factory=dict)
    final_max: dict[TP, int] = field(default_factory=dict)
    has_drain: bool = False
    group_offsets: dict[TP, set[int]] = field(default_factory=lambda: defaultdict(set))


def _reads(ops: list[Op], res: CheckResult) -> _Reads:
    r = _Reads()
    total = 0
    for op in ops:
        if op.get("f") != "poll" or op.get("type") != "ok":
            continue
        mode = op.get("mode")
        drain = mode == "drain"
        r.has_drain = r.has_drain or drain
        for topic, p, first, values in op.get("reads", ()):
            tp = (str(topic), int(p))
            for i, v in enumerate(values):
                off = int(first) + i
                v = str(v)
                r.at[(tp, off)].add(v)
                r.where[v].add((tp, off))
                total += 1
                if drain:
                    r.final[v] = (tp, off)
                if mode == "group":
                    r.group_offsets[tp].add(off)
            if values:
                last = int(first) + len(values) - 1
                r.max_offset[tp] = max(r.max_offset.get(tp, -1), last)
                if drain:
                    r.final_max[tp] = max(r.final_max.get(tp, -1), last)
    res.stats["read_values"] = total
    res.stats["drained"] = len(r.final)
    return r


def _check_writes(writes: dict[str, _Write], r: _Reads, res: CheckResult) -> None:
    for (tp, off), values in sorted(r.at.items()):
        if len(values) > 1:
            res.add("inconsistent-offset", topic=tp[0], partition=tp[1], offset=off, values=sorted(values))
    for v, places in sorted(r.where.items()):
        if len(places) > 1:
            res.add("duplicate", value=v, at=sorted([tp[0], tp[1], off] for tp, off in places))
        w = writes.get(v)
        if w is None:
            res.add("phantom-read", value=v, at=sorted([tp[0], tp[1], off] for tp, off in places))
        elif w.status == "fail":
            res.add("aborted-read", value=v, at=sorted([tp[0], tp[1], off] for tp, off in places))
    for v, w in writes.items():
        if w.status != "ok":
            continue
        seen_there = r.at.get((w.tp, w.offset))
        if seen_there and v not in seen_there:
            res.add("inconsistent-offset", topic=w.tp[0], partition=w.tp[1], offset=w.offset,
                    acked=v, read=sorted(seen_there))
        if r.has_drain:
            if v in r.final:
                continue
            later = r.final_max.get(w.tp, -1) > w.offset or (
                v not in r.where and r.max_offset.get(w.tp, -1) > w.offset)
        else:
            if v in r.where:
                continue
            later = r.max_offset.get(w.tp, -1) > w.offset
        detail = {"value": v, "topic": w.tp[0], "partition": w.tp[1], "offset": w.offset,
                  "process": w.process, "read_earlier": v in r.where}
        res.add("lost" if later else "unseen", **detail)


def _check_sends(ops: list[Op], writes: dict[str, _Write], res: CheckResult) -> None:
    """One producer's writes to one partition get increasing offsets in the order it sent them."""
    per: dict[tuple[str, TP], list[tuple[float, int, str]]] = defaultdict(list)
    for op in ops:
        if op.get("f") == "send" and op.get("type") == "ok" and op.get("values"):
            v = str(op["values"][0])
            w = writes[v]
            per[(w.process, w.tp)].append((w.invoked, int(op["offset"]), v))
    for (process, tp), items in per.items():
        items.sort()
        last = -1
        for _t, off, v in items:
            if off <= last:
                res.add("nonmonotonic-send", process=process, topic=tp[0], partition=tp[1], value=v,
                        offset=off, after=last)
            last = max(last, off)


# -- polls ----------------------------------------------------------------------------------------
def _check_polls(ops: list[Op], res: CheckResult) -> None:
    expected: dict[tuple[str, TP], int] = {}
    generation: dict[tuple[str, TP], Any] = {}
    polls = 0
    for op in ops:
        f = op.get("f")
        process = str(op.get("process"))
        if f in ("assign", "start"):
            for key in [k for k in expected if k[0] == process]:
                del expected[key]
            for topic, p, off in op.get("positions", ()):
                expected[(process, (str(topic), int(p)))] = int(off)
            continue
        if f == "reset":
            res.add("offset-reset", process=process, topic=op.get("topic"), partition=op.get("partition"),
                    old=op.get("from"), new=op.get("to"), why=op.get("why"))
            key = (process, (str(op.get("topic")), int(op.get("partition", -1))))
            expected[key] = int(op.get("to", 0))
            continue
        if f != "poll" or op.get("type") != "ok":
            continue
        polls += 1
        group = op.get("mode") == "group"
        for topic, p, first, values in op.get("reads", ()):
            key = (process, (str(topic), int(p)))
            first = int(first)
            if group and generation.get(key) != op.get("generation"):
                expected.pop(key, None)  # a new generation may hand the partition over: restart point
                generation[key] = op.get("generation")
            want = expected.get(key)
            if want is not None and first < want:
                res.add("nonmonotonic-poll", process=process, topic=topic, partition=p, offset=first,
                        expected=want, mode=op.get("mode"))
            elif want is not None and first > want:
                res.add("skipping-poll", process=process, topic=topic, partition=p, offset=first,
                        expected=want, mode=op.get("mode"))
            expected[key] = max(want if want is not None else -1, first + len(values))
    res.stats["polls"] = polls


# -- groups ---------------------------------------------------------------------------------------
def _check_commits(ops: list[Op], r: _Reads, res: CheckResult) -> None:
    last: dict[TP, int] = {}
    commits = 0
    for op in ops:
        if op.get("f") != "commit" or op.get("type") != "ok":
            continue
        commits += 1
        for topic, p, off in op.get("offsets", ()):
            tp = (str(topic), int(p))
            off = int(off)
            if tp in last and off < last[tp]:
                res.add("commit-backwards", process=op.get("process"), topic=tp[0], partition=tp[1],
                        offset=off, previous=last[tp])
            last[tp] = max(last.get(tp, off), off)
    res.stats["commits"] = commits
    for tp, committed in sorted(last.items()):
        seen = r.group_offsets.get(tp, set())
        missing = [o for o in range(committed) if o not in seen]
        if missing:
            res.add("committed-unread", topic=tp[0], partition=tp[1], committed=committed,
                    missing=len(missing), first_missing=missing[:10])


def _check_ownership(ops: list[Op], trace: list[Op], res: CheckResult) -> None:
    """Ownership intervals from the group trace never overlap; members read only what they own."""
    ended: dict[int, float] = {}
    pid_of: dict[str, int] = {}
    for op in ops:
        pid = op.get("pid")
        if pid is None:
            continue
        killed = op.get("fault") and op.get("target") == "consumer"
        if op.get("f") in ("exit", "crash", "reaped", "self-kill") or killed:
            ended[int(pid)] = min(ended.get(int(pid), math.inf), float(op["t"]))
        if op.get("f") == "start":
            pid_of[str(op.get("process"))] = int(pid)
    for op in trace:
        if op.get("op") == "rebalance":
            holders: dict[str, str] = {}
            for member, tps in (op.get("assignment") or {}).items():
                for tp in tps:
                    if tp in holders:
                        res.add("double-assignment", generation=op.get("generation"), partition=tp,
                                members=[holders[tp], member])
                    holders[tp] = member
    res.stats["ownership_checked_reads"] = 0
    if not trace:
        return
    events: list[tuple[float, int, Op]] = [(float(op["t"]), 0, op) for op in trace
                                           if op.get("op") in ("acquire", "release")]
    events += [(float(op["t"]), 1, op) for op in ops
               if op.get("f") == "poll" and op.get("mode") == "group" and op.get("type") == "ok"]
    events.sort(key=lambda e: (e[0], e[1]))
    owner: dict[TP, tuple[int, str, float]] = {}
    checked = 0
    for t, kind, op in events:
        if kind == 0:
            tp = parse_tp(str(op["tp"]))
            pid = int(op["pid"])
            if op["op"] == "acquire":
                held = owner.get(tp)
                if held is not None and held[0] != pid and ended.get(held[0], math.inf) > t:
                    res.add("concurrent-ownership", topic=tp[0], partition=tp[1], holder=held[1],
                            holder_pid=held[0], taker=op.get("member"), taker_pid=pid,
                            generation=op.get("generation"), t=t)
                owner[tp] = (pid, str(op.get("member")), t)
            elif owner.get(tp, (None,))[0] == pid:
                del owner[tp]
        else:
            pid = pid_of.get(str(op.get("process")))
            if pid is None:
                continue
            for topic, p, first, values in op.get("reads", ()):
                tp = (str(topic), int(p))
                checked += 1
                if values and owner.get(tp, (None,))[0] != pid:
                    res.add("read-without-ownership", process=op.get("process"), topic=tp[0], partition=tp[1],
                            offset=first, owner=owner.get(tp, (None, None))[1])
    res.stats["ownership_checked_reads"] = checked
