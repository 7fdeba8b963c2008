"""Stream processors: group members that read an input topic, transform, and produce an output topic.

Each processor is one member of a consumer group (``stream-<name>`` by default), so several
instances split the input partitions, and ``kctl group describe`` shows them. A round is:

1. ``poll`` the group member (heartbeat, rebalance, read records of owned partitions);
2. initialise partitions that are new to this member (or all of them after a generation change):
   find what earlier owners already produced (:mod:`kctl.streams.positions`) and, for stateful
   processors, restore the state (:mod:`kctl.streams.store`);
3. transform the records and send the results (acks=all) with a ``kctl.input`` header;
4. flush: wait until every output is acknowledged; stateful processors then write their changelog
   records, wait for those too, and save the local store;
5. every ``checkpoint_interval``: remember where in the output the next outputs start, then hand
   the input position to the group, which commits it.

Nothing is committed before the outputs it covers are acknowledged (no loss), and input records
whose outputs already exist are recognised and skipped (no duplicates); see the guarantees in the
package docstring of :mod:`kctl.streams`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kctl.client.consumer import Consumer, FetchedBatch, TopicPartition
from kctl.client.partitioner import partition_for_key
from kctl.client.producer import DeliveryReport, Producer
from kctl.cluster.config import validate_topic_name
from kctl.cluster.groups import validate_group_name
from kctl.errors import DeliveryError, InvalidArgumentError, KctlError, StreamError
from kctl.storage.records import Record
from kctl.streams.expr import RecordExpression, map_result
from kctl.streams.positions import (
    INPUT_HEADER,
    STREAM_HEADER,
    PositionsFile,
    parse_input_header,
    read_partitions,
    scan_outputs,
    settled_high_watermarks,
)

AGGREGATES = ("sum", "min", "max", "avg", "count")
DEFAULT_CHECKPOINT_INTERVAL = 0.5


@dataclass
class StreamStats:
    """What a processor did (shown when it stops and in its ``stream_stopped`` event)."""

    records_in: int = 0
    records_out: int = 0
    duplicates: int = 0
    dropped: int = 0
    restored: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Partition:
    """This member's view of one input partition it owns."""

    tp: TopicPartition
    positions: PositionsFile
    header_prefix: bytes
    marks: dict[int, int] = field(default_factory=dict)  # output partition -> highest input offset in it
    scan_from: dict[int, int] = field(default_factory=dict)
    scan_hw: dict[int, int] = field(default_factory=dict)
    next_offset: int | None = None
    checkpointed: int | None = None
    # stateful processors only
    store: Any = None
    state: dict[bytes, Any] = field(default_factory=dict)
    dirty: dict[bytes, Any] = field(default_factory=dict)
    applied: int = -1  # highest input offset whose update the state holds
    changelog: list[tuple[bytes, Any, int]] = field(default_factory=list)
    changelog_offset: int = 0


