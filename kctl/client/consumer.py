"""The consumer: reads committed records (below the high watermark) from partition leaders.

A consumer reads the leader replica's segment files directly, through a lock-free
:class:`~kctl.storage.log.LogReader`, never past the high watermark the leader publishes. When
the leader changes it re-opens the new leader's files at the same position. Waiting for new
data costs nothing: it sleeps in inotify on the leaders' ``replica.state`` files.

This class does assignment by hand (``assign``); :mod:`kctl.client.group` builds group
membership on top of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kctl.client.offsetspec import OffsetSpec
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.metadata import ClusterMetadata, MetadataStore
from kctl.cluster.watch import IN_MODIFY, IN_MOVED_TO, ChangeWatcher
from kctl.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    KctlError,
    OffsetOutOfRangeError,
    UnknownPartitionError,
)
from kctl.storage.log import LogReader
from kctl.storage.records import BatchHeader, Record, decode_batch, decode_values

TopicPartition = tuple[str, int]


@dataclass
class FetchedBatch:
    """Records of one batch from one partition, already trimmed to [position, high watermark).

    ``records`` is filled unless the consumer was asked for ``values_only`` and the batch is
    dense (no compaction gaps), in which case ``values`` holds the values and their offsets are
    ``first_offset``, ``first_offset + 1``, ...
    """

    topic: str
    partition: int
    header: BatchHeader
    first_offset: int
    records: list[Record] | None = None
    values: list[bytes | None] | None = None

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else len(self.values or ())

    @property
    def next_offset(self) -> int:
        if self.records:
            return self.records[-1].offset + 1
        return self.first_offset + len(self.values or ())


class _PartitionReader:
    def __init__(self, tp: TopicPartition, position: int) -> None:
        self.tp = tp
        self.position = position
        self.leader: int | None = None
        self.epoch = -1
        self.reader: LogReader | None = None
        self.high_watermark = 0
        self.log_start = 0
        self.paused = False

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


class Consumer:
    """Read partitions of a cluster directory. Not thread-safe."""

    def __init__(self, data_dir: str | os.PathLike[str], *, reset: str = "earliest",
                 max_bytes: int = 1 << 20,
                 on_reset: Callable[[TopicPartition, int, int, str], None] | None = None) -> None:
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.store = MetadataStore(self.layout)
        if reset not in ("earliest", "latest", "none"):
            raise InvalidArgumentError(f"reset must be earliest or latest (got {reset!r})")
        self.reset = reset
        self.max_bytes = max_bytes
        self.on_reset = on_reset
        self._parts: dict[TopicPartition, _PartitionReader] = {}
        self._watcher = ChangeWatcher()
        self._watcher.watch(self.layout.metadata_dir, IN_MOVED_TO)
        self._rr = 0

    @property
    def watcher(self) -> ChangeWatcher:
        """The inotify watcher :meth:`poll` sleeps in; a group member adds its group files to it."""
        return self._watcher

    # -- assignment -----------------------------------------------------------------------------
    def metadata(self) -> ClusterMetadata:
        return self.store.load()

    def partitions_of(self, topic: str) -> list[TopicPartition]:
        t = self.metadata().topic(topic)
        return [(topic, p) for p in range(len(t.partitions))]

    def assign(self, positions: dict[TopicPartition, int | OffsetSpec]) -> None:
        """Add partitions, each starting at an offset or an :class:`OffsetSpec`."""
        md = self.metadata()
        for tp, start in positions.items():
            t = md.topic(tp[0])
            if not 0 <= tp[1] < len(t.partitions):
                raise UnknownPartitionError(f"topic '{tp[0]}' has no partition {tp[1]} (it has {len(t.partitions)})")
            pr = _PartitionReader(tp, 0)
            self._parts[tp] = pr
            self._connect(pr, md)
            pr.position = self.resolve(tp, start) if isinstance(start, OffsetSpec) else int(start)

    def unassign(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            pr = self._parts.pop(tp, None)
            if pr is not None:
                if pr.reader is not None:
                    self._watcher.unwatch(pr.reader._sf.path)
                pr.close()

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._parts)

    def position(self, tp: TopicPartition) -> int:
        return self._parts[tp].position

    def positions(self) -> dict[TopicPartition, int]:
        return {tp: pr.position for tp, pr in self._parts.items()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._parts[tp].position = offset

    def pause(self, tps: Iterable[TopicPartition], paused: bool = True) -> None:
        for tp in tps:
            if tp in self._parts:
                self._parts[tp].paused = paused

    # -- offsets --------------------------------------------------------------------------------
    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """(log start offset, high watermark) of the partition's leader."""
        pr = self._parts.get(tp)
        temp = pr is None
        if pr is None:
            pr = _PartitionReader(tp, 0)
        try:
            self._connect(pr, self.metadata())
            self._refresh_bounds(pr)
            return pr.log_start, pr.high_watermark
        finally:
            if temp:
                pr.close()

    def resolve(self, tp: TopicPartition, spec: OffsetSpec) -> int:
        start, hw = self.watermarks(tp)
        kind = spec.kind
        if kind == "beginning":
            return start
        if kind == "end":
            return hw
        if kind == "absolute":
            return int(spec.value or 0)
        if kind == "relative_end":
            return max(start, hw - int(spec.value or 0))
        if kind == "timestamp":
            pr = self._parts.get(tp)
            if pr is None or pr.reader is None:
                return hw
            found = pr.reader.offset_for_timestamp(int(spec.value or 0))
            return hw if found is None else min(found, hw)
        raise InvalidArgumentError(f"offset '{kind}' needs a consumer group")

    # -- reading --------------------------------------------------------------------------------
    def _connect(self, pr: _PartitionReader, md: ClusterMetadata) -> None:
        t = md.topics.get(pr.tp[0])
        if t is None or pr.tp[1] >= len(t.partitions):
            pr.close()
            pr.leader = None
            return
        part = t.partitions[pr.tp[1]]
        if part.leader == pr.leader and part.leader_epoch == pr.epoch and pr.reader is not None:
            return
        if pr.reader is not None:
            self._watcher.unwatch(pr.reader._sf.path)
        pr.close()
        pr.leader, pr.epoch = part.leader, part.leader_epoch
        if part.leader is None:
            return
        try:
            pr.reader = LogReader(self.layout.replica_dir(part.leader, pr.tp[0], pr.tp[1]))
        except FileNotFoundError:
            pr.reader = None
            return
        self._watcher.watch(pr.reader._sf.path, IN_MODIFY)
        pr.reader.next_offset = -1  # force a seek on first read

    def _refresh_bounds(self, pr: _PartitionReader) -> None:
        if pr.reader is None:
            return
        try:
            st = pr.reader.log_end()
        except CorruptRecordError:
            return
        hw = pr.reader.high_watermark()
        pr.log_start = st.log_start_offset
        if hw is not None:
            pr.high_watermark = min(max(hw.high_watermark, st.log_start_offset), st.log_end_offset)

    def _apply_reset(self, pr: _PartitionReader, why: str) -> None:
        if self.reset == "none":
            raise OffsetOutOfRangeError(f"offset {pr.position} of {pr.tp[0]}-{pr.tp[1]} is out of range ({why})")
        new = pr.log_start if self.reset == "earliest" else pr.high_watermark
        if self.on_reset is not None:
            self.on_reset(pr.tp, pr.position, new, why)
        pr.position = new
        if pr.reader is not None:
            pr.reader.next_offset = -1

    def _fetch(self, pr: _PartitionReader, values_only: bool, out: list[FetchedBatch], budget: int) -> int:
        reader = pr.reader
        if reader is None or pr.paused:
            return 0
        self._refresh_bounds(pr)
        if pr.position < pr.log_start:
            self._apply_reset(pr, f"below the log start offset {pr.log_start}")
        if pr.position > pr.high_watermark and pr.position > reader.log_end().log_end_offset:
            self._apply_reset(pr, "beyond the log end offset")
        if pr.position >= pr.high_watermark:
            return 0
        if reader.next_offset != pr.position:
            try:
                reader.seek(pr.position)
            except OffsetOutOfRangeError:
                self._refresh_bounds(pr)
                self._apply_reset(pr, "outside the log")
                return 0
        try:
            chunk, headers = reader.read(pr.high_watermark, min(budget, self.max_bytes))
        except OffsetOutOfRangeError:
            self._refresh_bounds(pr)
            self._apply_reset(pr, f"below the log start offset {pr.log_start}")
            return 0
        count = 0
        hw = pr.high_watermark
        for pos, header in headers:
            if header.is_control:
                pr.position = max(pr.position, min(header.next_offset, hw))
                continue
            dense = header.records_count == header.last_offset_delta + 1
            first = max(pr.position, header.base_offset)
            end = min(header.next_offset, hw)
            if values_only and dense:
                _h, values = decode_values(chunk, pos)
                vals = values[first - header.base_offset: end - header.base_offset]
                if vals:
                    out.append(FetchedBatch(pr.tp[0], pr.tp[1], header, first, values=vals))
                    count += len(vals)
            else:
                _h, records = decode_batch(chunk, pos)
                recs = [r for r in records if first <= r.offset < end]
                if recs:
                    out.append(FetchedBatch(pr.tp[0], pr.tp[1], header, recs[0].offset, records=recs))
                    count += len(recs)
            pr.position = max(pr.position, end)
        reader.next_offset = pr.position if reader.next_offset > pr.position else reader.next_offset
        if reader.next_offset != pr.position:
            reader.next_offset = -1
        return count

    def poll(self, timeout: float = 1.0, *, values_only: bool = False, max_bytes: int | None = None
             ) -> list[FetchedBatch]:
        """Batches from any assigned partition that has committed data; waits up to ``timeout``."""
        deadline = time.monotonic() + timeout
        budget = max_bytes or self.max_bytes
        while True:
            md = self.metadata()
            out: list[FetchedBatch] = []
            parts = list(self._parts.values())
            if parts:
                self._rr = (self._rr + 1) % len(parts)
                parts = parts[self._rr:] + parts[: self._rr]
            for pr in parts:
                self._connect(pr, md)
                try:
                    self._fetch(pr, values_only, out, budget)
                except (CorruptRecordError, FileNotFoundError):
                    pr.close()
                    pr.leader = None
                except KctlError:
                    raise
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            self._watcher.wait(min(remaining, 0.5))

    def at_end(self) -> bool:
        """True when every assigned partition has been read up to its high watermark."""
        md = self.metadata()
        for pr in self._parts.values():
            self._connect(pr, md)
            self._refresh_bounds(pr)
            if pr.reader is None:
                return False
            if pr.position < pr.high_watermark:
                return False
        return True

    def lag(self) -> dict[TopicPartition, int]:
        out = {}
        for tp, pr in self._parts.items():
            self._refresh_bounds(pr)
            out[tp] = max(0, pr.high_watermark - pr.position)
        return out

    def close(self) -> None:
        for pr in self._parts.values():
            pr.close()
        self._parts.clear()
        self._watcher.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
