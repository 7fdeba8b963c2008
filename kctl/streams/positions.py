"""Where each output came from, and how a processor finds what it already produced.

Every record a processor writes (to its output topic and to its changelog) carries two headers:
``kctl.stream`` = its group and ``kctl.input`` = ``"<input topic>:<partition>:<offset>"``, the input
record it was made from (the group tells apart two processors that read one topic and write
another one together, which would otherwise take each other's outputs for their own). The
processor sends the outputs of one input partition in input order, and each output partition
receives them through one producer whose batches are appended in order, so for every pair (input
partition p, output partition q) what reached q is a *prefix* of what was sent to q. After a crash
(or when p moves to another instance) the new owner therefore needs, for each q, only the highest
input offset of p found in q: an input record whose output goes to q was already produced exactly
when its offset is at or below that mark.

Finding the marks is bounded work: the processor remembers, next to the group's committed
offsets, *where in the output topic* the outputs made after a given input offset start
(``positions.json``: a few recent entries of ``input_offset -> {output partition: offset}``). The
new owner picks the newest entry at or below the committed offset and scans the output partitions
forward from there to their high watermarks. Without a usable entry (first start, file lost, a
group reset far back) it scans each output partition from its log start.

Before scanning, it waits until each scanned partition's high watermark reaches the log end it
saw first: a batch the crashed owner appended but that was not yet replicated would otherwise be
missed, and would show up later as a duplicate.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable

from kctl.client.admin import Cluster
from kctl.client.consumer import Consumer, TopicPartition
from kctl.errors import KctlTimeoutError, UnknownTopicError
from kctl.storage.checkpoint import atomic_write
from kctl.storage.records import Record

INPUT_HEADER = "kctl.input"
STREAM_HEADER = "kctl.stream"
MAX_ENTRIES = 8
SETTLE_TIMEOUT = 10.0
READ_TIMEOUT = 30.0


def parse_input_header(record: Record, group: str | None = None) -> tuple[str, int, int] | None:
    """(topic, partition, offset) of the input record this record was made from, if it says (and,
    with ``group``, only if that processor group wrote it)."""
    found = None
    stream = None
    for name, value in record.headers:
        if name == INPUT_HEADER and value:
            found = value
        elif name == STREAM_HEADER:
            stream = value
    if found is None or (group is not None and stream != group.encode()):
        return None
    try:
        topic, p, off = found.decode().rsplit(":", 2)
        return topic, int(p), int(off)
    except (ValueError, UnicodeDecodeError):
        return None


class PositionsFile:
    """``<data>/streams/<group>/<topic>-<p>/positions.json``: entries ``(input offset, output offsets)``.

    Only the member owning input partition p writes p's file (it holds p's ownership lock). An
    entry (d, L) promises: every output for an input offset >= d is at or after L[q] in output
    partition q. Entries are written before their input offset is handed to the group for commit,
    so the committed offset always has an entry at or below it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: list[tuple[int, dict[int, int]]] = []
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            for e in doc.get("entries", []):
                self.entries.append((int(e["input_offset"]),
                                     {int(q): int(o) for q, o in e["output_offsets"].items()}))
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError):
            self.entries = []  # damaged: behave as if there were none (a full scan)
        self.entries.sort(key=lambda e: e[0])

    def entry_for(self, committed: int) -> dict[int, int] | None:
        """The output offsets of the newest entry at or below ``committed`` (None: scan everything)."""
        best = None
        for d, offsets in self.entries:
            if d <= committed:
                best = offsets
        return best

    def add(self, input_offset: int, output_offsets: dict[int, int]) -> None:
        if self.entries and self.entries[-1][0] == input_offset and self.entries[-1][1] == output_offsets:
            return
        self.entries = [e for e in self.entries if e[0] != input_offset]
        self.entries.append((input_offset, dict(output_offsets)))
        self.entries.sort(key=lambda e: e[0])
        del self.entries[:-MAX_ENTRIES]
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        doc = {"version": 1, "entries": [
            {"input_offset": d, "output_offsets": {str(q): o for q, o in sorted(offsets.items())}}
            for d, offsets in self.entries]}
        atomic_write(self.path, json.dumps(doc, separators=(",", ":")).encode())


