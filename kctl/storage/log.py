"""Log: one replica of one partition, a directory of LogSegments shared by several processes.

Several OS processes touch one replica: producers append to a leader's log, the broker's fetcher
appends to a follower's log, consumers and followers read. The in-memory view of any one process
is therefore never the truth; the truth is on disk:

* the segment files (``<base>.log/.index/.timeindex``), and
* ``replica.state``: a 256-byte file of two CRC-protected regions. The *log-end* region (log end
  offset, active segment and its valid size, index entry counts, max timestamp, latest leader
  epoch, a generation) is rewritten after every append, roll or truncation, by whoever holds the
  replica's append lock. The *high-watermark* region is written only by the broker that owns the
  replica.

An append is published the moment its log-end region is written. Readers never look past the
published size, so a batch being written (or one left half-written by a producer that was
killed) is never served; the next writer truncates such an unpublished tail before it appends.
Segment files past the published active segment (left by a writer killed while rolling) are
ignored by readers and deleted by the next roll.

The *generation* goes up whenever published bytes are removed (truncation, recovery). A reader
or writer in another process compares it with the one it last saw: a change means its file
positions and open file handles may describe bytes that are gone, so it seeks or reopens.

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
from kctl.storage.records import HEADER_SIZE, BatchHeader, crc_ok, decode_batch, read_header, restamp
from kctl.storage.segment import TIME_ENTRY, LogSegment, list_segment_bases

STATE_FILE = "replica.state"
LEADER_EPOCH_FILE = "leader-epoch-checkpoint"
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"  # lives in the broker's log dir, not here

_LOG_END_V1 = struct.Struct(">4sH2x" + "q" * 13)
_LOG_END = struct.Struct(">4sH2x" + "q" * 14)  # v2 adds the generation
_LOG_END_VERSION = struct.Struct(">4sH")
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
    generation: int = 0

    def pack(self) -> bytes:
        body = _LOG_END.pack(
            b"KLES", 2, self.log_end_offset, self.log_start_offset, self.active_base_offset,
            self.active_size, self.index_entries, self.time_index_entries, self.bytes_since_index,
            self.max_timestamp, self.offset_of_max_timestamp, self.last_time_index_timestamp,
            self.latest_epoch, self.latest_epoch_start, self.active_created_ms, self.generation,
        )
        return body + _CRC.pack(crc32c(body))

    @classmethod
    def unpack(cls, raw: bytes) -> LogEndState | None:
        if len(raw) < _LOG_END_VERSION.size:
            return None
        magic, version = _LOG_END_VERSION.unpack_from(raw, 0)
        layout = _LOG_END if version == 2 else _LOG_END_V1 if version == 1 else None
        if magic != b"KLES" or layout is None:
            return None
        n = layout.size
        if len(raw) < n + 4 or _CRC.unpack_from(raw, n)[0] != crc32c(raw[:n]):
            return None
        fields = layout.unpack_from(raw, 0)
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


def _assign_epoch(entries: list[tuple[int, int]], epoch: int, start_offset: int) -> bool:
    """Record that ``epoch`` starts at ``start_offset``; True if ``entries`` changed.

    An epoch no higher than the latest changes nothing. A new epoch replaces any entry that
    starts at or after it (one left empty when the log start moved to the log end), as Kafka's
    leader-epoch cache does, so both columns stay strictly increasing.
    """
    if epoch < 0 or (entries and epoch <= entries[-1][0]):
        return False
    while entries and entries[-1][1] >= start_offset:
        entries.pop()
    entries.append((epoch, start_offset))
    return True


def _epochs_within(entries: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The leader-epoch cache of a log holding [start, end): Kafka's truncateFromStart (epochs
    that end before ``start`` go, the one covering ``start`` now starts there), then every epoch
    that covers no offset of the log goes (it starts at or past ``end``: never published, cut
    off, or left empty when the log start reached the log end). Every path that trims or
    rebuilds the cache goes through here, so that a log and the same log reopened or recovered
    agree (given leader epochs that never go down, as Kafka's leaders guarantee)."""
    kept: list[tuple[int, int]] = []
    for i, (e, s) in enumerate(entries):
        nxt = entries[i + 1][1] if i + 1 < len(entries) else None
        if (nxt is not None and nxt <= start) or max(s, start) >= end:
            continue
        kept.append((e, max(s, start)))
    return kept