class StreamProcessor:
    """The loop shared by every processor; subclasses transform records. Not thread-safe.

    ``run(stop)`` returns when ``stop()`` is true (checked between records), at the end of the
    input with ``exit_at_end``, or raises on an error; in every case it first flushes what was
    processed, commits it and leaves the group.
    """

    kind = "stream"
    stateful = False

    def __init__(self, data_dir: str | os.PathLike[str], input_topic: str, output_topic: str, *,
                 name: str | None = None, group: str | None = None, state_dir: str | None = None,
                 exit_at_end: bool = False, checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
                 poll_timeout: float = 0.5, on_event: Callable[[str], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        validate_topic_name(input_topic)
        validate_topic_name(output_topic)
        if input_topic == output_topic:
            raise InvalidArgumentError(f"--from and --to are both '{input_topic}': a processor would read its own "
                                       "output forever")
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        self.input = input_topic
        self.output = output_topic
        self.name = validate_group_name(name or f"{input_topic}-{output_topic}", "stream name")
        self.group = validate_group_name(group or f"stream-{self.name}")
        self.changelog = f"{self.group}-changelog"
        self._stream_header = (STREAM_HEADER, self.group.encode())
        if self.stateful:
            validate_topic_name(self.changelog)
        self.state_dir = os.path.abspath(state_dir) if state_dir else os.path.join(self.data_dir, "streams")
        self.exit_at_end = exit_at_end
        self.checkpoint_interval = checkpoint_interval
        self.poll_timeout = poll_timeout
        self._on_event = on_event
        self._on_warning = on_warning
        self.stats = StreamStats()
        self._parts: dict[TopicPartition, _Partition] = {}
        self._generation = -2
        self._ends: dict[TopicPartition, int] = {}  # (topic, partition) -> end offset of our last write
        self._failure: KctlError | None = None
        self._last_checkpoint = 0.0
        self._n_out = 0
        self._producer: Producer | None = None
        self._gc: Any = None
        self._reader: Consumer | None = None
        self._cluster: Any = None
        self._started = False

    # -- messages -------------------------------------------------------------------------------
    def _event(self, message: str) -> None:
        if self._on_event is not None:
            self._on_event(message)

    def _warn(self, message: str) -> None:
        if self._on_warning is not None:
            self._on_warning(message)

    def describe(self) -> dict[str, Any]:
        """The processor's identity, as recorded in its events."""
        return {"name": self.name, "group": self.group, "kind": self.kind, "input": self.input,
                "output": self.output}

    # -- start and stop -------------------------------------------------------------------------
    def _open(self) -> None:
        from kctl.client.admin import Cluster
        from kctl.client.group import GroupConsumer
        from kctl.cluster.layout import ClusterLayout
        from kctl.cluster.metadata import require_live_cluster

        md = require_live_cluster(ClusterLayout.at(self.data_dir))
        md.topic(self.input)
        md.topic(self.output)
        self._cluster = Cluster(self.data_dir)
        if self.stateful:
            self._ensure_changelog(len(md.topic(self.input).partitions))
        self._start_transform()
        self._producer = Producer(self.data_dir, acks="all", on_delivery=self._delivered)
        self._reader = Consumer(self.data_dir, reset="earliest")
        self._gc = GroupConsumer(self.data_dir, self.group, [self.input], client_id=f"kctl-stream-{self.kind}",
                                 on_event=self._event)
        self._producer.store.record_events([{"type": "stream_started", **self.describe(),
                                             "member_id": self._gc.member_id, "pid": os.getpid()}])
        self._started = True

    def _ensure_changelog(self, partitions: int) -> None:
        """Create (or grow) the changelog topic. Instances of one group starting together take a lock
        first: creating one topic from two processes at once is not safe."""
        from kctl.cluster.locks import CriticalSection

        directory = os.path.join(self.data_dir, "streams", self.group)
        os.makedirs(directory, exist_ok=True)
        with CriticalSection(os.path.join(directory, "changelog.lock"), "changelog creation").hold(30.0):
            t = self._cluster.metadata().topics.get(self.changelog)
            if t is None:
                if self._cluster.create_topic(self.changelog, partitions=partitions,
                                              config={"cleanup.policy": "compact"}, if_not_exists=True):
                    self._event(f"created changelog topic {self.changelog} ({partitions} partition(s), "
                                "cleanup.policy=compact)")
            elif len(t.partitions) < partitions:
                self._cluster.alter_topic(self.changelog, partitions=partitions)
            elif "compact" not in str(t.config.get("cleanup.policy", "delete")):
                self._warn(f"changelog topic {self.changelog} is not compacted (cleanup.policy="
                           f"{t.config.get('cleanup.policy', 'delete')}): it keeps every update")

    def _delivered(self, report: DeliveryReport) -> None:
        if report.error is not None:
            if self._failure is None:
                self._failure = report.error
            return
        tp = (report.topic, report.partition)
        end = report.base_offset + report.count
        if end > self._ends.get(tp, -1):
            self._ends[tp] = end

    def run(self, stop: Callable[[], bool] | None = None) -> StreamStats:
        """Process until stopped, the end of the input (``exit_at_end``) or an error."""
        should_stop = stop or (lambda: False)
        reason = "stopped"
        try:
            self._open()
            self._last_checkpoint = time.monotonic()
            while not should_stop():
                batches = self._gc.poll(self.poll_timeout)
                self._follow_assignment()
                try:
                    self._process(batches, should_stop)
                finally:
                    self._end_round()
                if self.exit_at_end and not batches and self._gc.at_end():
                    reason = "end of input"
                    break
        except BaseException as exc:
            reason = f"error: {exc}" if isinstance(exc, KctlError) else f"error: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._close(reason)
        return self.stats

    def _close(self, reason: str) -> None:
        healthy = self._failure is None
        try:
            if self._gc is not None:
                try:
                    if healthy:
                        self._checkpoint(force=True)
                finally:
                    self._gc.close()
        finally:
            # after a failed delivery nothing more is written: a later batch must not land after a
            # lost one (the duplicate check relies on what reached each partition being a prefix)
            if self._producer is not None and healthy:
                self._producer.close()
            for part in self._parts.values():
                if part.store is not None:
                    part.store.close()
            self._parts.clear()
            if self._reader is not None:
                self._reader.close()
            self._close_transform()
            if self._producer is not None and self._started:
                try:
                    self._producer.store.record_events([{
                        "type": "stream_stopped", **self.describe(), "pid": os.getpid(), "reason": reason,
                        **self.stats.to_json()}])
                except KctlError:
                    pass

    def _start_transform(self) -> None:
        """Subclasses start what they need (an --exec command) before joining the group."""

    def _close_transform(self) -> None:
        """Subclasses release what they started."""

    # -- assignment -----------------------------------------------------------------------------
    def _follow_assignment(self) -> None:
        owned = set(self._gc.owned())
        for tp in [tp for tp in self._parts if tp not in owned]:
            part = self._parts.pop(tp)
            if part.store is not None:
                part.store.close()
        if self._gc.generation != self._generation:
            # a partition may have moved away and back between two polls: start over for all of them
            fresh = owned
            self._generation = self._gc.generation
        else:
            fresh = owned - set(self._parts)
        if fresh:
            self._init_partitions(sorted(fresh))

    def _partition_dir(self, root: str, tp: TopicPartition) -> str:
        return os.path.join(root, self.group, f"{tp[0]}-{tp[1]}")

    def _init_partitions(self, tps: Sequence[TopicPartition]) -> None:
        assert self._reader is not None and self._producer is not None
        started = time.monotonic()
        committed = self._gc.committed()
        n_out = self._n_out = self._producer.partitions_for(self.output)
        entries: dict[int, dict[int, int] | None] = {}
        parts = []
        for tp in tps:
            old = self._parts.pop(tp, None)
            if old is not None and old.store is not None:
                old.store.close()
            pos = PositionsFile(os.path.join(self._partition_dir(os.path.join(self.data_dir, "streams"), tp),
                                             "positions.json"))
            part = _Partition(tp, pos, f"{tp[0]}:{tp[1]}:".encode())
            c = committed.get(tp)
            if c is None:
                c = self._reader.watermarks(tp)[0]
            entries[tp[1]] = pos.entry_for(c)
            parts.append(part)
        marks, hws = scan_outputs(self._cluster, self._reader, self.output, self.group, self.input, entries, n_out,
                                  warn=self._warn)
        for part in parts:
            p = part.tp[1]
            entry = entries[p]
            part.marks = marks.get(p, {})
            part.scan_from = {q: (entry or {}).get(q, 0) for q in range(n_out)}
            part.scan_hw = dict(hws)
            self._parts[part.tp] = part
        if self.stateful:
            for part in parts:
                self._restore(part)
        found = sum(len(m) for m in marks.values())
        self._event(f"initialised {', '.join(f'{t}-{p}' for t, p in tps)} in {time.monotonic() - started:.2f} s"
                    + (f" (earlier outputs found in {found} output partition(s))" if found else ""))

    # -- rounds ---------------------------------------------------------------------------------
    def _process(self, batches: list[FetchedBatch], stop: Callable[[], bool]) -> None:
        for batch in batches:
            part = self._parts.get((batch.topic, batch.partition))
            if part is None or not batch.records:
                continue
            self._handle(part, batch.records, stop)
            if stop():
                return

    def _handle(self, part: _Partition, records: list[Record], stop: Callable[[], bool]) -> None:
        raise NotImplementedError

    def _out_partition(self, key: bytes | None, p: int) -> int:
        """Keyed outputs go where Kafka's partitioner puts them; unkeyed ones to input partition mod
        the output's count (never a random partition: the duplicate check must know where to look)."""
        if key is None:
            return p % self._n_out
        return partition_for_key(key, self._n_out)

    def _marks(self, part: _Partition, offset: int) -> list[tuple[str, bytes | None]]:
        """The headers that say where an output came from."""
        return [self._stream_header, (INPUT_HEADER, part.header_prefix + str(offset).encode())]

    def _headers(self, part: _Partition, record: Record) -> list[tuple[str, bytes | None]]:
        """The input record's headers (minus an earlier processor's marks) and ours."""
        marks = self._marks(part, record.offset)
        if not record.headers:
            return marks
        return [h for h in record.headers if h[0] not in (INPUT_HEADER, STREAM_HEADER)] + marks

    def _send(self, part: _Partition, record: Record, key: bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes | None]] | None = None) -> None:
        """Produce one output unless an earlier owner already did (then count a duplicate)."""
        q = self._out_partition(key, part.tp[1])
        if record.offset <= part.marks.get(q, -1):
            self.stats.duplicates += 1
            return
        assert self._producer is not None
        self._producer.send(self.output, value, key, headers if headers is not None else self._headers(part, record),
                            q, record.timestamp)
        self.stats.records_out += 1
        if self._failure is not None:
            raise self._delivery_error()

    def _delivery_error(self) -> DeliveryError:
        return DeliveryError(f"output could not be delivered: {self._failure}; nothing after the last "
                             "acknowledged round was committed")

    def _flush(self) -> None:
        assert self._producer is not None
        if self._failure is None:
            self._producer.flush()
        if self._failure is not None:
            raise self._delivery_error()

    def _end_round(self) -> None:
        """Wait for every output (and changelog record), save state, and checkpoint when due."""
        self._flush()
        if self.stateful:
            self._write_changelog()
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval:
            self._checkpoint()

    def _checkpoint(self, force: bool = False) -> None:
        """Remember where the next outputs start, then let the group commit the input positions."""
        if self._failure is not None:
            return
        delivered = {}
        for tp, part in self._parts.items():
            d = part.next_offset
            if d is None or d == part.checkpointed:
                continue
            offsets = {}
            for q in range(self._n_out):
                start = part.scan_from.get(q, 0)
                if part.marks.get(q, -1) >= d:
                    offsets[q] = start  # outputs of an earlier owner at or past d are still ahead of us
                else:
                    offsets[q] = max(start, part.scan_hw.get(q, 0), self._ends.get((self.output, q), 0))
            part.positions.add(d, offsets)
            part.checkpointed = d
            delivered[tp] = d
        if delivered:
            self._gc.delivered(delivered)
        if force:
            self._gc.commit()
        self._last_checkpoint = time.monotonic()

    # -- state (stateful processors) ----------------------------------------------------------
    def _restore(self, part: _Partition) -> None:
        """Open the local store and bring it up to the changelog's high watermark."""
        from kctl.streams.store import StateStore

        assert self._reader is not None
        p = part.tp[1]
        md = self._cluster.metadata()
        t = md.topics.get(self.changelog)
        if t is None or len(t.partitions) <= p:
            self._ensure_changelog(len(md.topic(self.input).partitions))
            t = self._cluster.metadata().topic(self.changelog)
        store = part.store = StateStore(self._partition_dir(self.state_dir, part.tp))
        meta = store.meta()
        log_start, hw = settled_high_watermarks(self._cluster, self.changelog, [p], warn=self._warn)[p]
        try:
            offset = int(meta.get("changelog_offset", "-1"))
        except ValueError:
            offset = -1
        full = meta.get("changelog_topic_id") != t.topic_id or not log_start <= offset <= hw
        if full:
            state: dict[bytes, Any] = {}
            applied = -1
            offset = log_start
        else:
            state = store.load()
            applied = int(meta.get("input_offset", "-1"))
        changes: dict[bytes, Any] = {}

        def on_record(_tp: TopicPartition, rec: Record) -> None:
            nonlocal applied
            if rec.key is None:
                return
            try:
                value = None if rec.value is None else json.loads(rec.value)
            except ValueError:
                raise StreamError(f"changelog {self.changelog}-{p}@{rec.offset} holds a value that is not JSON; "
                                  "was the topic written by something else?") from None
            if value is None:
                state.pop(rec.key, None)
            else:
                state[rec.key] = value
            changes[rec.key] = value
            src = parse_input_header(rec)
            if src is not None and src[0] == self.input and src[1] == p and src[2] > applied:
                applied = src[2]

        cl_tp = (self.changelog, p)
        replayed = read_partitions(self._reader, {cl_tp: offset}, {cl_tp: hw}, on_record)
        self.stats.restored += replayed
        new_meta = {"changelog_topic_id": t.topic_id, "changelog_offset": hw, "input_offset": applied}
        if full:
            store.replace(state, new_meta)
        else:
            store.save(changes, new_meta)
        part.state = state
        part.applied = applied
        part.changelog_offset = hw
        self._event(f"restored {len(state)} key(s) of {part.tp[0]}-{p} from "
                    + ("the changelog" if full else "the local store") + f" ({replayed} changelog record(s) replayed)")

    def _write_changelog(self) -> None:
        """After the outputs are acknowledged: the changelog records, then the local store."""
        assert self._producer is not None
        pending = [part for part in self._parts.values() if part.changelog]
        if not pending:
            return
        for part in pending:
            p = part.tp[1]
            for key, value, offset in part.changelog:
                self._producer.send(self.changelog, json.dumps(value, separators=(",", ":")).encode(), key,
                                    self._marks(part, offset), p)
            part.changelog.clear()
        self._flush()
        for part in pending:
            part.changelog_offset = max(part.changelog_offset, self._ends.get((self.changelog, part.tp[1]), 0))
            part.store.save(part.dirty, {"changelog_offset": part.changelog_offset, "input_offset": part.applied})
            part.dirty.clear()


