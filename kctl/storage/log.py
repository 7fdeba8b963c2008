"""Log: one replica of one partition, a directory of LogSegments shared by several processes.

Several OS processes touch one replica: producers append to a leader's log, the broker's fetcher
appends to a follower's log, consumers and followers read. The in-memory view of any one process
is therefore never the truth; the truth is on disk:

* the segment files (``<base>.log/.index/.timeindex``), and
* ``replica.state``: a 256-byte file of two CRC-protected regions. The *log-end* region (log end
  offset, active segment and its valid size, index entry counts, max timestamp, latest leader
  epoch) is rewritten after every append, roll or truncation, by whoever holds the replica's
  append lock. The *high-watermark* region is written only by the broker that owns the replica.

An append is published the moment its log-end region is written. Readers never look past the
published size, so a batch being written (or one left half-written by a producer that was
killed) is never served; the next writer truncates such an unpublished tail before it appends.

Concurrency contract: methods that change the log (``append*``, ``truncate*``, ``roll``,
``delete_*``, ``recover``) must be called with the replica's append lock held; the class takes no
locks itself. :class:`LogReader` needs no lock.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field

from kctl.errors import CorruptRecordError, OffsetOutOfRangeError, RecordTooLargeError
from kctl.storage.checkpoint import (
    atomic_write,
    read_leader_epoch_checkpoint,
    write_leader_epoch_checkpoint,
)
from kctl.storage.crc import crc32c
from kctl.storage.records import HEADER_SIZE, BatchHeader, crc_ok, read_header, restamp
from kctl.storage.segment import LogSegment, list_segment_bases

STATE_FILE = "replica.state"
LEADER_EPOCH_FILE = "leader-epoch-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"  # lives in the broker's log dir, not here

_LOG_END = struct.Struct(">4sH2x" + "q" * 13)
_HW = struct.Struct(">4sH2xqqq")
_LOG_END_AT = 0
_HW_AT = 128
_CRC = struct.Struct(">I")

MAX_INDEX_ENTRIES = (10 * 1024 * 1024) // 8  # Kafka's 10 MiB index cap


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class LogConfig:
    """The topic configs the storage layer acts on (Kafka's names and defaults)."""

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    max_message_bytes: int = 1048588
    cleanup_policy: str = "delete"
    delete_retention_ms: int = 24 * 3600 * 1000
    min_cleanable_dirty_ratio: float = 0.5


@dataclass
class LogEndState:
    """The published end of a log. Written only under the append lock."""

    log_end_offset: int = 0
    log_start_offset: int = 0
    active_base_offset: int = 0
    active_size: int = 0
    index_entries: int = 0
    time_index_entries: int = 0
    bytes_since_index: int = 0
    max_timestamp: int = -1
    offset_of_max_timestamp: int = -1
    last_time_index_timestamp: int = -1
    latest_epoch: int = -1
    latest_epoch_start: int = -1
    active_created_ms: int = 0

    def pack(self) -> bytes:
        body = _LOG_END.pack(
            b"KLES", 1, self.log_end_offset, self.log_start_offset, self.active_base_offset,
            self.active_size, self.index_entries, self.time_index_entries, self.bytes_since_index,
            self.max_timestamp, self.offset_of_max_timestamp, self.last_time_index_timestamp,
            self.latest_epoch, self.latest_epoch_start, self.active_created_ms,
        )
        return body + _CRC.pack(crc32c(body))

    @classmethod
    def unpack(cls, raw: bytes) -> LogEndState | None:
        n = _LOG_END.size
        if len(raw) < n + 4 or raw[:4] != b"KLES":
            return None
        if _CRC.unpack_from(raw, n)[0] != crc32c(raw[:n]):
            return None
        fields = _LOG_END.unpack_from(raw, 0)
        return cls(*fields[2:])


@dataclass
class HighWatermark:
    """A replica's high watermark and the leader epoch it was computed under."""

    high_watermark: int = 0
    leader_epoch: int = -1
    updated_ms: int = 0

    def pack(self) -> bytes:
        body = _HW.pack(b"KLHW", 1, self.high_watermark, self.leader_epoch, self.updated_ms)
        return body + _CRC.pack(crc32c(body))

    @classmethod
    def unpack(cls, raw: bytes) -> HighWatermark | None:
        n = _HW.size
        if len(raw) < n + 4 or raw[:4] != b"KLHW":
            return None
        if _CRC.unpack_from(raw, n)[0] != crc32c(raw[:n]):
            return None
        _, _, hw, epoch, ms = _HW.unpack_from(raw, 0)
        return cls(hw, epoch, ms)


class ReplicaStateFile:
    """The two regions of ``replica.state``; reads retry on a torn (concurrently written) copy."""

    def __init__(self, directory: str, *, create: bool = False) -> None:
        self.path = os.path.join(directory, STATE_FILE)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.fd = os.open(self.path, flags, 0o644)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_log_end(self, attempts: int = 20) -> LogEndState | None:
        for i in range(attempts):
            raw = os.pread(self.fd, 128, _LOG_END_AT)
            if not raw.strip(b"\0"):
                return None
            state = LogEndState.unpack(raw)
            if state is not None:
                return state
            if i > 2:
                time.sleep(0.0005)
        return None

    def write_log_end(self, state: LogEndState) -> None:
        os.pwrite(self.fd, state.pack(), _LOG_END_AT)

    def read_high_watermark(self, attempts: int = 20) -> HighWatermark | None:
        for i in range(attempts):
            raw = os.pread(self.fd, 64, _HW_AT)
            if not raw.strip(b"\0"):
                return None
            hw = HighWatermark.unpack(raw)
            if hw is not None:
                return hw
            if i > 2:
                time.sleep(0.0005)
        return None

    def write_high_watermark(self, hw: HighWatermark) -> None:
        os.pwrite(self.fd, hw.pack(), _HW_AT)

    def fsync(self) -> None:
        os.fsync(self.fd)


def end_offset_for_epoch(entries: list[tuple[int, int]], log_end_offset: int, epoch: int
                         ) -> tuple[int, int]:
    """Kafka's OffsetsForLeaderEpoch answer: (largest epoch <= ``epoch``, the end offset of it).

    The end offset of an epoch is the start offset of the next higher epoch, or the log end
    offset for the latest epoch. (-1, -1) when no epoch <= ``epoch`` is known.
    """
    found = -1
    for i, (e, _start) in enumerate(entries):
        if e <= epoch:
            found = i
        else:
            break
    if found < 0:
        return -1, -1
    e = entries[found][0]
    end = entries[found + 1][1] if found + 1 < len(entries) else log_end_offset
    return e, end


@dataclass
class AppendInfo:
    base_offset: int
    last_offset: int
    log_append_time: int = -1
    log_start_offset: int = 0
    positions: list[int] = field(default_factory=list)


class Log:
    """One partition replica on disk. See the module docstring for the concurrency contract."""

    def __init__(self, directory: str, config: LogConfig | None = None) -> None:
        self.directory = directory
        self.config = config or LogConfig()
        self._state_file: ReplicaStateFile | None = None
        self._segments: dict[int, LogSegment] = {}
        self._bases: list[int] = []
        self._epochs: list[tuple[int, int]] = []
        self._epochs_key: tuple[int, int] = (-2, -2)
        self.state = LogEndState()

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: str, config: LogConfig | None = None, *, start_offset: int = 0) -> Log:
        """Lay out an empty replica directory (idempotent for an existing, valid one)."""
        os.makedirs(directory, exist_ok=True)
        log = cls(directory, config)
        sf = log._sf(create=True)
        state = sf.read_log_end()
        if state is None and not list_segment_bases(directory):
            seg = LogSegment(directory, start_offset)
            seg.create()
            log.state = LogEndState(log_end_offset=start_offset, log_start_offset=start_offset,
                                    active_base_offset=start_offset, active_created_ms=_now_ms())
            sf.write_log_end(log.state)
            write_leader_epoch_checkpoint(os.path.join(directory, LEADER_EPOCH_FILE), [])
            log._sync_segments()
        else:
            log.recover() if state is None else log.refresh()
        return log

    @classmethod
    def open(cls, directory: str, config: LogConfig | None = None, *, recover: bool = False,
             recovery_point: int | None = None) -> Log:
        """Open an existing replica for writing; ``recover`` after an unclean shutdown."""
        if not os.path.isdir(directory):
            raise FileNotFoundError(directory)
        log = cls(directory, config)
        sf = log._sf(create=True)
        state = sf.read_log_end()
        if recover or state is None or not log._state_matches_files(state):
            log.recover(recovery_point)
        else:
            log.refresh()
        return log

    def _sf(self, create: bool = False) -> ReplicaStateFile:
        if self._state_file is None:
            self._state_file = ReplicaStateFile(self.directory, create=create)
        return self._state_file

    def close(self) -> None:
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()
        if self._state_file is not None:
            self._state_file.close()
            self._state_file = None

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state_matches_files(self, state: LogEndState) -> bool:
        seg = LogSegment(self.directory, state.active_base_offset)
        try:
            return os.path.getsize(seg.log_path) >= state.active_size
        except OSError:
            return False

    # -- shared state -----------------------------------------------------------------------
    def refresh(self) -> LogEndState:
        """Re-read the published log end; drop what another process left unpublished."""
        state = self._sf().read_log_end()
        if state is None:
            raise CorruptRecordError(f"replica state in {self.directory} is damaged; recovery needed")
        self.state = state
        self._sync_segments()
        self._sync_epochs()
        return state

    def _publish(self) -> None:
        self._sf().write_log_end(self.state)

    def _sync_segments(self) -> None:
        bases = list_segment_bases(self.directory)
        if bases != self._bases:
            for base in list(self._segments):
                if base not in bases:
                    self._segments.pop(base).close()
            self._bases = bases

    def _segment(self, base: int) -> LogSegment:
        seg = self._segments.get(base)
        if seg is None:
            seg = LogSegment(self.directory, base)
            self._segments[base] = seg
        return seg

    def _sync_epochs(self) -> None:
        key = (self.state.latest_epoch, self.state.latest_epoch_start)
        if key != self._epochs_key:
            try:
                self._epochs = read_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE))
            except (CorruptRecordError, FileNotFoundError):
                self._epochs = []
            self._epochs_key = key

    def _write_epochs(self) -> None:
        write_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE), self._epochs)
        if self._epochs:
            self.state.latest_epoch, self.state.latest_epoch_start = self._epochs[-1]
        else:
            self.state.latest_epoch, self.state.latest_epoch_start = -1, -1
        self._epochs_key = (self.state.latest_epoch, self.state.latest_epoch_start)

    def _assign_epoch(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset`` (returns True if the cache changed)."""
        if epoch < 0 or (self._epochs and epoch <= self._epochs[-1][0]):
            return False
        self._epochs.append((epoch, start_offset))
        return True

    # -- properties -------------------------------------------------------------------------
    @property
    def log_end_offset(self) -> int:
        return self.state.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.state.log_start_offset

    @property
    def segment_bases(self) -> list[int]:
        return list(self._bases)

    @property
    def epoch_entries(self) -> list[tuple[int, int]]:
        return list(self._epochs)

    @property
    def latest_epoch(self) -> int:
        return self._epochs[-1][0] if self._epochs else -1

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return end_offset_for_epoch(self._epochs, self.state.log_end_offset, epoch)

    def size_in_bytes(self) -> int:
        total = 0
        for base in self._bases:
            if base == self.state.active_base_offset:
                total += self.state.active_size
            else:
                try:
                    total += os.path.getsize(self._segment(base).log_path)
                except OSError:
                    pass
        return total

    # -- appending --------------------------------------------------------------------------
    def _drop_unpublished_tail(self, seg: LogSegment) -> None:
        st = self.state
        if seg.log_size() != st.active_size:
            seg.truncate_log(st.active_size)
        if os.fstat(seg.index_fd).st_size != st.index_entries * 8:
            seg.truncate_index(st.index_entries)
        if os.fstat(seg.time_fd).st_size != st.time_index_entries * 12:
            seg.truncate_time_index(st.time_index_entries)

    def _maybe_roll(self, batch_size: int, first_offset: int, last_offset: int, now_ms: int) -> LogSegment:
        st = self.state
        seg = self._segment(st.active_base_offset)
        full = st.active_size > 0 and (
            st.active_size + batch_size > self.config.segment_bytes
            or now_ms - st.active_created_ms > self.config.segment_ms
            or st.index_entries >= MAX_INDEX_ENTRIES
            or last_offset - st.active_base_offset > 0x7FFFFFFF
        )
        if full:
            seg = self._roll_to(first_offset, now_ms)
        return seg

    def _roll_to(self, base_offset: int, now_ms: int) -> LogSegment:
        st = self.state
        old = self._segment(st.active_base_offset)
        if st.max_timestamp > st.last_time_index_timestamp and st.max_timestamp >= 0:
            old.append_time_index(st.time_index_entries, st.max_timestamp,
                                  st.offset_of_max_timestamp - st.active_base_offset)
        seg = self._segment(base_offset)
        seg.create()
        st.active_base_offset = base_offset
        st.active_size = 0
        st.index_entries = 0
        st.time_index_entries = 0
        st.bytes_since_index = 0
        st.max_timestamp = -1
        st.offset_of_max_timestamp = -1
        st.last_time_index_timestamp = -1
        st.active_created_ms = now_ms
        self._bases.append(base_offset)
        return seg

    def roll(self) -> None:
        """Start a new active segment at the log end (no-op on an empty active segment)."""
        if self.state.active_size > 0:
            self._roll_to(self.state.log_end_offset, _now_ms())
            self._publish()

    def _write_batch(self, seg: LogSegment, data: bytes | bytearray | memoryview, header: BatchHeader,
                     position: int) -> None:
        """Index bookkeeping for one batch about to be written at ``position`` in ``seg``."""
        st = self.state
        if st.bytes_since_index > self.config.index_interval_bytes:
            seg.append_index(st.index_entries, header.last_offset - seg.base_offset, position)
            st.index_entries += 1
            st.bytes_since_index = 0
            if st.max_timestamp > st.last_time_index_timestamp:
                seg.append_time_index(st.time_index_entries, st.max_timestamp,
                                      st.offset_of_max_timestamp - seg.base_offset)
                st.time_index_entries += 1
                st.last_time_index_timestamp = st.max_timestamp
        st.bytes_since_index += header.size
        if header.max_timestamp > st.max_timestamp:
            st.max_timestamp = header.max_timestamp
            st.offset_of_max_timestamp = header.last_offset

    def append(self, batch: bytes | bytearray, *, leader_epoch: int, now_ms: int | None = None) -> AppendInfo:
        """Leader append of one producer batch: assign offsets and stamp the leader epoch.

        Caller holds the append lock and has called :meth:`refresh`.
        """
        if len(batch) > self.config.max_message_bytes:
            raise RecordTooLargeError(
                f"batch of {len(batch)} bytes exceeds max.message.bytes={self.config.max_message_bytes}")
        buf = bytearray(batch)
        header = read_header(buf, 0)
        if header.size != len(buf):
            raise CorruptRecordError("append takes exactly one whole batch")
        now = now_ms if now_ms is not None else _now_ms()
        st = self.state
        base = st.log_end_offset
        last = base + header.last_offset_delta
        seg = self._segment(st.active_base_offset)
        self._drop_unpublished_tail(seg)
        seg = self._maybe_roll(len(buf), base, last, now)
        restamp(buf, 0, base, leader_epoch)
        header = read_header(buf, 0)
        position = st.active_size
        self._write_batch(seg, buf, header, position)
        seg.write(position, buf)
        st.active_size += len(buf)
        st.log_end_offset = last + 1
        if self._assign_epoch(leader_epoch, base):
            self._write_epochs()
        self._publish()
        return AppendInfo(base, last, -1, st.log_start_offset, [position])

    def append_replicated(self, data: bytes | bytearray | memoryview, *, verify: bool = True,
                          now_ms: int | None = None) -> int:
        """Follower append of whole batches that already carry offsets and epochs.

        Batches must continue the log exactly (first base offset == log end offset). Returns the
        new log end offset. Caller holds the append lock and has called :meth:`refresh`.
        """
        view = memoryview(data)
        now = now_ms if now_ms is not None else _now_ms()
        st = self.state
        seg = self._segment(st.active_base_offset)
        self._drop_unpublished_tail(seg)
        pos = 0
        run_start = 0
        run_pos = st.active_size
        epochs_changed = False
        total = len(view)
        while pos < total:
            if total - pos < HEADER_SIZE:
                raise CorruptRecordError("replicated data ends in a partial batch header")
            header = read_header(view, pos)
            if pos + header.size > total:
                raise CorruptRecordError("replicated data ends in a partial batch")
            if verify and not crc_ok(view, pos, header):
                raise CorruptRecordError(f"replicated batch at offset {header.base_offset} failed its CRC")
            if header.base_offset != st.log_end_offset:
                raise CorruptRecordError(
                    f"replicated batch at offset {header.base_offset} does not continue the log "
                    f"(log end offset {st.log_end_offset})")
            new_seg = self._maybe_roll(header.size, header.base_offset, header.last_offset, now)
            if new_seg is not seg:
                if pos > run_start:
                    seg.write(run_pos, view[run_start:pos])
                seg = new_seg
                run_start = pos
                run_pos = 0
            self._write_batch(seg, view, header, st.active_size)
            st.active_size += header.size
            st.log_end_offset = header.next_offset
            if self._assign_epoch(header.partition_leader_epoch, header.base_offset):
                epochs_changed = True
            pos += header.size
        if pos > run_start:
            seg.write(run_pos, view[run_start:pos])
        if epochs_changed:
            self._write_epochs()
        self._publish()
        return st.log_end_offset

    # -- truncation -------------------------------------------------------------------------
    def truncate_to(self, offset: int) -> None:
        """Remove every batch at or after ``offset`` (a whole batch straddling it goes too)."""
        st = self.state
        if offset >= st.log_end_offset:
            return
        if offset <= st.log_start_offset:
            self.truncate_fully(st.log_start_offset)
            return
        bases = [b for b in self._bases if b <= offset] or [self._bases[0]]
        target_base = bases[-1]
        for base in [b for b in self._bases if b > target_base]:
            self._segment(base).delete()
            self._segments.pop(base, None)
        self._bases = [b for b in self._bases if b <= target_base]
        seg = self._segment(target_base)
        end = st.active_size if target_base == st.active_base_offset else seg.log_size()
        self._rebuild_segment_state(seg, end, stop_offset=offset)
        self._epochs = [(e, s) for (e, s) in self._epochs if s < st.log_end_offset]
        self._write_epochs()
        self._publish()

    def truncate_fully(self, start_offset: int) -> None:
        """Delete every segment and restart the log empty at ``start_offset`` (a follower that
        fell behind the leader's log start)."""
        for base in list(self._bases):
            self._segment(base).delete()
        self._segments.clear()
        seg = self._segment(start_offset)
        seg.create()
        self._bases = [start_offset]
        self.state = LogEndState(log_end_offset=start_offset, log_start_offset=start_offset,
                                 active_base_offset=start_offset, active_created_ms=_now_ms())
        self._epochs = [(e, s) for (e, s) in self._epochs if s < start_offset]
        self._write_epochs()
        self._publish()

    def _rebuild_segment_state(self, seg: LogSegment, end: int, stop_offset: int | None = None) -> int:
        """Rescan ``seg`` as the active segment: rebuild both indexes and the log-end state.

        Stops at a torn or corrupt batch, a non-increasing offset, or ``stop_offset``; truncates
        the file there and returns the number of bytes dropped.
        """
        st = self.state
        st.active_base_offset = seg.base_offset
        st.active_size = 0
        st.index_entries = st.time_index_entries = st.bytes_since_index = 0
        st.max_timestamp = st.offset_of_max_timestamp = st.last_time_index_timestamp = -1
        st.log_end_offset = seg.base_offset if st.log_start_offset <= seg.base_offset else st.log_start_offset
        seg.truncate_index(0)
        seg.truncate_time_index(0)
        valid_end = 0
        expected = seg.base_offset
        try:
            for pos, header in seg.batches(0, end):
                if stop_offset is not None and header.last_offset >= stop_offset:
                    break
                if header.base_offset < expected or header.size < HEADER_SIZE:
                    break
                if not crc_ok(seg.read(pos, header.size), 0, header):
                    break
                self._write_batch(seg, b"", header, pos)
                self._assign_epoch(header.partition_leader_epoch, header.base_offset)
                st.active_size = pos + header.size
                st.log_end_offset = header.next_offset
                expected = header.next_offset
                valid_end = pos + header.size
        except CorruptRecordError:
            pass
        actual = seg.log_size()
        if actual != valid_end:
            seg.truncate_log(valid_end)
        st.active_created_ms = _now_ms()
        return actual - valid_end

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, recovery_point: int | None = None) -> int:
        """Validate segments from the one holding ``recovery_point`` (all, if None); truncate a
        torn or corrupt tail, delete every segment after it, rebuild indexes, the log-end state
        and the leader-epoch cache. Returns the number of bytes truncated."""
        self._sf(create=True)
        bases = list_segment_bases(self.directory)
        old = self._sf().read_log_end()
        log_start = old.log_start_offset if old is not None else (bases[0] if bases else 0)
        if not bases:
            start = max(log_start, recovery_point or 0)
            seg = LogSegment(self.directory, start)
            seg.create()
            bases = [start]
        if log_start < bases[0] or log_start > bases[-1] + (1 << 31):
            log_start = bases[0]
        first = 0
        if recovery_point is not None:
            first = max(0, len([b for b in bases if b <= recovery_point]) - 1)
        try:
            cached = read_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE))
        except (CorruptRecordError, FileNotFoundError):
            cached = []
            first = 0
        self._epochs = [(e, s) for (e, s) in cached if s < bases[first]]
        self.state = LogEndState(log_start_offset=log_start)
        self._bases = bases
        truncated = 0
        for i in range(first, len(bases)):
            seg = self._segment(bases[i])
            if i > first and self.state.log_end_offset != bases[i] and self.state.active_size:
                # a gap or overlap between segments: everything from here on is suspect
                truncated += sum(self._segment(b).log_size() for b in bases[i:])
                for b in bases[i:]:
                    self._segment(b).delete()
                self._bases = bases[:i]
                break
            dropped = self._rebuild_segment_state(seg, seg.log_size())
            if i < len(bases) - 1 and self.state.active_size and self.state.max_timestamp >= 0:
                seg.append_time_index(self.state.time_index_entries, self.state.max_timestamp,
                                      self.state.offset_of_max_timestamp - seg.base_offset)
            if dropped:
                truncated += dropped
                for b in bases[i + 1:]:
                    truncated += self._segment(b).log_size()
                    self._segment(b).delete()
                self._bases = bases[: i + 1]
                break
        # an empty trailing segment (or several) is fine as the active one, but never mid-log
        if first == len(bases) - 1 and first > 0 and self.state.active_size == 0:
            self.state.log_end_offset = bases[first]
        self.state.active_created_ms = _now_ms()
        self.state.log_start_offset = min(max(self.state.log_start_offset, self._bases[0]),
                                          self.state.log_end_offset)
        self._epochs = [(e, s) for (e, s) in self._epochs if s < self.state.log_end_offset]
        self._write_epochs()
        self._publish()
        return truncated

    # -- retention --------------------------------------------------------------------------
    def delete_retained_segments(self, high_watermark: int, now_ms: int | None = None) -> list[int]:
        """Kafka's delete policy on whole segments wholly below ``high_watermark``; never the
        active segment. Returns the base offsets deleted."""
        now = now_ms if now_ms is not None else _now_ms()
        cfg = self.config
        deleted: list[int] = []
        bases = list(self._bases)
        total = self.size_in_bytes()
        for i, base in enumerate(bases[:-1]):
            next_base = bases[i + 1]
            if next_base > high_watermark:
                break
            seg = self._segment(base)
            size = seg.log_size()
            expired = False
            if cfg.retention_ms >= 0:
                max_ts = self._segment_max_timestamp(seg)
                expired = max_ts >= 0 and now - max_ts > cfg.retention_ms
            too_big = cfg.retention_bytes >= 0 and total - size >= cfg.retention_bytes
            if not (expired or too_big):
                break
            deleted.append(base)
            total -= size
        if deleted:
            new_start = bases[len(deleted)]
            self.state.log_start_offset = max(self.state.log_start_offset, new_start)
            self._publish()
            for base in deleted:
                self._segment(base).delete()
                self._segments.pop(base, None)
            self._bases = [b for b in self._bases if b not in deleted]
            self._epochs = _trim_epochs_before(self._epochs, new_start)
            self._write_epochs()
            self._publish()
        return deleted

    def delete_segments_below(self, offset: int) -> list[int]:
        """Advance the log start to ``offset`` and delete segments wholly below it (a follower
        mirroring its leader's retention)."""
        offset = min(offset, self.state.log_end_offset)
        if offset <= self.state.log_start_offset:
            return []
        self.state.log_start_offset = offset
        self._publish()
        deleted = []
        for i, base in enumerate(self._bases[:-1]):
            if self._bases[i + 1] <= offset:
                deleted.append(base)
        for base in deleted:
            self._segment(base).delete()
            self._segments.pop(base, None)
        if deleted:
            self._bases = [b for b in self._bases if b not in deleted]
        self._epochs = _trim_epochs_before(self._epochs, offset)
        self._write_epochs()
        self._publish()
        return deleted

    def set_log_start_offset(self, offset: int) -> None:
        """Advance the log start offset (e.g. a follower mirroring its leader's)."""
        if offset > self.state.log_start_offset:
            self.state.log_start_offset = min(offset, self.state.log_end_offset)
            self._publish()

    def _segment_max_timestamp(self, seg: LogSegment) -> int:
        entries = seg.time_entries()
        if entries:
            return entries[-1][0]
        best = -1
        for _pos, header in seg.batches():
            best = max(best, header.max_timestamp)
        return best

    # -- durability -------------------------------------------------------------------------
    def flush(self) -> int:
        """fsync every segment and the state; returns the log end offset now durable."""
        for base in self._bases:
            try:
                self._segment(base).flush()
            except FileNotFoundError:
                pass
        self._sf().fsync()
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return self.state.log_end_offset

    # -- lookups ----------------------------------------------------------------------------
    def batch_header_at(self, offset: int) -> BatchHeader | None:
        """The header of the batch holding ``offset``, if the log has it (idempotence checks)."""
        st = self.state
        if offset < st.log_start_offset or offset >= st.log_end_offset:
            return None
        bases = [b for b in self._bases if b <= offset]
        if not bases:
            return None
        seg = self._segment(bases[-1])
        active = seg.base_offset == st.active_base_offset
        end = st.active_size if active else seg.log_size()
        found = seg.find_batch(offset, end, st.index_entries if active else None)
        if found is None or found[1].base_offset > offset:
            return None
        return found[1]

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """First offset whose batch max timestamp >= ``timestamp`` (None if there is none)."""
        return LogReader.offset_for_timestamp_in(self.directory, self._bases, self.state, timestamp)