def _published_epochs(entries: list[tuple[int, int]], state: LogEndState) -> list[tuple[int, int]] | None:
    """The checkpoint's entries up to the latest epoch the published state names.

    The checkpoint is written just before the log-end region, so a writer killed in between
    leaves entries for appends nobody saw; they come after the published latest one. None when
    the checkpoint does not hold the published latest epoch at all (damaged, or being replaced).
    """
    latest = (state.latest_epoch, state.latest_epoch_start)
    if latest == (-1, -1):
        return []
    for i in range(len(entries) - 1, -1, -1):
        if entries[i] == latest:
            return entries[: i + 1]
    return None


def _scan_epochs(directory: str, bases: list[int], state: LogEndState) -> list[tuple[int, int]]:
    """The leader-epoch cache rebuilt from batch headers (when the checkpoint is damaged)."""
    entries: list[tuple[int, int]] = []
    for base in bases:
        seg = LogSegment(directory, base)
        try:
            end = state.active_size if base == state.active_base_offset else seg.log_size()
            for _pos, header in seg.batches(0, end):
                _assign_epoch(entries, header.partition_leader_epoch, header.base_offset)
        except (FileNotFoundError, CorruptRecordError):
            continue
        finally:
            seg.close()
    return _epochs_within(entries, state.log_start_offset, state.log_end_offset)