# -- stateless ------------------------------------------------------------------------------------
class _Transforming(StreamProcessor):
    """map and filter: an --expr evaluated per record, or an --exec command fed per batch."""

    def __init__(self, data_dir: str | os.PathLike[str], input_topic: str, output_topic: str, *,
                 expr: str | None = None, exec_command: str | None = None, null: bool = False,
                 exec_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(data_dir, input_topic, output_topic, **kwargs)
        if (expr is None) == (exec_command is None):
            raise InvalidArgumentError(f"stream {self.kind} needs exactly one of --expr and --exec")
        if null and exec_command is None:
            raise InvalidArgumentError("--null is for --exec")
        self.expr = RecordExpression(expr) if expr is not None else None
        self.exec_command = exec_command
        self.null = null
        self.exec_timeout = exec_timeout
        self._exec: Any = None

    def _start_transform(self) -> None:
        if self.exec_command is not None:
            from kctl.streams.execcmd import ExecCommand

            self._exec = ExecCommand(self.exec_command, null=self.null, timeout=self.exec_timeout)

    def _close_transform(self) -> None:
        if self._exec is not None:
            self._exec.close()
            self._exec = None

    def _handle(self, part: _Partition, records: list[Record], stop: Callable[[], bool]) -> None:
        if self._exec is not None:
            self._handle_exec(part, records)
            return
        for rec in records:
            self._handle_expr(part, rec)
            part.next_offset = rec.offset + 1
            self.stats.records_in += 1
            if stop():
                return

    def _handle_expr(self, part: _Partition, rec: Record) -> None:
        raise NotImplementedError

    def _handle_exec(self, part: _Partition, records: list[Record]) -> None:
        """Send the values that need the command in one go, then produce in input order."""
        assert self._exec is not None
        p = part.tp[1]
        todo: list[Record] = []
        bad: StreamError | None = None
        for i, rec in enumerate(records):
            if rec.value is None or rec.offset <= part.marks.get(self._out_partition(rec.key, p), -1):
                continue
            try:
                self._exec.check_value(rec.value, f"{self.input}-{p}@{rec.offset}")
            except StreamError as exc:
                bad = exc
                records = records[:i]
                break
            todo.append(rec)
        answers = dict(zip((r.offset for r in todo), self._exec.run([r.value for r in todo if r.value is not None]),
                           strict=True))
        for rec in records:
            self._apply_answer(part, rec, answers.get(rec.offset))
            part.next_offset = rec.offset + 1
            self.stats.records_in += 1
        if bad is not None:
            raise bad

    def _apply_answer(self, part: _Partition, rec: Record, answer: bytes | None) -> None:
        raise NotImplementedError


class MapProcessor(_Transforming):
    """``kctl stream map``: one output per input record, key kept unless the expression changes it."""

    kind = "map"

    def _handle_expr(self, part: _Partition, rec: Record) -> None:
        assert self.expr is not None
        p = part.tp[1]
        result = self.expr.evaluate(self.input, p, rec)
        key, value = map_result(result, rec.key, f"{self.input}-{p}@{rec.offset}")
        self._send(part, rec, key, value)

    def _apply_answer(self, part: _Partition, rec: Record, answer: bytes | None) -> None:
        # a tombstone passes through; a duplicate (no answer asked) is counted by _send
        self._send(part, rec, rec.key, answer if rec.value is not None else None)


class FilterProcessor(_Transforming):
    """``kctl stream filter``: records the expression (or command) keeps, unchanged."""

    kind = "filter"

    def _handle_expr(self, part: _Partition, rec: Record) -> None:
        assert self.expr is not None
        if rec.offset <= part.marks.get(self._out_partition(rec.key, part.tp[1]), -1):
            self.stats.duplicates += 1  # kept (and produced) or dropped before: either way, done
            return
        if self.expr.evaluate(self.input, part.tp[1], rec):
            self._send(part, rec, rec.key, rec.value)
        else:
            self.stats.dropped += 1

    def _apply_answer(self, part: _Partition, rec: Record, answer: bytes | None) -> None:
        from kctl.streams.execcmd import parse_decision

        if rec.value is None:
            self._send(part, rec, rec.key, None)  # tombstones are kept
            return
        if answer is None:
            self.stats.duplicates += 1
            return
        if parse_decision(answer, f"{self.input}-{part.tp[1]}@{rec.offset}"):
            self._send(part, rec, rec.key, rec.value)
        else:
            self.stats.dropped += 1


# -- stateful -------------------------------------------------------------------------------------
def _number(x: float | int) -> bytes:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x)).encode()
    return repr(x).encode() if isinstance(x, float) else str(x).encode()


