"""The log cleaner: Kafka's compaction of a ``cleanup.policy=compact`` replica.

Kafka's rules, kept here:

* only the latest record of each key survives (the highest offset below ``clean_upto``, the
  high watermark: a record above it may still be truncated away, so it cannot supersede anything);
* offsets never change and order is preserved: a batch is rewritten with the records it keeps,
  each with its original offset delta, and a batch that loses every record stays as an empty
  batch (count 0, same base offset and lastOffsetDelta, as Kafka can leave one), so consecutive
  batches still meet end to end and readers, followers and recovery need no gap handling;
* the active segment is never cleaned, nor a segment that reaches past ``clean_upto``;
* a tombstone (null value) is kept for ``delete.retention.ms`` after its batch's max timestamp,
  so consumers get to see the delete, then dropped; a record without a key is dropped (Kafka
  refuses them on compacted topics and its cleaner discards any it finds);
* a pass runs when the dirty ratio (bytes written since the last pass over all cleanable bytes)
  exceeds ``min.cleanable.dirty.ratio``. Where the dirty part starts (Kafka's
  ``firstDirtyOffset``) is kept per replica in ``cleaner-offset-checkpoint`` in the replica
  directory, in Kafka's offsets checkpoint format.

The key -> latest offset map covers every record below ``clean_upto``, including those in
segments that are not cleaned (the active one), so a pass is always correct on its own; segments
that would not change are not rewritten.

Crash safety of the swap. Each rewritten segment is written to ``<base>.log.cleaned`` (and
``.index.cleaned``, ``.timeindex.cleaned``), fsynced, renamed to ``.swap`` (the log last: a
``.log.swap`` means the set is complete), then each ``.swap`` is renamed over the live file (the
log last). A reader holding the old file keeps reading the old inode, whose bytes are intact; a
reader that opens the file anew gets the new one. An index that does not match its log (a reader
that opened one before and one after a rename) costs a scan, never a wrong answer
(:meth:`LogSegment.find_batch` checks every entry it uses). A pass interrupted by a crash is
completed or discarded by the next one (:func:`finish_interrupted_swaps`). After the swap the log's
generation goes up, as after any removal of published bytes, so that every process drops the
file handles it holds and readers re-seek (to the same offsets).

Concurrency contract: :func:`clean_log` changes the log, so the caller holds the replica's append
lock and has called :meth:`Log.refresh`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from kctl.errors import CorruptRecordError
from kctl.storage.checkpoint import read_offsets_checkpoint, write_offsets_checkpoint
from kctl.storage.log import Log
from kctl.storage.records import HEADER_SIZE, BatchHeader, decode_batch, encode_batch_with_deltas, read_header
from kctl.storage.segment import INDEX_ENTRY, TIME_ENTRY, LogSegment, segment_name

CLEANER_CHECKPOINT_FILE = "cleaner-offset-checkpoint"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
_FILE_SUFFIXES = (".index", ".timeindex", ".log")  # the order of every rename: the log last


@dataclass
class CleanResult:
    """What one cleaning pass did."""

    segments: list[int] = field(default_factory=list)
    """Base offsets of the segments rewritten."""
    first_dirty_offset: int = 0
    """Where the next pass starts counting dirty bytes (the end of the range cleaned)."""
    dirty_ratio: float = 0.0
    """The dirty ratio before the pass."""
    records_read: int = 0
    records_removed: int = 0
    """Superseded records and records without a key."""
    tombstones_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


# -- the checkpoint ---------------------------------------------------------------------------
def _topic_partition(directory: str) -> tuple[str, int]:
    """(topic, partition) from a replica directory named ``<topic>-<partition>``."""
    name = os.path.basename(os.path.normpath(directory))
    topic, _, partition = name.rpartition("-")
    if topic and partition.isdigit() and not any(ch.isspace() for ch in topic):
        return topic, int(partition)
    return "".join(ch if not ch.isspace() else "_" for ch in name) or "log", 0


def read_first_dirty_offset(directory: str) -> int | None:
    """The replica's ``firstDirtyOffset`` from its cleaner checkpoint; None if never cleaned."""
    path = os.path.join(directory, CLEANER_CHECKPOINT_FILE)
    try:
        offsets = read_offsets_checkpoint(path)
    except CorruptRecordError:
        return None  # a damaged checkpoint only makes the next pass consider everything dirty
    return offsets.get(_topic_partition(directory))


def write_first_dirty_offset(directory: str, offset: int) -> None:
    write_offsets_checkpoint(os.path.join(directory, CLEANER_CHECKPOINT_FILE),
                             {_topic_partition(directory): offset})


# -- what may be cleaned ----------------------------------------------------------------------
def cleanable_segments(log: Log, clean_upto: int) -> list[tuple[int, int]]:
    """(base, next base) of each sealed segment that lies wholly below ``clean_upto``."""
    bases = log.segment_bases
    active = log.state.active_base_offset
    out = []
    for i, base in enumerate(bases[:-1]):
        nxt = bases[i + 1]
        if base >= active or nxt > clean_upto or nxt > active:
            break
        out.append((base, nxt))
    return out