def _visible_bases(directory: str, state: LogEndState) -> list[int]:
    """Segment base offsets up to the published active one (later ones are a killed roll's)."""
    return [b for b in list_segment_bases(directory) if b <= state.active_base_offset]


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
        self._epochs_key: tuple[int, ...] = ()
        self.state = LogEndState()
        # (generation, active base, log start) that self._bases and the open segments reflect
        self._view: tuple[int, int, int] = (-1, -1, -1)
        # the active segment's files are known to end where the published state says
        self._tail_checked = False

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
            seg.create(fresh=True)
            log.state = LogEndState(log_end_offset=start_offset, log_start_offset=start_offset,
                                    active_base_offset=start_offset, active_created_ms=_now_ms())
            log._bases = [start_offset]
            log._epochs = []
            write_leader_epoch_checkpoint(os.path.join(directory, LEADER_EPOCH_FILE), [])
            log._publish()
        elif state is None or not log._state_matches_files(state):
            log.recover()
        else:
            log.refresh()
        return log

    @classmethod
    def open(cls, directory: str, config: LogConfig | None = None, *, recover: bool = False,
             recovery_point: int | None = None) -> Log:
        """Open an existing replica for writing; ``recover`` after an unclean shutdown.

        Without ``recover`` the files are still checked as Kafka does on open: a state that
        does not match the segment files means recovery after all; indexes that fail a quick
        sanity check are rebuilt, and a damaged leader-epoch checkpoint is rebuilt from the
        batch headers. Segments wholly below the log start (a retention cut short) are deleted.
        """
        if not os.path.isdir(directory):
            raise FileNotFoundError(directory)
        log = cls(directory, config)
        sf = log._sf(create=True)
        state = sf.read_log_end()
        if recover or state is None or not log._state_matches_files(state):
            log.recover(recovery_point)
        else:
            log.refresh()
            log._check_segments(None)
            log._check_epoch_checkpoint()
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
        self._view = (-1, -1, -1)
        self._tail_checked = False

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

    def _check_segments(self, upto: int | None) -> None:
        """Delete segments wholly below the log start; rebuild the indexes of any of the first
        ``upto`` segments (all if None) that fail a sanity check."""
        st = self.state
        bases = self._bases
        below = [b for i, b in enumerate(bases[:-1]) if bases[i + 1] <= st.log_start_offset]
        for base in below:
            self._segments.pop(base, self._segment(base)).delete()
        if below:
            self._bases = bases = bases[len(below):]
        count = len(bases) if upto is None else min(upto, len(bases))
        for i in range(count):
            base = bases[i]
            seg = self._segment(base)
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            if base != st.active_base_offset:
                size = seg.log_size()
                if not seg.indexes_look_sane(size, next_base):
                    self._reindex_sealed(seg, size)
            elif not seg.indexes_look_sane(st.active_size, next_base, st.index_entries, st.time_index_entries):
                self.recover(recovery_point=base)
                return

    def _check_epoch_checkpoint(self) -> None:
        """Rewrite a leader-epoch checkpoint that is damaged, missing or does not hold the
        published epochs (the cache then came from the batch headers, see :meth:`refresh`)."""
        path = os.path.join(self.directory, LEADER_EPOCH_FILE)
        try:
            if os.path.exists(path) and read_leader_epoch_checkpoint(path) == self._epochs:
                return
        except CorruptRecordError:
            pass
        self._write_epochs()
        self._publish()

    # -- shared state -----------------------------------------------------------------------
    def refresh(self) -> LogEndState:
        """Re-read the published log end, as another process may have changed the log."""
        state = self._sf().read_log_end()
        if state is None:
            raise CorruptRecordError(f"replica state in {self.directory} is damaged; recovery needed")
        self.state = state
        self._tail_checked = False
        self._sync_segments()
        self._sync_epochs()
        return state

    def _publish(self) -> None:
        st = self.state
        self._sf().write_log_end(st)
        self._view = (st.generation, st.active_base_offset, st.log_start_offset)
        self._tail_checked = True

    def _sync_segments(self) -> None:
        """Bring the list of segments (and the open files) in line with the published state."""
        st = self.state
        view = (st.generation, st.active_base_offset, st.log_start_offset)
        if view == self._view:
            return
        if view[0] != self._view[0]:
            # bytes were removed: files we hold open may have been deleted and made anew
            for seg in self._segments.values():
                seg.close()
            self._segments.clear()
        bases = _visible_bases(self.directory, st)
        for base in list(self._segments):
            if base not in bases:
                self._segments.pop(base).close()
        self._bases = bases
        self._view = view

    def _segment(self, base: int) -> LogSegment:
        seg = self._segments.get(base)
        if seg is None:
            seg = LogSegment(self.directory, base)
            self._segments[base] = seg
        return seg

    def _sync_epochs(self) -> None:
        st = self.state
        key = (st.latest_epoch, st.latest_epoch_start, st.generation, st.log_start_offset)
        if key == self._epochs_key:
            return
        try:
            entries = read_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE))
            published = _published_epochs(entries, st)
        except CorruptRecordError:
            published = None
        self._epochs = _scan_epochs(self.directory, self._bases, st) if published is None else published
        self._epochs_key = key

    def _write_epochs(self) -> None:
        write_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE), self._epochs)
        self._note_epochs()

    def _note_epochs(self) -> None:
        st = self.state
        st.latest_epoch, st.latest_epoch_start = self._epochs[-1] if self._epochs else (-1, -1)
        self._epochs_key = (st.latest_epoch, st.latest_epoch_start, st.generation, st.log_start_offset)

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
    def _drop_unpublished_tail(self, seg: LogSegment, *, force: bool = False) -> None:
        """Cut what a killed writer left past the published end of the active segment.

        Skipped while this process is the last one to have published (nothing can be there).
        """
        if self._tail_checked and not force:
            return
        st = self.state
        if seg.log_size() != st.active_size:
            seg.truncate_log(st.active_size)
        if not (os.path.exists(seg.index_path) and os.path.exists(seg.time_index_path)):
            # an index was deleted under us: start both again empty (lookups then scan)
            seg.close()
            seg.create()
            st.index_entries = st.time_index_entries = st.bytes_since_index = 0
            st.last_time_index_timestamp = -1
        if os.fstat(seg.index_fd).st_size != st.index_entries * 8:
            seg.truncate_index(st.index_entries)
        if os.fstat(seg.time_fd).st_size != st.time_index_entries * 12:
            seg.truncate_time_index(st.time_index_entries)
        self._tail_checked = True

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

    def _seal(self, seg: LogSegment, st: LogEndState) -> None:
        """Close the time index of a segment that stops being active: a final entry with its
        max timestamp, as Kafka writes on roll."""
        if st.max_timestamp > st.last_time_index_timestamp and st.max_timestamp >= 0:
            seg.append_time_index(st.time_index_entries, st.max_timestamp,
                                  st.offset_of_max_timestamp - seg.base_offset)

    def _roll_to(self, base_offset: int, now_ms: int) -> LogSegment:
        st = self.state
        self._seal(self._segment(st.active_base_offset), st)
        # a writer killed while rolling may have left segments past the active one: they are
        # not part of the log, and must not become part of it now
        for base in list_segment_bases(self.directory):
            if base > st.active_base_offset:
                self._segments.pop(base, self._segment(base)).delete()
        seg = self._segment(base_offset)
        seg.create(fresh=True)
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
            try:
                self._drop_unpublished_tail(self._segment(self.state.active_base_offset))
                self._tail_checked = False
                self._roll_to(self.state.log_end_offset, _now_ms())
                self._publish()
            except BaseException:
                self._reload()
                raise

    def _index_batch(self, seg: LogSegment, last_offset: int, size: int, max_timestamp: int,
                     position: int) -> None:
        """Index bookkeeping for one batch about to be written at ``position`` in ``seg``:
        Kafka's sparse entries, one per ``index.interval.bytes`` written."""
        st = self.state
        if st.bytes_since_index > self.config.index_interval_bytes:
            seg.append_index(st.index_entries, last_offset - seg.base_offset, position)
            st.index_entries += 1
            st.bytes_since_index = 0
            if st.max_timestamp > st.last_time_index_timestamp:
                seg.append_time_index(st.time_index_entries, st.max_timestamp,
                                      st.offset_of_max_timestamp - seg.base_offset)
                st.time_index_entries += 1
                st.last_time_index_timestamp = st.max_timestamp
        st.bytes_since_index += size
        if max_timestamp > st.max_timestamp:
            st.max_timestamp = max_timestamp
            st.offset_of_max_timestamp = last_offset

    def _reload(self) -> None:
        """After a failed change: forget the in-memory state, take the published one again."""
        self._tail_checked = False
        state = self._sf().read_log_end()
        if state is not None:
            self.state = state
            self._view = (-1, -1, -1)
            self._epochs_key = ()
            self._sync_segments()
            self._sync_epochs()

    def append(self, batch: bytes | bytearray, *, leader_epoch: int, now_ms: int | None = None) -> AppendInfo:
        """Leader append of one producer batch: assign offsets and stamp the leader epoch.

        The batch must be whole and pass its CRC (a damaged batch stored by the leader would
        stop every follower). Caller holds the append lock and has called :meth:`refresh`.
        """
        size = len(batch)
        if size > self.config.max_message_bytes:
            raise RecordTooLargeError(
                f"batch of {size} bytes exceeds max.message.bytes={self.config.max_message_bytes}")
        header = read_header(batch, 0)
        if header.size != size:
            raise CorruptRecordError("append takes exactly one whole batch")
        if not crc_ok(batch, 0, header):
            raise CorruptRecordError(f"batch of {header.records_count} records fails its CRC-32C check")
        now = now_ms if now_ms is not None else _now_ms()
        st = self.state
        base = st.log_end_offset
        last = base + header.last_offset_delta
        try:
            self._drop_unpublished_tail(self._segment(st.active_base_offset))
            self._tail_checked = False
            seg = self._maybe_roll(size, base, last, now)
            head = bytearray(batch[:HEADER_SIZE])
            restamp(head, 0, base, leader_epoch)
            position = st.active_size
            self._index_batch(seg, last, size, header.max_timestamp, position)
            seg.write_parts(position, head, memoryview(batch)[HEADER_SIZE:])
            st.active_size += size
            st.log_end_offset = last + 1
            if _assign_epoch(self._epochs, leader_epoch, base):
                self._write_epochs()
            self._publish()
        except BaseException:
            self._reload()
            raise
        return AppendInfo(base, last, -1, st.log_start_offset, [position])

    def append_replicated(self, data: bytes | bytearray | memoryview, *, verify: bool = True,
                          now_ms: int | None = None) -> int:
        """Follower append of whole batches that already carry offsets and epochs.

        Batches must continue the log exactly (first base offset == log end offset, each next
        one where the previous ended). The whole chunk is checked before anything is written.
        Returns the new log end offset. Caller holds the append lock and has called
        :meth:`refresh`.
        """
        view = memoryview(data)
        now = now_ms if now_ms is not None else _now_ms()
        st = self.state
        headers: list[tuple[int, BatchHeader]] = []
        pos = 0
        expected = st.log_end_offset
        total = len(view)
        while pos < total:
            if total - pos < HEADER_SIZE:
                raise CorruptRecordError("replicated data ends in a partial batch header")
            header = read_header(view, pos)
            if pos + header.size > total:
                raise CorruptRecordError("replicated data ends in a partial batch")
            if verify and not crc_ok(view, pos, header):
                raise CorruptRecordError(f"replicated batch at offset {header.base_offset} failed its CRC")
            if header.base_offset != expected:
                raise CorruptRecordError(
                    f"replicated batch at offset {header.base_offset} does not continue the log "
                    f"(log end offset {expected})")
            headers.append((pos, header))
            expected = header.next_offset
            pos += header.size
        if not headers:
            return st.log_end_offset
        try:
            seg = self._segment(st.active_base_offset)
            self._drop_unpublished_tail(seg)
            self._tail_checked = False
            run_start = 0
            run_pos = st.active_size
            epochs_changed = False
            for pos, header in headers:
                new_seg = self._maybe_roll(header.size, header.base_offset, header.last_offset, now)
                if new_seg is not seg:
                    if pos > run_start:
                        seg.write(run_pos, view[run_start:pos])
                    seg = new_seg
                    run_start = pos
                    run_pos = 0
                self._index_batch(seg, header.last_offset, header.size, header.max_timestamp, st.active_size)
                st.active_size += header.size
                st.log_end_offset = header.next_offset
                if _assign_epoch(self._epochs, header.partition_leader_epoch, header.base_offset):
                    epochs_changed = True
            if total > run_start:
                seg.write(run_pos, view[run_start:total])
            if epochs_changed:
                self._write_epochs()
            self._publish()
        except BaseException:
            self._reload()
            raise
        return st.log_end_offset

    # -- truncation -------------------------------------------------------------------------
    def truncate_to(self, offset: int) -> None:
        """Remove every batch at or after ``offset`` (a whole batch straddling it goes too).

        If that removes the batch holding the log start, the log is left empty at the log
        start (:meth:`truncate_fully`): its end never falls below its start, nor leaves a gap.
        """
        st = self.state
        if offset >= st.log_end_offset:
            return
        if offset > st.log_start_offset:
            found = self._find_batch(offset)
            if found is not None and found.base_offset < st.log_start_offset:
                offset = st.log_start_offset
        if offset <= st.log_start_offset:
            self.truncate_fully(st.log_start_offset)
            return
        try:
            bases = [b for b in self._bases if b <= offset] or [self._bases[0]]
            target_base = bases[-1]
            for base in list_segment_bases(self.directory):
                if base > target_base:
                    self._segments.pop(base, self._segment(base)).delete()
            self._bases = [b for b in self._bases if b <= target_base]
            seg = self._segment(target_base)
            end = st.active_size if target_base == st.active_base_offset else seg.log_size()
            st.generation += 1
            self._rebuild_segment_state(seg, end, stop_offset=offset)
            self._epochs = _epochs_within(self._epochs, st.log_start_offset, st.log_end_offset)
            self._write_epochs()
            self._publish()
        except BaseException:
            self._reload()
            raise

    def truncate_fully(self, start_offset: int) -> None:
        """Delete every segment and restart the log empty at ``start_offset`` (a follower that
        fell behind the leader's log start). The leader-epoch cache starts empty too."""
        generation = self.state.generation + 1
        for base in list_segment_bases(self.directory):
            self._segments.pop(base, self._segment(base)).delete()
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()
        seg = self._segment(start_offset)
        seg.create(fresh=True)
        self._bases = [start_offset]
        self.state = LogEndState(log_end_offset=start_offset, log_start_offset=start_offset,
                                 active_base_offset=start_offset, active_created_ms=_now_ms(),
                                 generation=generation)
        self._epochs = []
        self._write_epochs()
        self._publish()

    def _rebuild_segment_state(self, seg: LogSegment, end: int, stop_offset: int | None = None) -> int:
        """Rescan ``seg`` as the active segment: rebuild both indexes and the log-end state.

        Every batch is checked: its CRC, its size, and that its base offset is exactly where the
        previous batch ended (the base offset lies outside the CRC, and this log has no gaps).
        Stops at the first that fails, at a torn tail, or at ``stop_offset``; truncates the file
        there and returns the number of bytes dropped.
        """
        st = self.state
        seg.create()  # an index file may be missing
        st.active_base_offset = seg.base_offset
        st.active_size = 0
        st.index_entries = st.time_index_entries = st.bytes_since_index = 0
        st.max_timestamp = st.offset_of_max_timestamp = st.last_time_index_timestamp = -1
        st.log_end_offset = max(seg.base_offset, st.log_start_offset)
        seg.truncate_index(0)
        seg.truncate_time_index(0)
        valid_end = 0
        expected = seg.base_offset
        try:
            for pos, header, data in _checked_batches(seg, end):
                if stop_offset is not None and header.last_offset >= stop_offset:
                    break
                if header.base_offset != expected or not crc_ok(data, 0, header):
                    break
                self._index_batch(seg, header.last_offset, header.size, header.max_timestamp, pos)
                _assign_epoch(self._epochs, header.partition_leader_epoch, header.base_offset)
                valid_end = st.active_size = pos + header.size
                st.log_end_offset = expected = header.next_offset
        except CorruptRecordError:
            pass
        actual = seg.log_size()
        if actual != valid_end:
            seg.truncate_log(valid_end)
        st.active_created_ms = _now_ms()
        return max(0, actual - valid_end)

    def _reindex_sealed(self, seg: LogSegment, end: int) -> None:
        """Rebuild the indexes of a segment that is not the active one (its data is kept)."""
        saved, saved_epochs = self.state, self._epochs
        self.state = LogEndState(log_start_offset=saved.log_start_offset)
        self._epochs = []
        try:
            seg.create()  # an index file may be missing
            seg.truncate_index(0)
            seg.truncate_time_index(0)
            try:
                for pos, header in seg.batches(0, end):
                    self._index_batch(seg, header.last_offset, header.size, header.max_timestamp, pos)
            except CorruptRecordError:
                pass
            self._seal(seg, self.state)
        finally:
            self.state, self._epochs = saved, saved_epochs

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, recovery_point: int | None = None) -> int:
        """Validate segments from the one holding ``recovery_point`` (all, if None); truncate a
        torn or corrupt tail, delete every segment after it, rebuild indexes, the log-end state
        and the leader-epoch cache. Segments before the recovery point are trusted, their
        indexes checked. Returns the number of bytes truncated."""
        sf = self._sf(create=True)
        old = sf.read_log_end()
        # readers compare generations: one they may hold must not come back by chance
        generation = old.generation + 1 if old is not None else time.time_ns() // 1000
        for seg in self._segments.values():
            seg.close()
        self._segments.clear()
        bases = list_segment_bases(self.directory)
        log_start = old.log_start_offset if old is not None else (bases[0] if bases else 0)
        if not bases:
            start = max(log_start, recovery_point or 0)
            LogSegment(self.directory, start).create(fresh=True)
            bases = [start]
        if log_start < bases[0] or log_start > bases[-1] + (1 << 31):
            log_start = bases[0]
        first = 0
        if recovery_point is not None:
            first = max(0, len([b for b in bases if b <= recovery_point]) - 1)
        try:
            entries = read_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE))
            cached = _published_epochs(entries, old) if old is not None else None
        except CorruptRecordError:
            cached = None
        if cached is None:
            # a damaged checkpoint, or one the state does not vouch for: rebuild it all
            cached = []
            first = 0
        # epochs of data below the first segment scanned (deleted, or trusted) come from the
        # checkpoint; the scan assigns the rest
        self._epochs = [(e, s) for (e, s) in cached if s < bases[first]]
        self.state = LogEndState(log_start_offset=log_start, generation=generation)
        self._bases = bases
        truncated = 0
        previous: LogSegment | None = None
        for i in range(first, len(bases)):
            seg = self._segment(bases[i])
            if previous is not None:
                if bases[i] != self.state.log_end_offset:
                    # a gap or an overlap (a segment a killed roll left behind): not the log
                    truncated += self._delete_from(i)
                    break
                self._seal(previous, self.state)
            dropped = self._rebuild_segment_state(seg, seg.log_size())
            previous = seg
            if dropped:
                truncated += dropped + self._delete_from(i + 1)
                break
        st = self.state
        st.active_created_ms = _now_ms()
        st.log_start_offset = min(max(st.log_start_offset, self._bases[0]), st.log_end_offset)
        self._epochs = _epochs_within(self._epochs, st.log_start_offset, st.log_end_offset)
        self._write_epochs()
        self._publish()
        self._check_segments(first)
        return truncated

    def _delete_from(self, index: int) -> int:
        """Delete the segments from ``self._bases[index]`` on; returns their bytes."""
        dropped = 0
        for base in self._bases[index:]:
            seg = self._segments.pop(base, None) or LogSegment(self.directory, base)
            try:
                dropped += seg.log_size()
            except FileNotFoundError:
                pass
            seg.delete()
        self._bases = self._bases[:index]
        return dropped

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
                max_ts = self._segment_max_timestamp(seg, size, next_base)
                expired = max_ts >= 0 and now - max_ts > cfg.retention_ms
            too_big = cfg.retention_bytes >= 0 and total - size >= cfg.retention_bytes
            if not (expired or too_big):
                break
            deleted.append(base)
            total -= size
        if deleted:
            self._advance_log_start(bases[len(deleted)], deleted)
        return deleted

    def delete_segments_below(self, offset: int) -> list[int]:
        """Advance the log start to ``offset`` and delete segments wholly below it (a follower
        mirroring its leader's retention)."""
        offset = min(offset, self.state.log_end_offset)
        if offset <= self.state.log_start_offset:
            return []
        deleted = [base for i, base in enumerate(self._bases[:-1]) if self._bases[i + 1] <= offset]
        self._advance_log_start(offset, deleted)
        return deleted

    def _advance_log_start(self, start: int, deleted: list[int]) -> None:
        """Publish the new log start first (readers stop asking for what goes), then delete."""
        st = self.state
        st.log_start_offset = max(st.log_start_offset, start)
        self._publish()
        for base in deleted:
            self._segments.pop(base, self._segment(base)).delete()
        if deleted:
            self._bases = [b for b in self._bases if b not in deleted]
        epochs = _epochs_within(self._epochs, st.log_start_offset, st.log_end_offset)
        if epochs != self._epochs:
            self._epochs = epochs
            self._write_epochs()
        else:
            self._note_epochs()
        self._publish()

    def set_log_start_offset(self, offset: int) -> None:
        """Advance the log start offset (e.g. a follower mirroring its leader's)."""
        if offset > self.state.log_start_offset:
            self.state.log_start_offset = min(offset, self.state.log_end_offset)
            self._epochs = _epochs_within(self._epochs, self.state.log_start_offset, self.state.log_end_offset)
            self._write_epochs()
            self._publish()

    def _segment_max_timestamp(self, seg: LogSegment, size: int, next_base: int) -> int:
        """A sealed segment's max timestamp: its last time-index entry, once the batch that
        entry names confirms it; else from the batch headers."""
        try:
            count = os.fstat(seg.time_fd).st_size // TIME_ENTRY.size
        except FileNotFoundError:
            count = 0
        if count:
            ts, rel = TIME_ENTRY.unpack(os.pread(seg.time_fd, TIME_ENTRY.size, (count - 1) * TIME_ENTRY.size))
            found = seg.find_batch(seg.base_offset + rel, size) if 0 <= rel < next_base - seg.base_offset else None
            if found is not None and found[1].last_offset == seg.base_offset + rel \
                    and found[1].max_timestamp == ts:
                return ts
        best = -1
        try:
            for _pos, header in seg.batches(0, size):
                best = max(best, header.max_timestamp)
        except CorruptRecordError:
            pass
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
        found = self._find_batch(offset)
        if found is None or found.base_offset > offset:
            return None
        return found

    def _find_batch(self, offset: int) -> BatchHeader | None:
        """The header of the batch holding ``offset`` (or the first after it) in its segment."""
        st = self.state
        bases = [b for b in self._bases if b <= offset]
        if not bases:
            return None
        seg = self._segment(bases[-1])
        active = seg.base_offset == st.active_base_offset
        end = st.active_size if active else seg.log_size()
        found = seg.find_batch(offset, end, st.index_entries if active else None)
        return found[1] if found is not None else None

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        """The first offset (at or after the log start) whose record timestamp is >= ``timestamp``
        (Kafka's ListOffsets by time); None if there is none."""
        return LogReader.offset_for_timestamp_in(self.directory, self._bases, self.state, timestamp)