def _trim_epochs_before(entries: list[tuple[int, int]], start: int) -> list[tuple[int, int]]:
    """Drop epochs that end before ``start``; the epoch covering ``start`` now starts there."""
    kept: list[tuple[int, int]] = []
    for i, (e, s) in enumerate(entries):
        nxt = entries[i + 1][1] if i + 1 < len(entries) else None
        if nxt is not None and nxt <= start:
            continue
        kept.append((e, max(s, start)))
    return kept


class LogReader:
    """A cursor over a replica's batches for a reader in any process; takes no lock.

    It reads only below the published log end, follows rolls into the next segment and
    re-seeks when the log was truncated or its segments deleted under it.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._sf = ReplicaStateFile(directory)
        self._segment: LogSegment | None = None
        self._position = 0
        self.next_offset = 0

    def close(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        self._sf.close()

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_end(self) -> LogEndState:
        state = self._sf.read_log_end()
        if state is None:
            raise CorruptRecordError(f"replica state in {self.directory} is unreadable")
        return state

    def high_watermark(self) -> HighWatermark | None:
        return self._sf.read_high_watermark()

    def leader_epochs(self) -> list[tuple[int, int]]:
        try:
            return read_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE))
        except (CorruptRecordError, FileNotFoundError):
            return []

    def seek(self, offset: int, state: LogEndState | None = None) -> None:
        st = state or self.log_end()
        if offset < st.log_start_offset or offset > st.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log [{st.log_start_offset}, {st.log_end_offset})")
        bases = [b for b in list_segment_bases(self.directory) if b <= max(offset, st.log_start_offset)]
        base = bases[-1] if bases else st.active_base_offset
        if self._segment is None or self._segment.base_offset != base:
            if self._segment is not None:
                self._segment.close()
            self._segment = LogSegment(self.directory, base)
        end = st.active_size if base == st.active_base_offset else self._segment.log_size()
        entries = st.index_entries if base == st.active_base_offset else None
        pos = self._segment.lookup_position(offset, entries)
        found = self._segment.find_batch(offset, end, entries) if pos < end else None
        # with nothing at or after offset in this segment, sit at its end (the next read rolls on)
        self._position = found[0] if found else end
        self.next_offset = offset

    def read(self, max_offset: int, max_bytes: int = 1 << 20
             ) -> tuple[bytes, list[tuple[int, BatchHeader]]]:
        """Whole batches from the cursor that start below ``max_offset``, at most ``max_bytes``
        (but at least one batch). Returns (chunk, [(position in chunk, header)])."""
        for _attempt in range(3):
            try:
                return self._read(max_offset, max_bytes)
            except (FileNotFoundError, _Reseek):
                self.seek(self.next_offset)
        return b"", []

    def _read(self, max_offset: int, max_bytes: int) -> tuple[bytes, list[tuple[int, BatchHeader]]]:
        if self._segment is None:
            self.seek(self.next_offset)
        st = self.log_end()
        if self.next_offset >= max_offset or self.next_offset >= st.log_end_offset:
            return b"", []
        if self.next_offset < st.log_start_offset:
            raise OffsetOutOfRangeError(
                f"offset {self.next_offset} is below the log start offset {st.log_start_offset}")
        assert self._segment is not None
        seg = self._segment
        while True:
            if seg.base_offset == st.active_base_offset:
                end = st.active_size
            elif seg.base_offset < st.active_base_offset:
                end = seg.log_size()
            else:
                raise _Reseek
            if self._position > end:
                raise _Reseek
            if self._position == end:
                if seg.base_offset == st.active_base_offset:
                    return b"", []
                nxt = [b for b in list_segment_bases(self.directory) if b > seg.base_offset]
                if not nxt:
                    raise _Reseek
                seg.close()
                seg = self._segment = LogSegment(self.directory, nxt[0])
                self._position = 0
                continue
            break
        chunk = seg.read(self._position, min(max_bytes, end - self._position))
        headers: list[tuple[int, BatchHeader]] = []
        off = 0
        while off + HEADER_SIZE <= len(chunk):
            header = read_header(chunk, off)
            if header.base_offset >= max_offset:
                break
            if off + header.size > len(chunk):
                if headers:
                    break
                chunk = seg.read(self._position, header.size)
                if len(chunk) < header.size:
                    raise _Reseek
            headers.append((off, header))
            off += header.size
        if not headers:
            if len(chunk) >= HEADER_SIZE:
                return b"", []
            raise _Reseek
        if headers[0][1].next_offset <= self.next_offset:
            # the batch under the cursor ends before where we are: the log changed under us
            raise _Reseek
        last = headers[-1][1]
        if last.next_offset <= max_offset:
            self._position += off
            self.next_offset = max(self.next_offset, last.next_offset)
        else:
            # the final batch straddles max_offset: keep the cursor on it, hand it out anyway
            self._position += headers[-1][0]
            self.next_offset = max(self.next_offset, max_offset)
        return chunk[:off], headers

    @staticmethod
    def offset_for_timestamp_in(directory: str, bases: list[int], state: LogEndState, timestamp: int
                                ) -> int | None:
        for base in bases:
            seg = LogSegment(directory, base)
            try:
                end = state.active_size if base == state.active_base_offset else seg.log_size()
                for _pos, header in seg.batches(0, end):
                    if header.next_offset <= state.log_start_offset:
                        continue
                    if header.max_timestamp >= timestamp:
                        return max(header.base_offset, state.log_start_offset)
            except FileNotFoundError:
                continue
            finally:
                seg.close()
        return None

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        st = self.log_end()
        bases = list_segment_bases(self.directory)
        return self.offset_for_timestamp_in(self.directory, bases, st, timestamp)


class _Reseek(Exception):
    """Internal: the cursor no longer matches the files; seek again."""


def write_clean_shutdown_marker(log_dir: str) -> None:
    atomic_write(os.path.join(log_dir, CLEAN_SHUTDOWN_FILE), b"")


def consume_clean_shutdown_marker(log_dir: str) -> bool:
    """True if the last shutdown was clean; removes the marker (Kafka deletes it on start)."""
    path = os.path.join(log_dir, CLEAN_SHUTDOWN_FILE)
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
