"""Post-mortems: dump a replica's batches (like kafka-dump-log) and verify every byte of it.

``verify_replica`` never changes anything; it reports each damaged batch (bad size, magic, CRC,
offsets going backwards), index entries that point at the wrong place, a log-end state that
disagrees with the files, and a leader-epoch checkpoint that cannot be read.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from kctl.errors import CorruptRecordError
from kctl.storage.checkpoint import read_leader_epoch_checkpoint
from kctl.storage.log import LEADER_EPOCH_FILE, ReplicaStateFile
from kctl.storage.records import HEADER_SIZE, BatchHeader, Record, crc_ok, decode_batch, read_header
from kctl.storage.segment import LogSegment, list_segment_bases


@dataclass
class Problem:
    path: str
    position: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}" + (f" at byte {self.position}" if self.position is not None else "")
        return f"{where}: {self.message}"


@dataclass
class DumpedBatch:
    segment: str
    position: int
    header: BatchHeader
    crc_valid: bool
    records: list[Record] | None


def _batches_of(seg: LogSegment, end: int) -> Iterator[tuple[int, BatchHeader | None, str | None]]:
    """(position, header, problem) for each batch; a problem ends the walk."""
    pos = 0
    while pos < end:
        if end - pos < HEADER_SIZE:
            yield pos, None, f"{end - pos} trailing bytes: a torn batch header"
            return
        raw = seg.read(pos, HEADER_SIZE)
        try:
            header = read_header(raw)
        except CorruptRecordError as exc:
            yield pos, None, str(exc)
            return
        if pos + header.size > end:
            yield pos, header, f"batch of {header.size} bytes runs past the end of the segment ({end})"
            return
        yield pos, header, None
        pos += header.size


def dump_replica(directory: str, print_data: bool = False) -> Iterator[DumpedBatch]:
    for base in list_segment_bases(directory):
        seg = LogSegment(directory, base)
        try:
            end = seg.log_size()
            for pos, header, problem in _batches_of(seg, end):
                if header is None or problem is not None:
                    break
                data = seg.read(pos, header.size)
                ok = crc_ok(data, 0, header)
                records = None
                if print_data and ok:
                    try:
                        records = decode_batch(data, 0)[1]
                    except CorruptRecordError:
                        records = None
                yield DumpedBatch(os.path.basename(seg.log_path), pos, header, ok, records)
        finally:
            seg.close()


def verify_replica(directory: str) -> list[Problem]:
    problems: list[Problem] = []
    sf_state = None
    try:
        sf = ReplicaStateFile(directory)
        sf_state = sf.read_log_end(attempts=3)
        sf.close()
        if sf_state is None:
            problems.append(Problem(os.path.join(directory, "replica.state"), None,
                                    "log-end state is missing or fails its CRC"))
    except FileNotFoundError:
        problems.append(Problem(os.path.join(directory, "replica.state"), None, "missing"))
    try:
        read_leader_epoch_checkpoint(os.path.join(directory, LEADER_EPOCH_FILE))
    except CorruptRecordError as exc:
        problems.append(Problem(os.path.join(directory, LEADER_EPOCH_FILE), None, str(exc)))
    expected_next: int | None = None
    bases = list_segment_bases(directory)
    for base in bases:
        seg = LogSegment(directory, base)
        try:
            size = seg.log_size()
            active = sf_state is not None and base == sf_state.active_base_offset
            end = min(size, sf_state.active_size) if active and sf_state is not None else size
            positions: dict[int, BatchHeader] = {}
            for pos, header, problem in _batches_of(seg, end):
                if problem is not None:
                    problems.append(Problem(seg.log_path, pos, problem))
                    break
                assert header is not None
                data = seg.read(pos, header.size)
                if not crc_ok(data, 0, header):
                    problems.append(Problem(seg.log_path, pos,
                                            f"batch at offset {header.base_offset} fails its CRC-32C"))
                elif header.base_offset < base:
                    problems.append(Problem(seg.log_path, pos,
                                            f"batch offset {header.base_offset} is below the segment base {base}"))
                elif expected_next is not None and header.base_offset < expected_next:
                    problems.append(Problem(seg.log_path, pos,
                                            f"offsets go backwards: {header.base_offset} after {expected_next - 1}"))
                expected_next = header.next_offset
                positions[pos] = header
            for i, (rel, pos) in enumerate(seg.index_entries(
                    sf_state.index_entries if active and sf_state is not None else None)):
                h = positions.get(pos)
                if h is None or h.last_offset != base + rel:
                    problems.append(Problem(seg.index_path, i * 8,
                                            f"index entry ({base + rel}, {pos}) points at no matching batch"))
                    break
            if active and sf_state is not None and size < sf_state.active_size:
                problems.append(Problem(seg.log_path, size,
                                        f"segment is shorter ({size}) than its published end ({sf_state.active_size})"))
        finally:
            seg.close()
    if sf_state is not None and expected_next is not None and expected_next != sf_state.log_end_offset:
        problems.append(Problem(os.path.join(directory, "replica.state"), None,
                                f"log end offset {sf_state.log_end_offset} disagrees with the segments "
                                f"({expected_next})"))
    return problems