def _checked_batches(seg: LogSegment, end: int, chunk: int = 1 << 20):
    """(position, header, batch bytes) for each whole batch in [0, end), read in large chunks."""
    pos = 0
    while pos + HEADER_SIZE <= end:
        buf = seg.read(pos, min(chunk, end - pos))
        if len(buf) < HEADER_SIZE:
            return
        off = 0
        view = memoryview(buf)
        while off + HEADER_SIZE <= len(buf):
            header = read_header(buf, off)
            if off + header.size > len(buf):
                break
            yield pos + off, header, view[off:off + header.size]
            off += header.size
        if off == 0:
            header = read_header(buf, 0)
            if pos + header.size > end:
                return
            data = seg.read(pos, header.size)
            if len(data) < header.size:
                return
            yield pos, header, data
            off = header.size
        pos += off


class LogReader:
    """A cursor over a replica's batches for a reader in any process; takes no lock.

    It reads only below the published log end, follows rolls into the next segment and
    re-seeks when the log was truncated (the generation moved) or its segments deleted under it.
    A read that raced with a truncation is thrown away and done again, never returned.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._sf = ReplicaStateFile(directory)
        self._segment: LogSegment | None = None
        self._position = 0
        self._generation = -1
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
        """The leader's epoch cache as published; rebuilt from batch headers if the checkpoint
        is damaged."""
        state = self.log_end()
        try:
            entries = read_leader_epoch_checkpoint(os.path.join(self.directory, LEADER_EPOCH_FILE))
            published = _published_epochs(entries, state)
        except CorruptRecordError:
            published = None
        if published is None:
            return _scan_epochs(self.directory, _visible_bases(self.directory, state), state)
        return published

    def seek(self, offset: int, state: LogEndState | None = None) -> None:
        """Put the cursor on the batch holding ``offset``; OffsetOutOfRangeError outside
        [log start, log end]."""
        for _attempt in range(5):
            st = state or self.log_end()
            state = None
            if offset < st.log_start_offset or offset > st.log_end_offset:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside the log [{st.log_start_offset}, {st.log_end_offset})")
            try:
                self._seek(offset, st)
                return
            except FileNotFoundError:
                continue  # retention or truncation removed the segment: look again
        raise OffsetOutOfRangeError(f"offset {offset}: the log keeps changing under the reader")

    def _seek(self, offset: int, st: LogEndState) -> None:
        bases = _visible_bases(self.directory, st)
        below = [b for b in bases if b <= offset]
        base = below[-1] if below else (bases[0] if bases else st.active_base_offset)
        if self._segment is not None:
            self._segment.close()
            self._segment = None
        # always a fresh handle: after a truncation the file of this name may be a new one
        seg = LogSegment(self.directory, base)
        try:
            active = base == st.active_base_offset
            end = st.active_size if active else seg.log_size()
            found = seg.find_batch(offset, end, st.index_entries if active else None)
        except BaseException:
            seg.close()
            raise
        self._segment = seg
        # with nothing at or after offset in this segment, sit at its end (the next read rolls on)
        self._position = found[0] if found else end
        self.next_offset = offset
        self._generation = st.generation

    def read(self, max_offset: int, max_bytes: int = 1 << 20
             ) -> tuple[bytes, list[tuple[int, BatchHeader]]]:
        """Whole batches from the cursor that start below ``max_offset``, at most ``max_bytes``
        (but at least one batch). Returns (chunk, [(position in chunk, header)]).

        OffsetOutOfRangeError when the cursor is below the log start (retention) or past the
        log end (truncation); CorruptRecordError when the published bytes are not batches.
        """
        for _attempt in range(5):
            try:
                return self._read(max_offset, max_bytes)
            except (FileNotFoundError, _Reseek):
                self.seek(self.next_offset)
        return b"", []

    def _read(self, max_offset: int, max_bytes: int) -> tuple[bytes, list[tuple[int, BatchHeader]]]:
        if self._segment is None:
            self.seek(self.next_offset)
        st = self.log_end()
        if st.generation != self._generation:
            raise _Reseek
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
            if self._position < end:
                break
            if seg.base_offset == st.active_base_offset:
                return b"", []
            nxt = [b for b in list_segment_bases(self.directory) if seg.base_offset < b <= st.active_base_offset]
            if not nxt:
                raise _Reseek
            seg.close()
            seg = self._segment = LogSegment(self.directory, nxt[0])
            self._position = 0
        chunk = seg.read(self._position, min(max(max_bytes, HEADER_SIZE), end - self._position))
        headers: list[tuple[int, BatchHeader]] = []
        off = 0
        try:
            while off + HEADER_SIZE <= len(chunk):
                header = read_header(chunk, off)
                if header.base_offset >= max_offset:
                    break
                if off + header.size > len(chunk):
                    if headers:
                        break
                    if self._position + header.size > end:
                        raise CorruptRecordError(
                            f"batch at {seg.log_path}:{self._position} runs past the published end {end}")
                    chunk = seg.read(self._position, header.size)
                    if len(chunk) < header.size:
                        raise _Reseek
                headers.append((off, header))
                off += header.size
        except CorruptRecordError:
            self._check_unchanged(st)
            raise
        # the bytes are only good if no truncation happened while we read them
        self._check_unchanged(st)
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

    def _check_unchanged(self, st: LogEndState) -> None:
        again = self._sf.read_log_end()
        if again is None or again.generation != st.generation:
            raise _Reseek

    @staticmethod
    def offset_for_timestamp_in(directory: str, bases: list[int], state: LogEndState, timestamp: int
                                ) -> int | None:
        """The first offset at or after the log start whose record timestamp is >= ``timestamp``:
        the first batch whose max timestamp reaches it, then the first such record in it."""
        for base in bases:
            if base > state.active_base_offset:
                break
            seg = LogSegment(directory, base)
            try:
                end = state.active_size if base == state.active_base_offset else seg.log_size()
                for pos, header in seg.batches(0, end):
                    if header.next_offset <= state.log_start_offset or header.max_timestamp < timestamp:
                        continue
                    found = _first_record_at(seg, pos, header, timestamp, state.log_start_offset)
                    if found is not None:
                        return found
            except FileNotFoundError:
                continue
            finally:
                seg.close()
        return None

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        st = self.log_end()
        return self.offset_for_timestamp_in(self.directory, _visible_bases(self.directory, st), st, timestamp)


def _first_record_at(seg: LogSegment, pos: int, header: BatchHeader, timestamp: int, log_start: int
                     ) -> int | None:
    """The first record offset >= ``log_start`` with a timestamp >= ``timestamp`` in the batch
    at ``pos``; the batch's first such offset if its records cannot be read."""
    first = max(header.base_offset, log_start)
    try:
        _h, records = decode_batch(seg.read(pos, header.size), 0)
    except CorruptRecordError:
        return first
    for record in records:
        if record.offset >= log_start and record.timestamp >= timestamp:
            return record.offset
    return None


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
