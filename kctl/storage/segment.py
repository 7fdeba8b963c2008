"""LogSegment: one ``.log`` file of record batches plus its sparse ``.index`` and ``.timeindex``.

Files are named by the segment's base offset as 20-digit zero-padded decimal, as in Kafka.
Index entries use Kafka's layouts: ``.index`` holds 8-byte entries (int32 offset relative to the
base, int32 position of the batch start; the offset is the batch's *last* offset, as Kafka writes
it), ``.timeindex`` holds 12-byte entries (int64 max timestamp so far, int32 relative offset).
The indexes are hints: an entry is used only once the batch it names is found where it says, so
a damaged index costs a scan, never a wrong answer; readers never create a missing one.

Concurrency contract: a LogSegment never locks. Writers hold the replica's append lock; readers
read only bytes below the published log end (see :mod:`kctl.storage.log`), so they never see a
half-written batch.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from kctl.errors import CorruptRecordError
from kctl.storage.records import HEADER_SIZE, BatchHeader, read_header

INDEX_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")
LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
SNAPSHOT_SUFFIX = ".snapshot"


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


def parse_segment_name(filename: str) -> int | None:
    """Base offset of a ``<20 digits>.log`` file name, else None."""
    if not filename.endswith(LOG_SUFFIX):
        return None
    stem = filename[: -len(LOG_SUFFIX)]
    if len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def list_segment_bases(directory: str) -> list[int]:
    bases = []
    for name in os.listdir(directory):
        base = parse_segment_name(name)
        if base is not None:
            bases.append(base)
    bases.sort()
    return bases


class LogSegment:
    """Paths and file handles of one segment. Opened lazily; cheap to construct."""

    __slots__ = (
        "_index_fd",
        "_log_fd",
        "_time_fd",
        "base_offset",
        "directory",
        "index_path",
        "log_path",
        "time_index_path",
    )

    def __init__(self, directory: str, base_offset: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        stem = os.path.join(directory, segment_name(base_offset))
        self.log_path = stem + LOG_SUFFIX
        self.index_path = stem + INDEX_SUFFIX
        self.time_index_path = stem + TIMEINDEX_SUFFIX
        self._log_fd = -1
        self._index_fd = -1
        self._time_fd = -1

    # -- files ------------------------------------------------------------------------------
    def create(self, *, fresh: bool = False) -> None:
        """Create the files; existing ones are kept, or emptied with ``fresh``."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        for path in (self.log_path, self.index_path, self.time_index_path):
            fd = os.open(path, flags, 0o644)
            os.close(fd)

    @property
    def log_fd(self) -> int:
        if self._log_fd < 0:
            self._log_fd = os.open(self.log_path, os.O_RDWR)
        return self._log_fd

    @property
    def index_fd(self) -> int:
        """The offset index, opened on first use. Never created here (a reader must not make an
        empty index that then looks valid): :meth:`create` makes the files."""
        if self._index_fd < 0:
            self._index_fd = os.open(self.index_path, os.O_RDWR)
        return self._index_fd

    @property
    def time_fd(self) -> int:
        if self._time_fd < 0:
            self._time_fd = os.open(self.time_index_path, os.O_RDWR)
        return self._time_fd

    def close(self) -> None:
        for attr in ("_log_fd", "_index_fd", "_time_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, attr, -1)

    def log_size(self) -> int:
        return os.fstat(self.log_fd).st_size

    def flush(self) -> None:
        os.fsync(self.log_fd)
        try:
            os.fsync(self.index_fd)
            os.fsync(self.time_fd)
        except FileNotFoundError:
            pass  # a missing index is rebuilt from the log: nothing in it to keep

    def delete(self) -> None:
        self.close()
        for path in (self.log_path, self.index_path, self.time_index_path,
                     os.path.join(self.directory, segment_name(self.base_offset) + SNAPSHOT_SUFFIX)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # -- data -------------------------------------------------------------------------------
    def read(self, position: int, size: int) -> bytes:
        return os.pread(self.log_fd, size, position)

    def write(self, position: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.log_fd, view, position)
            view = view[n:]
            position += n

    def write_parts(self, position: int, head: bytes | bytearray, body: memoryview) -> None:
        """Write ``head`` then ``body`` at ``position`` in one syscall, without joining them."""
        n = os.pwritev(self.log_fd, (head, body), position)
        if n < len(head) + len(body):
            # a short write (a full disk, a signal): finish it piece by piece, or raise
            joined = memoryview(bytes(head) + bytes(body))
            self.write(position + n, joined[n:])

    def truncate_log(self, size: int) -> None:
        os.ftruncate(self.log_fd, size)

    # -- offset index -----------------------------------------------------------------------
    def index_entries(self, count: int | None = None) -> list[tuple[int, int]]:
        """(relative last offset, position) pairs; ``count`` bounds them to the published ones."""
        size = count * 8 if count is not None else os.fstat(self.index_fd).st_size
        data = os.pread(self.index_fd, size, 0)
        n = len(data) // 8
        return [INDEX_ENTRY.unpack_from(data, i * 8) for i in range(n)]

    def append_index(self, entry_number: int, relative_offset: int, position: int) -> None:
        os.pwrite(self.index_fd, INDEX_ENTRY.pack(relative_offset, position), entry_number * 8)

    def truncate_index(self, entries: int) -> None:
        os.ftruncate(self.index_fd, entries * 8)

    def lookup_position(self, offset: int, entries: int | None = None) -> int:
        """Position of a batch at or before the one holding ``offset`` (start of a forward scan).

        Binary search with one pread per probe, so a large index is never read whole.
        """
        found = self.lookup_entry(offset, entries)
        return found[1] if found is not None else 0

    def lookup_entry(self, offset: int, entries: int | None = None) -> tuple[int, int] | None:
        """The last index entry (relative last offset, position) of a batch ending before
        ``offset``, or None. The entry is what the file says: :meth:`find_batch` checks it."""
        try:
            fd = self.index_fd
        except FileNotFoundError:
            return None
        n = entries if entries is not None else os.fstat(fd).st_size // 8
        target = offset - self.base_offset
        lo, hi = 0, n - 1
        best: tuple[int, int] | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            raw = os.pread(fd, 8, mid * 8)
            if len(raw) < 8:
                hi = mid - 1
                continue
            rel, pos = INDEX_ENTRY.unpack(raw)
            if rel < target:
                # this batch ends before the target: the target's batch starts at or after the next
                best = (rel, pos)
                lo = mid + 1
            else:
                hi = mid - 1
        return best

    # -- time index -------------------------------------------------------------------------
    def append_time_index(self, entry_number: int, timestamp: int, relative_offset: int) -> None:
        os.pwrite(self.time_fd, TIME_ENTRY.pack(timestamp, relative_offset), entry_number * 12)

    def truncate_time_index(self, entries: int) -> None:
        os.ftruncate(self.time_fd, entries * 12)

    def time_entries(self, count: int | None = None) -> list[tuple[int, int]]:
        size = count * 12 if count is not None else os.fstat(self.time_fd).st_size
        data = os.pread(self.time_fd, size, 0)
        return [TIME_ENTRY.unpack_from(data, i * 12) for i in range(len(data) // 12)]

    # -- scanning ---------------------------------------------------------------------------
    def batches(self, start: int = 0, end: int | None = None, chunk: int = 1 << 20
                ) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) for whole batches in [start, end); stops at a torn tail
        (or where the file ends, if it is shorter than ``end``). A header that cannot be a
        batch's raises CorruptRecordError. CRCs are not checked.

        Reads in large chunks so that a scan costs few syscalls.
        """
        if end is None:
            end = self.log_size()
        pos = start
        while pos + HEADER_SIZE <= end:
            buf = self.read(pos, min(chunk, end - pos))
            if len(buf) < HEADER_SIZE:
                return
            off = 0
            while off + HEADER_SIZE <= len(buf):
                header = read_header(buf, off)
                if pos + off + header.size > end:
                    return
                yield pos + off, header
                off += header.size
            if off == 0:
                # a single batch larger than the chunk: read just its header and jump
                header = read_header(self.read(pos, HEADER_SIZE))
                if pos + header.size > end:
                    return
                yield pos, header
                off = header.size
            pos += off

    def find_batch(self, offset: int, end: int, index_entries: int | None = None
                   ) -> tuple[int, BatchHeader] | None:
        """The batch holding ``offset`` (or the first after it), scanning from the index.

        An index entry is used only if the batch it names is where it says: a damaged index
        costs a scan from the start of the segment, never a wrong answer.
        """
        start = 0
        entry = self.lookup_entry(offset, index_entries)
        if entry is not None and 0 <= entry[1] <= end - HEADER_SIZE:
            try:
                header = read_header(self.read(entry[1], HEADER_SIZE))
                if header.last_offset == self.base_offset + entry[0] and entry[1] + header.size <= end:
                    start = entry[1]
            except CorruptRecordError:
                pass
        try:
            for pos, header in self.batches(start, end):
                if header.next_offset > offset:
                    return pos, header
        except CorruptRecordError:
            return None
        return None

    def indexes_look_sane(self, log_size: int, next_base: int | None,
                          index_entries: int | None = None, time_index_entries: int | None = None) -> bool:
        """A cheap check, as Kafka does on open, that the index files were not left damaged:
        whole entries, and the first and last entries of each index in order and naming the
        batches they should (a few preads). ``next_base`` bounds the relative offsets (None:
        unbounded); the counts bound the files (None: the whole file).
        """
        try:
            size = os.fstat(self.index_fd).st_size
            tsize = os.fstat(self.time_fd).st_size
        except FileNotFoundError:
            return False
        if index_entries is None:
            if size % INDEX_ENTRY.size or tsize % TIME_ENTRY.size:
                return False
            index_entries, time_index_entries = size // INDEX_ENTRY.size, tsize // TIME_ENTRY.size
        elif size < index_entries * INDEX_ENTRY.size or tsize < (time_index_entries or 0) * TIME_ENTRY.size:
            return False
        limit = (next_base - self.base_offset) if next_base is not None else 0x7FFFFFFF
        try:
            if index_entries:
                first = INDEX_ENTRY.unpack(os.pread(self.index_fd, 8, 0))
                last = INDEX_ENTRY.unpack(os.pread(self.index_fd, 8, (index_entries - 1) * 8))
                if index_entries > 1 and not (first[0] < last[0] and first[1] < last[1]):
                    return False
                for rel, pos in (first, last):
                    if not (0 <= rel < limit and 0 <= pos <= log_size - HEADER_SIZE):
                        return False
                    header = read_header(self.read(pos, HEADER_SIZE))
                    if header.last_offset != self.base_offset + rel or pos + header.size > log_size:
                        return False
            if time_index_entries:
                first_t = TIME_ENTRY.unpack(os.pread(self.time_fd, 12, 0))
                last_t = TIME_ENTRY.unpack(os.pread(self.time_fd, 12, (time_index_entries - 1) * 12))
                if time_index_entries > 1 and not (first_t[0] < last_t[0] and first_t[1] <= last_t[1]):
                    return False
                for ts, rel in (first_t, last_t):
                    if not 0 <= rel < limit:
                        return False
                    found = self.find_batch(self.base_offset + rel, log_size, index_entries)
                    if found is None or found[1].last_offset != self.base_offset + rel \
                            or found[1].max_timestamp != ts:
                        return False
        except CorruptRecordError:
            return False
        return True