def settled_high_watermarks(cluster: Cluster, topic: str, partitions: Iterable[int],
                            timeout: float = SETTLE_TIMEOUT,
                            warn: Callable[[str], None] | None = None) -> dict[int, tuple[int, int]]:
    """{partition: (log start, high watermark)} once each high watermark has reached the log end
    seen first (per leader epoch: a new leader may have truncated an unreplicated tail)."""
    wanted = sorted(set(partitions))
    targets: dict[int, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout
    while True:
        docs = cluster.describe([topic])
        if not docs:
            raise UnknownTopicError(f"topic '{topic}' does not exist (see: kctl topic list)")
        infos = {i.partition: i for i in docs[0]["partitions"]}
        out: dict[int, tuple[int, int]] = {}
        waiting = []
        for p in wanted:
            info = infos.get(p)
            if info is None or info.leader is None or info.high_watermark is None or info.log_end is None:
                waiting.append(p)
                continue
            epoch, end = targets.get(p, (-1, -1))
            if epoch != info.leader_epoch:
                targets[p] = (info.leader_epoch, info.log_end)
                end = info.log_end
            out[p] = (info.log_start or 0, info.high_watermark)
            if info.high_watermark < end:
                waiting.append(p)
        if not waiting:
            return out
        if time.monotonic() >= deadline:
            if warn is not None:
                warn(f"partitions {', '.join(f'{topic}-{p}' for p in waiting)} did not settle within {timeout:g} s; "
                     "records appended but not yet replicated may be produced again")
            for p in waiting:
                out.setdefault(p, (0, 0))
            return out
        time.sleep(0.02)


def read_partitions(consumer: Consumer, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int],
                    on_record: Callable[[TopicPartition, Record], None]) -> int:
    """Feed every record of each partition from its start up to (at least) its end; returns how many.

    ``consumer`` is a private, plainly assigned consumer; it is left with nothing assigned.
    """
    todo = {tp: start for tp, start in starts.items() if start < ends.get(tp, 0)}
    if not todo:
        return 0
    consumer.assign(dict(todo))
    count = 0
    last_progress = time.monotonic()
    try:
        while todo:
            batches = consumer.poll(0.5)
            if batches:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > READ_TIMEOUT:
                left = ", ".join(f"{tp[0]}-{tp[1]} at {consumer.position(tp)} of {ends[tp]}" for tp in todo)
                raise KctlTimeoutError(f"could not read {left} within {READ_TIMEOUT:g} s (partition offline?)")
            for batch in batches:
                tp = (batch.topic, batch.partition)
                for rec in batch.records or ():
                    on_record(tp, rec)
                    count += 1
            for tp in list(todo):
                if consumer.position(tp) >= ends[tp]:
                    del todo[tp]
                    consumer.unassign([tp])
    finally:
        consumer.unassign(list(todo))
    return count


def scan_outputs(cluster: Cluster, consumer: Consumer, output: str, group: str, input_topic: str,
                 starts: dict[int, dict[int, int] | None], n_out: int,
                 warn: Callable[[str], None] | None = None) -> tuple[dict[int, dict[int, int]], dict[int, int]]:
    """For each input partition p in ``starts``: {output partition: highest input offset of p that
    ``group`` produced to it}.

    ``starts[p]`` is where to start in each output partition (None: from the log start). Returns
    the marks and the high watermark each output partition was scanned to.
    """
    bounds = settled_high_watermarks(cluster, output, range(n_out), warn=warn)
    from_offsets: dict[TopicPartition, int] = {}
    for q in range(n_out):
        log_start, _hw = bounds[q]
        first = None
        for offsets in starts.values():
            o = log_start if offsets is None else offsets.get(q, log_start)
            first = o if first is None else min(first, o)
        from_offsets[(output, q)] = max(first if first is not None else log_start, log_start)
    marks: dict[int, dict[int, int]] = {p: {} for p in starts}

    def on_record(tp: TopicPartition, rec: Record) -> None:
        src = parse_input_header(rec, group)
        if src is None or src[0] != input_topic:
            return
        got = marks.get(src[1])
        if got is not None and src[2] > got.get(tp[1], -1):
            got[tp[1]] = src[2]

    read_partitions(consumer, from_offsets, {(output, q): bounds[q][1] for q in range(n_out)}, on_record)
    return marks, {q: bounds[q][1] for q in range(n_out)}