def _first_dirty(log: Log) -> int:
    """The checkpointed first dirty offset, ignored when the log no longer reaches it (it was
    truncated or recreated) and never below the log start."""
    st = log.state
    found = read_first_dirty_offset(log.directory)
    if found is None or found > st.log_end_offset:
        return st.log_start_offset
    return max(found, st.log_start_offset)


def dirty_ratio(log: Log, clean_upto: int) -> float:
    """Kafka's cleanable ratio: dirty bytes / (clean + dirty bytes) over the cleanable segments,
    where dirty means at or after the first dirty offset. 0.0 with nothing to clean."""
    first_dirty = _first_dirty(log)
    clean = dirty = 0
    for base, nxt in cleanable_segments(log, clean_upto):
        try:
            size = os.path.getsize(LogSegment(log.directory, base).log_path)
        except OSError:
            continue
        if nxt <= first_dirty:
            clean += size
        else:
            dirty += size
    total = clean + dirty
    return dirty / total if total else 0.0


# -- reading ----------------------------------------------------------------------------------
def _batches(seg: LogSegment, end: int, chunk: int = 1 << 20) -> Iterator[tuple[int, BatchHeader, bytes]]:
    """(position, header, batch bytes) for each whole batch in [0, end), read in large chunks."""
    pos = 0
    while pos + HEADER_SIZE <= end:
        buf = seg.read(pos, min(chunk, end - pos))
        off = 0
        while off + HEADER_SIZE <= len(buf):
            header = read_header(buf, off)
            if off + header.size > len(buf):
                break
            yield pos + off, header, buf[off:off + header.size]
            off += header.size
        if off == 0:  # one batch larger than the chunk
            header = read_header(buf, 0)
            if pos + header.size > end:
                return
            yield pos, header, seg.read(pos, header.size)
            off = header.size
        pos += off


def _segment_end(log: Log, seg: LogSegment) -> int:
    st = log.state
    return st.active_size if seg.base_offset == st.active_base_offset else seg.log_size()


def _latest_offsets(log: Log, clean_upto: int) -> dict[bytes, int]:
    """key -> offset of its latest record, over every record below ``clean_upto``."""
    latest: dict[bytes, int] = {}
    for base in log.segment_bases:
        if base >= clean_upto:
            break
        seg = LogSegment(log.directory, base)
        try:
            for _pos, header, raw in _batches(seg, _segment_end(log, seg)):
                if header.base_offset >= clean_upto:
                    break
                if header.is_control:
                    continue
                for record in decode_batch(raw)[1]:
                    if record.offset >= clean_upto:
                        break
                    if record.key is not None:
                        latest[record.key] = record.offset
        finally:
            seg.close()
    return latest


# -- writing ----------------------------------------------------------------------------------
class _IndexBuilder:
    """Kafka's sparse offset index and time index for a segment written from scratch (the same
    rules as an append: an entry once more than ``index.interval.bytes`` went by, a time entry
    whenever the max timestamp grew, a last time entry on sealing)."""

    def __init__(self, base_offset: int, interval: int) -> None:
        self.base = base_offset
        self.interval = interval
        self.index = bytearray()
        self.time_index = bytearray()
        self.bytes_since = 0
        self.max_timestamp = -1
        self.offset_of_max = -1
        self.last_time_entry = -1

    def add(self, position: int, header: BatchHeader, size: int) -> None:
        if self.bytes_since > self.interval:
            self.index += INDEX_ENTRY.pack(header.last_offset - self.base, position)
            self.bytes_since = 0
            self._time_entry()
        self.bytes_since += size
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self.offset_of_max = header.last_offset

    def _time_entry(self) -> None:
        if self.max_timestamp > self.last_time_entry and self.max_timestamp >= 0:
            self.time_index += TIME_ENTRY.pack(self.max_timestamp, self.offset_of_max - self.base)
            self.last_time_entry = self.max_timestamp

    def seal(self) -> None:
        self._time_entry()


