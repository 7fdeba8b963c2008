"""LogSegment: one ``.log`` file of record batches plus its sparse ``.index`` and ``.timeindex``.

Files are named by the segment's base offset as 20-digit zero-padded decimal, as in Kafka.
Index entries use Kafka's layouts: ``.index`` holds 8-byte entries (int32 offset relative to the
base, int32 position of the batch start; the offset is the batch's *last* offset, as Kafka writes
it), ``.timeindex`` holds 12-byte entries (int64 max timestamp so far, int32 relative offset).

Concurrency contract: a LogSegment never locks. Writers hold the replica's append lock; readers
read only bytes below the published log end (see :mod:`kctl.storage.log`), so they never see a
half-written batch.
"""

from __future__ import annotations

import os
import struct

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
    def create(self) -> None:
        """Create empty files (idempotent: existing files are kept)."""
        for path in (self.log_path, self.index_path, self.time_index_path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)

    @property
    def log_fd(self) -> int:
        if self._log_fd < 0:
            self._log_fd = os.open(self.log_path, os.O_RDWR)
        return self._log_fd

    @property
    def index_fd(self) -> int:
        if self._index_fd < 0:
            self._index_fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._index_fd

    @property
    def time_fd(self) -> int:
        if self._time_fd < 0:
            self._time_fd = os.open(self.time_index_path, os.O_RDWR | os.O_CREAT, 0o644)
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
        for fd in (self.log_fd, self.index_fd, self.time_fd):
            os.fsync(fd)

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
        fd = self.index_fd
        n = entries if entries is not None else os.fstat(fd).st_size // 8
        target = offset - self.base_offset
        lo, hi, best = 0, n - 1, 0
        while lo <= hi:
            mid = (lo + hi) // 2
            raw = os.pread(fd, 8, mid * 8)
            if len(raw) < 8:
                hi = mid - 1
                continue
            rel, pos = INDEX_ENTRY.unpack(raw)
            if rel < target:
                # this batch ends before the target: the target's batch starts at or after the next
                best = pos
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
    def batches(self, start: int = 0, end: int | None = None, chunk: int = 1 << 20):
        """Yield (position, header) for whole batches in [start, end); stops at a torn tail.

        Reads in large chunks so that a scan costs few syscalls.
        """
        if end is None:
            end = self.log_size()
        pos = start
        while pos + HEADER_SIZE <= end:
            buf = self.read(pos, min(chunk, end - pos))
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
        """The batch holding ``offset`` (or the first after it), scanning from the index."""
        start = self.lookup_position(offset, index_entries)
        try:
            for pos, header in self.batches(start, end):
                if header.next_offset > offset:
                    return pos, header
        except CorruptRecordError:
            return None
        return None
