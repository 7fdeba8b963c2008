"""Post-mortems: dump a replica's batches (like kafka-dump-log) and verify every byte of it.

``verify_replica`` never changes anything; it reports each damaged batch (bad size, magic, CRC,
offsets going backwards or skipping), index and time-index entries that point at the wrong
place, a log-end state that disagrees with the files, and a leader-epoch checkpoint that cannot
be read or does not hold the published epochs. Bytes past the published end of the active
segment, and segments past the active one (what a writer killed mid-append or mid-roll leaves,
which readers never see and the next writer removes), are not problems and are not dumped.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kctl.errors import CorruptRecordError
from kctl.storage.checkpoint import read_leader_epoch_checkpoint
from kctl.storage.log import LEADER_EPOCH_FILE, STATE_FILE, LogEndState, ReplicaStateFile
from kctl.storage.records import HEADER_SIZE, BatchHeader, Record, crc_ok, decode_batch, read_header
from kctl.storage.segment import INDEX_ENTRY, TIME_ENTRY, LogSegment, list_segment_bases


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


def _read_state(directory: str) -> LogEndState | None:
    try:
        sf = ReplicaStateFile(directory)
    except FileNotFoundError:
        return None
    try:
        return sf.read_log_end(attempts=3)
    finally:
        sf.close()


def _segments(directory: str, state: LogEndState | None) -> list[int]:
    """The segments of the log: those up to the published active one."""
    bases = list_segment_bases(directory)
    if state is None:
        return bases
    return [b for b in bases if b <= state.active_base_offset]


def dump_replica(directory: str, print_data: bool = False) -> Iterator[DumpedBatch]:
    """Every published batch, segment by segment (a damaged header ends a segment's dump)."""
    state = _read_state(directory)
    for base in _segments(directory, state):
        seg = LogSegment(directory, base)
        try:
            end = seg.log_size()
            if state is not None and base == state.active_base_offset:
                end = min(end, state.active_size)
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
    state_path = os.path.join(directory, STATE_FILE)
    sf_state = _read_state(directory)
    if not os.path.exists(state_path):
        problems.append(Problem(state_path, None, "missing"))
    elif sf_state is None:
        problems.append(Problem(state_path, None, "log-end state is missing or fails its CRC"))
    _verify_epochs(directory, sf_state, problems)
    bases = _segments(directory, sf_state)
    expected_next: int | None = None
    for i, base in enumerate(bases):
        seg = LogSegment(directory, base)
        try:
            size = seg.log_size()
            active = sf_state is not None and base == sf_state.active_base_offset
            end = min(size, sf_state.active_size) if active and sf_state is not None else size
            headers: dict[int, BatchHeader] = {}
            for pos, header, problem in _batches_of(seg, end):
                if problem is not None:
                    problems.append(Problem(seg.log_path, pos, problem))
                    break
                assert header is not None
                data = seg.read(pos, header.size)
                if not crc_ok(data, 0, header):
                    problems.append(Problem(seg.log_path, pos,
                                            f"batch at offset {header.base_offset} fails its CRC-32C"))
                elif pos == 0 and header.base_offset != base:
                    problems.append(Problem(seg.log_path, pos,
                                            f"first batch at offset {header.base_offset}, the segment base is {base}"))
                elif expected_next is not None and header.base_offset < expected_next:
                    problems.append(Problem(seg.log_path, pos,
                                            f"offsets go backwards: {header.base_offset} after {expected_next - 1}"))
                elif expected_next is not None and header.base_offset > expected_next:
                    problems.append(Problem(seg.log_path, pos,
                                            f"offsets skip from {expected_next - 1} to {header.base_offset}"))
                expected_next = header.next_offset
                headers[pos] = header
            if expected_next is None and i + 1 < len(bases):
                expected_next = bases[i + 1]  # an empty first segment: the next one starts the log
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            _verify_index(seg, headers, active, sf_state, problems)
            _verify_time_index(seg, headers, active, sf_state, next_base, problems)
            if active and sf_state is not None and size < sf_state.active_size:
                problems.append(Problem(seg.log_path, size,
                                        f"segment is shorter ({size}) than its published end ({sf_state.active_size})"))
        except FileNotFoundError as exc:
            problems.append(Problem(seg.log_path, None, f"missing: {exc.filename}"))
        finally:
            seg.close()
    if sf_state is not None:
        if sf_state.active_base_offset not in bases:
            problems.append(Problem(state_path, None,
                                    f"the published active segment {sf_state.active_base_offset} does not exist"))
        if expected_next is not None and expected_next != sf_state.log_end_offset:
            problems.append(Problem(state_path, None,
                                    f"log end offset {sf_state.log_end_offset} disagrees with the segments "
                                    f"({expected_next})"))
        if not (bases[:1] or [0])[0] <= sf_state.log_start_offset <= sf_state.log_end_offset:
            problems.append(Problem(state_path, None,
                                    f"log start offset {sf_state.log_start_offset} is outside "
                                    f"[{(bases[:1] or [0])[0]}, {sf_state.log_end_offset}]"))
    return problems


def _verify_epochs(directory: str, state: LogEndState | None, problems: list[Problem]) -> None:
    path = os.path.join(directory, LEADER_EPOCH_FILE)
    try:
        entries = read_leader_epoch_checkpoint(path)
    except CorruptRecordError as exc:
        problems.append(Problem(path, None, str(exc)))
        return
    for a, b in itertools.pairwise(entries):
        if not (a[0] < b[0] and a[1] < b[1]):
            problems.append(Problem(path, None, f"entries {a} and {b} do not both increase"))
            return
    if state is not None and state.latest_epoch >= 0 and \
            (state.latest_epoch, state.latest_epoch_start) not in entries:
        problems.append(Problem(path, None, f"does not hold the published latest epoch "
                                            f"({state.latest_epoch}, {state.latest_epoch_start})"))


def _entries(fd_path: str, width: int, count: int | None, problems: list[Problem]) -> bytes | None:
    """The raw bytes of an index file (``count`` entries of ``width`` if given), or None."""
    try:
        with open(fd_path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        problems.append(Problem(fd_path, None, "missing"))
        return None
    if count is not None:
        if len(data) < count * width:
            problems.append(Problem(fd_path, len(data), f"holds {len(data) // width} entries, "
                                                        f"the state publishes {count}"))
        return data[: count * width]
    if len(data) % width:
        problems.append(Problem(fd_path, len(data) - len(data) % width,
                                f"{len(data)} bytes is not a whole number of {width}-byte entries"))
    return data[: len(data) - len(data) % width]


def _verify_index(seg: LogSegment, headers: dict[int, BatchHeader], active: bool, state: LogEndState | None,
                  problems: list[Problem]) -> None:
    data = _entries(seg.index_path, INDEX_ENTRY.size, state.index_entries if active and state else None,
                    problems)
    if data is None:
        return
    previous = (-1, -1)
    for i, (rel, pos) in enumerate(struct.iter_unpack(INDEX_ENTRY.format, data)):
        h = headers.get(pos)
        if h is None or h.last_offset != seg.base_offset + rel or (rel, pos) <= previous or pos <= previous[1]:
            problems.append(Problem(seg.index_path, i * INDEX_ENTRY.size,
                                    f"index entry ({seg.base_offset + rel}, {pos}) points at no matching batch"))
            return
        previous = (rel, pos)


def _verify_time_index(seg: LogSegment, headers: dict[int, BatchHeader], active: bool, state: LogEndState | None,
                       next_base: int | None, problems: list[Problem]) -> None:
    data = _entries(seg.time_index_path, TIME_ENTRY.size,
                    state.time_index_entries if active and state else None, problems)
    if data is None:
        return
    by_last = {h.last_offset: h for h in headers.values()}
    entries = list(struct.iter_unpack(TIME_ENTRY.format, data))
    previous = (-1 << 63, -1)
    for i, (ts, rel) in enumerate(entries):
        h = by_last.get(seg.base_offset + rel)
        if h is None or h.max_timestamp != ts or ts <= previous[0] or rel < previous[1]:
            problems.append(Problem(seg.time_index_path, i * TIME_ENTRY.size,
                                    f"time index entry ({ts}, {seg.base_offset + rel}) names no batch with "
                                    f"that max timestamp, or is out of order"))
            return
        previous = (ts, rel)
    newest = max((h.max_timestamp for h in headers.values()), default=-1)
    if not active and next_base is not None and newest >= 0 and (not entries or entries[-1][0] != newest):
        problems.append(Problem(seg.time_index_path, len(data),
                                f"the last entry of a rolled segment is not its max timestamp {newest}"))