def _write_file(path: str, data: bytes | bytearray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stem(directory: str, base: int) -> str:
    return os.path.join(directory, segment_name(base))


def _swap_in(directory: str, base: int) -> None:
    """Rename a complete ``.swap`` set over the live files, the log last."""
    stem = _stem(directory, base)
    for suffix in _FILE_SUFFIXES:
        try:
            os.replace(stem + suffix + SWAP_SUFFIX, stem + suffix)
        except FileNotFoundError:
            pass  # renamed before a crash


def finish_interrupted_swaps(directory: str) -> list[int]:
    """Complete or discard what a pass killed in the middle left behind; returns the bases
    whose swap was completed.

    A ``.log.swap`` means its set was complete: rename what is left of it over the live files
    (if the segment is still part of the log). Anything else (``.cleaned`` files, a partial
    ``.swap`` set, a set for a segment retention has deleted since) is thrown away.
    """
    completed: list[int] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return completed
    for name in names:
        if name.endswith(".log" + SWAP_SUFFIX):
            stem = name[: -len(".log" + SWAP_SUFFIX)]
            if len(stem) == 20 and stem.isdigit() and os.path.exists(os.path.join(directory, stem + ".log")):
                _swap_in(directory, int(stem))
                completed.append(int(stem))
    for name in os.listdir(directory):
        if name.endswith((CLEANED_SUFFIX, SWAP_SUFFIX)) and name[:20].isdigit():
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
    if completed:
        _fsync_dir(directory)
    return sorted(completed)


def _filter_segment(seg: LogSegment, end: int, latest: dict[bytes, int], now_ms: int, delete_retention_ms: int,
                    result: CleanResult) -> list[tuple[BatchHeader, bytes]] | None:
    """The batches of ``seg`` with what compaction removes taken out; None if nothing changes."""
    out: list[tuple[BatchHeader, bytes]] = []
    changed = False
    for _pos, header, raw in _batches(seg, end):
        if header.is_control:
            out.append((header, raw))
            continue
        records = decode_batch(raw)[1]
        result.records_read += len(records)
        tombstones_expire = now_ms - header.max_timestamp > delete_retention_ms
        kept = []
        for record in records:
            if record.key is None or latest.get(record.key, -1) > record.offset:
                result.records_removed += 1
            elif record.value is None and tombstones_expire:
                result.tombstones_removed += 1
            else:
                kept.append(record)
        if len(kept) == len(records):
            out.append((header, raw))
            continue
        changed = True
        batch = encode_batch_with_deltas(
            [(r.offset - header.base_offset, r.timestamp, r.key, r.value, r.headers) for r in kept],
            base_offset=header.base_offset, last_offset_delta=header.last_offset_delta,
            attributes=header.attributes, partition_leader_epoch=header.partition_leader_epoch,
            producer_id=header.producer_id, producer_epoch=header.producer_epoch,
            base_sequence=header.base_sequence,
            max_timestamp=header.max_timestamp if header.log_append_time or not kept else None)
        out.append((read_header(batch), batch))
    return out if changed else None


def _write_cleaned(directory: str, base: int, batches: list[tuple[BatchHeader, bytes]], interval: int) -> int:
    """Write the ``.cleaned`` set of one segment (fsynced); returns the new log size."""
    builder = _IndexBuilder(base, interval)
    position = 0
    for header, raw in batches:
        builder.add(position, header, len(raw))
        position += len(raw)
    builder.seal()
    stem = _stem(directory, base)
    _write_file(stem + ".log" + CLEANED_SUFFIX, b"".join(raw for _h, raw in batches))
    _write_file(stem + ".index" + CLEANED_SUFFIX, builder.index)
    _write_file(stem + ".timeindex" + CLEANED_SUFFIX, builder.time_index)
    return position


def _bump_generation(log: Log) -> None:
    """Bytes of published segments were removed: make every process drop the handles it holds
    (readers re-seek to the same offsets)."""
    st = log.state
    st.generation += 1
    log._sf().write_log_end(st)
    log.refresh()


def clean_log(log: Log, clean_upto: int, now_ms: int) -> CleanResult:
    """One cleaning pass over the sealed segments wholly below ``clean_upto`` (the high watermark).

    Caller holds the replica's append lock and has called :meth:`Log.refresh`. The topic configs
    come from ``log.config`` (``delete.retention.ms``). See the module docstring for the rules.
    """
    directory = log.directory
    result = CleanResult(first_dirty_offset=_first_dirty(log))
    finish_interrupted_swaps(directory)
    clean_upto = min(clean_upto, log.state.log_end_offset)
    segments = cleanable_segments(log, clean_upto)
    if not segments:
        return result
    result.dirty_ratio = dirty_ratio(log, clean_upto)
    latest = _latest_offsets(log, clean_upto)
    rewritten: list[int] = []
    try:
        for base, _next in segments:
            seg = LogSegment(directory, base)
            try:
                size = seg.log_size()
                result.bytes_before += size
                batches = _filter_segment(seg, size, latest, now_ms, log.config.delete_retention_ms, result)
            finally:
                seg.close()
            if batches is None:
                result.bytes_after += size
                continue
            result.bytes_after += _write_cleaned(directory, base, batches, log.config.index_interval_bytes)
            stem = _stem(directory, base)
            for suffix in _FILE_SUFFIXES:
                os.replace(stem + suffix + CLEANED_SUFFIX, stem + suffix + SWAP_SUFFIX)
            rewritten.append(base)
        if rewritten:
            _fsync_dir(directory)  # every set is complete on disk before any live file changes
            for base in rewritten:
                _swap_in(directory, base)
            _fsync_dir(directory)
    except BaseException:
        # complete sets are swapped in, the rest thrown away: the log is whole either way
        if finish_interrupted_swaps(directory):
            _bump_generation(log)
        raise
    if rewritten:
        _bump_generation(log)
    result.segments = rewritten
    result.first_dirty_offset = segments[-1][1]
    write_first_dirty_offset(directory, result.first_dirty_offset)
    return result