class _Keyed(StreamProcessor):
    """Stateful per key (and per tumbling window), restored from a compacted changelog."""

    stateful = True

    def __init__(self, data_dir: str | os.PathLike[str], input_topic: str, output_topic: str, *,
                 window: float | None = None, **kwargs: Any) -> None:
        super().__init__(data_dir, input_topic, output_topic, **kwargs)
        if window is not None and window <= 0:
            raise InvalidArgumentError("--window must be more than 0 seconds")
        self.window_ms = round(window * 1000) if window is not None else None
        if self.window_ms is not None and self.window_ms < 1:
            raise InvalidArgumentError("--window must be at least 0.001 seconds")

    def describe(self) -> dict[str, Any]:
        doc = super().describe()
        if self.window_ms is not None:
            doc["window_ms"] = self.window_ms
        return doc

    def _state_key(self, rec: Record) -> bytes:
        assert rec.key is not None
        if self.window_ms is None:
            return rec.key
        start = rec.timestamp - rec.timestamp % self.window_ms
        return rec.key + b"@" + str(start).encode()

    def _handle(self, part: _Partition, records: list[Record], stop: Callable[[], bool]) -> None:
        for rec in records:
            self._handle_one(part, rec)
            part.next_offset = rec.offset + 1
            self.stats.records_in += 1
            if stop():
                return

    def _handle_one(self, part: _Partition, rec: Record) -> None:
        if rec.offset <= part.applied:
            self.stats.duplicates += 1  # the state has it, so its output was acknowledged before it
            return
        if rec.key is None:
            self.stats.dropped += 1  # as in Kafka Streams, aggregations skip records without a key
            return
        skey = self._state_key(rec)
        new = self._update(part.state.get(skey), rec, part.tp[1])
        if new is None:
            self.stats.dropped += 1
            return
        part.state[skey] = new
        part.dirty[skey] = new
        part.applied = rec.offset
        part.changelog.append((skey, new, rec.offset))
        self._send(part, rec, skey, self._output(new), self._marks(part, rec.offset))

    def _update(self, old: Any, rec: Record, partition: int) -> Any:
        """The key's new state after ``rec`` (None: the record does not count and is dropped)."""
        raise NotImplementedError

    def _output(self, state: Any) -> bytes:
        raise NotImplementedError


class CountProcessor(_Keyed):
    """``kctl stream count``: the number of records per key (per window), as decimal text."""

    kind = "count"

    def _update(self, old: Any, rec: Record, partition: int) -> Any:
        return {"count": (old or {}).get("count", 0) + 1}

    def _output(self, state: Any) -> bytes:
        return str(state["count"]).encode()


class AggregateProcessor(_Keyed):
    """``kctl stream aggregate``: sum, min, max, avg or count of a number per key (per window)."""

    kind = "aggregate"

    def __init__(self, data_dir: str | os.PathLike[str], input_topic: str, output_topic: str, *,
                 agg: str = "sum", field: str | None = None, **kwargs: Any) -> None:
        if agg not in AGGREGATES:
            raise InvalidArgumentError(f"--agg must be one of {', '.join(AGGREGATES)} (got '{agg}')")
        if field is not None and not field.strip():
            raise InvalidArgumentError("--field is empty")
        super().__init__(data_dir, input_topic, output_topic, **kwargs)
        self.agg = agg
        self.field = field.split(".") if field else None
        self._warned = 0

    def describe(self) -> dict[str, Any]:
        doc = super().describe()
        doc["agg"] = self.agg
        if self.field:
            doc["field"] = ".".join(self.field)
        return doc

    def _number_of(self, rec: Record) -> int | float | None:
        if rec.value is None:
            return None
        try:
            if self.field is None:
                text = rec.value.decode().strip()
                try:
                    return int(text)
                except ValueError:
                    x = float(text)
            else:
                x = json.loads(rec.value)
                for name in self.field:
                    x = x[name]
                if isinstance(x, str):
                    x = float(x)
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    return None
                if isinstance(x, int):
                    return x
        except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
            return None
        return x if x == x and x not in (float("inf"), float("-inf")) else None

    def _update(self, old: Any, rec: Record, partition: int) -> Any:
        x = self._number_of(rec)
        if x is None:
            if self._warned < 3:
                self._warned += 1
                what = f"field {'.'.join(self.field)}" if self.field else "value"
                self._warn(f"record {self.input}-{partition}@{rec.offset} skipped: its {what} is not a number"
                           + (" (further ones are counted as dropped, not reported)" if self._warned == 3 else ""))
            return None
        if old is None:
            return {"count": 1, "sum": x, "min": x, "max": x}
        return {"count": old["count"] + 1, "sum": old["sum"] + x, "min": min(old["min"], x),
                "max": max(old["max"], x)}

    def _output(self, state: Any) -> bytes:
        if self.agg == "avg":
            return _number(state["sum"] / state["count"])
        return _number(state[self.agg])


PROCESSORS: dict[str, type[StreamProcessor]] = {
    "map": MapProcessor, "filter": FilterProcessor, "count": CountProcessor, "aggregate": AggregateProcessor,
}
