"""Recovery: whatever a crash or a bad disk leaves, reopening serves a valid prefix of what was
written, with rebuilt indexes, and appends go on at the right offsets."""

from __future__ import annotations

import os
import random
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kctl.storage.log import LEADER_EPOCH_FILE, STATE_FILE, Log, LogConfig, LogReader
from kctl.storage.records import decode_batch, encode_batch
from kctl.storage.segment import LogSegment, list_segment_bases
from kctl.storage.verify import verify_replica
from tests.storage.log_helpers import read_all

CONFIG = LogConfig(segment_bytes=1500, index_interval_bytes=200)
Row = tuple[int, int, bytes | None, bytes | None]


def _rows(records: list) -> list[Row]:
    return [(r.offset, r.timestamp, r.key, r.value) for r in records]


def build_log(directory: str, segments: int = 4) -> list[Row]:
    """A log of ``segments`` segments, batches of 1-5 records, epochs going up now and then."""
    written: list[Row] = []
    with Log.create(directory, CONFIG) as log:
        i = 0
        while len(log.segment_bases) < segments or log.state.active_size < 600:
            n = 1 + i % 5
            keys = [None if (i + j) % 3 == 0 else f"k{(i + j) % 4}".encode() for j in range(n)]
            values = [f"r{len(written) + j}-".encode() * (1 + (i + j) % 7) for j in range(n)]
            timestamps = [10_000 + 10 * i + j for j in range(n)]
            info = log.append(encode_batch(values, keys=keys, timestamps=timestamps), leader_epoch=i // 6)
            written.extend((info.base_offset + j, timestamps[j], keys[j], values[j]) for j in range(n))
            i += 1
    return written


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Row], list[tuple[int, int]]]:
    directory = str(tmp_path_factory.mktemp("pristine") / "t-0")
    written = build_log(directory)
    with LogReader(directory) as reader:
        epochs = reader.leader_epochs()
    assert len(list_segment_bases(directory)) == 4 and len(epochs) > 2
    return directory, written, epochs


def _copy(pristine: tuple[str, list[Row], list], tmp_path: Path, name: str = "copy") -> str:
    target = str(tmp_path / name)
    shutil.copytree(pristine[0], target)
    return target


def _batches(directory: str, base: int) -> list[tuple[int, int, int, int]]:
    """(position, size, base offset, next offset) of each batch of a segment."""
    seg = LogSegment(directory, base)
    try:
        return [(pos, h.size, h.base_offset, h.next_offset) for pos, h in seg.batches()]
    finally:
        seg.close()


def _check_recovered(directory: str, written: list[Row], keep_below: int) -> None:
    """The log holds exactly the records below ``keep_below``, verifies clean and appends on."""
    with Log.open(directory, CONFIG, recover=True) as log:
        assert log.log_end_offset == keep_below
        assert _rows(read_all(directory)) == written[:keep_below]
        assert verify_replica(directory) == []
        info = log.append(encode_batch([b"after-1", b"after-2"], timestamp=99_999), leader_epoch=50)
        assert (info.base_offset, info.last_offset) == (keep_below, keep_below + 1)
        assert log.epoch_entries[-1] == (50, keep_below)
    got = _rows(read_all(directory))
    assert got[:keep_below] == written[:keep_below]
    assert [r[3] for r in got[keep_below:]] == [b"after-1", b"after-2"]
    assert verify_replica(directory) == []


# -- torn tails ----------------------------------------------------------------------------------
def test_cut_at_every_byte_of_the_last_two_batches(pristine: tuple, tmp_path: Path) -> None:
    source, written, _epochs = pristine
    last_base = list_segment_bases(source)[-1]
    batches = _batches(source, last_base)
    assert len(batches) >= 2
    first_pos = batches[-2][0]
    end = batches[-1][0] + batches[-1][1]
    for cut in range(first_pos, end):
        directory = _copy(pristine, tmp_path, f"cut-{cut}")
        os.truncate(os.path.join(directory, f"{last_base:020d}.log"), cut)
        keep = max([b[3] for b in batches if b[0] + b[1] <= cut], default=last_base)
        _check_recovered(directory, written, keep)
        shutil.rmtree(directory)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cut_anywhere(pristine: tuple, tmp_path: Path, data: st.DataObject) -> None:
    """Cut any segment anywhere (the later ones are then not a continuation and go too)."""
    source, written, _epochs = pristine
    bases = list_segment_bases(source)
    index = data.draw(st.integers(0, len(bases) - 1), label="segment")
    batches = _batches(source, bases[index])
    size = batches[-1][0] + batches[-1][1]
    cut = data.draw(st.integers(0, size), label="cut")
    directory = _copy(pristine, tmp_path, f"any-{index}-{cut}")
    try:
        os.truncate(os.path.join(directory, f"{bases[index]:020d}.log"), cut)
        keep = max([b[3] for b in batches if b[0] + b[1] <= cut], default=bases[index])
        if cut == size:
            keep = written[-1][0] + 1  # nothing lost
        _check_recovered(directory, written, keep)
    finally:
        shutil.rmtree(directory)


# -- flipped bytes -------------------------------------------------------------------------------
LEADER_EPOCH_FIELD = range(12, 16)  # outside the CRC by Kafka's design: see the test below


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_flipped_byte_ends_the_log_at_the_damaged_batch(pristine: tuple, tmp_path: Path,
                                                        data: st.DataObject) -> None:
    source, written, _epochs = pristine
    bases = list_segment_bases(source)
    index = data.draw(st.integers(0, len(bases) - 1), label="segment")
    batches = _batches(source, bases[index])
    victim = data.draw(st.sampled_from(batches), label="batch")
    within = data.draw(st.integers(0, victim[1] - 1).filter(lambda i: i not in LEADER_EPOCH_FIELD), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    directory = _copy(pristine, tmp_path, f"flip-{index}-{victim[0]}-{within}")
    try:
        path = os.path.join(directory, f"{bases[index]:020d}.log")
        with open(path, "r+b") as f:
            f.seek(victim[0] + within)
            byte = f.read(1)[0]
            f.seek(victim[0] + within)
            f.write(bytes([byte ^ flip]))
        _check_recovered(directory, written, victim[2])
    finally:
        shutil.rmtree(directory)


def test_flipped_leader_epoch_keeps_the_records(pristine: tuple, tmp_path: Path) -> None:
    """partitionLeaderEpoch is not covered by the CRC (the leader stamps it): a flip there cannot
    be detected, but no record is lost or altered either."""
    source, written, _epochs = pristine
    directory = _copy(pristine, tmp_path)
    base = list_segment_bases(source)[1]
    pos = _batches(source, base)[1][0]
    with open(os.path.join(directory, f"{base:020d}.log"), "r+b") as f:
        f.seek(pos + 15)
        f.write(b"\x7f")
    with Log.open(directory, CONFIG, recover=True) as log:
        assert log.log_end_offset == written[-1][0] + 1
    assert _rows(read_all(directory)) == written


def test_damage_below_the_recovery_point_is_trusted_but_indexes_are_checked(pristine: tuple,
                                                                           tmp_path: Path) -> None:
    source, written, _epochs = pristine
    directory = _copy(pristine, tmp_path)
    bases = list_segment_bases(source)
    with open(os.path.join(directory, f"{bases[0]:020d}.index"), "wb") as f:
        f.write(b"\xff" * 13)
    os.truncate(os.path.join(directory, f"{bases[-1]:020d}.log"), _batches(source, bases[-1])[-1][0])
    keep = _batches(source, bases[-1])[-1][2]
    with Log.open(directory, CONFIG, recover=True, recovery_point=bases[-1]) as log:
        assert log.log_end_offset == keep
    assert verify_replica(directory) == []
    assert _rows(read_all(directory)) == written[:keep]


# -- damaged index files -------------------------------------------------------------------------
def _damage(path: str, how: str) -> None:
    size = os.path.getsize(path)
    if how == "zeroed":
        with open(path, "r+b") as f:
            f.write(b"\0" * size)
    elif how == "garbage":
        with open(path, "r+b") as f:
            f.write(random.Random(size).randbytes(size))
    elif how == "preallocated":  # what Kafka leaves after a crash: the file padded with zeros
        with open(path, "ab") as f:
            f.write(b"\0" * 4096)
    elif how == "odd size":
        with open(path, "ab") as f:
            f.write(b"\x01\x02\x03")
    elif how == "missing":
        os.unlink(path)
    elif how == "reversed":
        width = 8 if path.endswith(".index") else 12
        with open(path, "rb") as f:
            data = f.read()
        entries = [data[i:i + width] for i in range(0, len(data), width)]
        with open(path, "wb") as f:
            f.write(b"".join(reversed(entries)))


@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
@pytest.mark.parametrize("how", ["zeroed", "garbage", "preallocated", "odd size", "missing", "reversed"])
@pytest.mark.parametrize("recover", [True, False])
def test_damaged_index_is_rebuilt_not_trusted(pristine: tuple, tmp_path: Path, suffix: str, how: str,
                                              recover: bool) -> None:
    source, written, _epochs = pristine
    directory = _copy(pristine, tmp_path)
    bases = list_segment_bases(source)
    for base in bases:
        _damage(os.path.join(directory, f"{base:020d}{suffix}"), how)
    # a reader that meets the damage before anyone repairs it still finds every offset
    with LogReader(directory) as reader:
        for offset in range(0, written[-1][0] + 1, 7):
            reader.seek(offset)
            chunk, headers = reader.read(offset + 1)
            first = decode_batch(chunk, headers[0][0])[1]
            assert offset in [r.offset for r in first]
    with Log.open(directory, CONFIG, recover=recover) as log:
        assert log.log_end_offset == written[-1][0] + 1
        assert log.offset_for_timestamp(10_000 + 10 * 30) == next(r[0] for r in written if r[1] >= 10_300)
    assert verify_replica(directory) == []
    assert _rows(read_all(directory)) == written
    for base in bases[:-1]:
        with open(os.path.join(source, f"{base:020d}{suffix}"), "rb") as a, \
                open(os.path.join(directory, f"{base:020d}{suffix}"), "rb") as b:
            assert a.read() == b.read(), "a sealed segment's rebuilt index is the one first written"


def test_retention_does_not_trust_a_damaged_time_index(pristine: tuple, tmp_path: Path) -> None:
    """A garbage last time-index entry must not make an old segment look new, nor a new one old."""
    source, _written, _epochs = pristine
    directory = _copy(pristine, tmp_path)
    bases = list_segment_bases(source)
    path = os.path.join(directory, f"{bases[0]:020d}.timeindex")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) - 12)
        f.write(struct.pack(">qi", 10**15, 1))  # far in the future, at a plausible offset
    log = Log(directory, LogConfig(segment_bytes=1500, retention_ms=1000))
    try:
        log.refresh()
        newest_in_first = max(h.max_timestamp for _p, h in LogSegment(directory, bases[0]).batches())
        assert log.delete_retained_segments(10**9, now_ms=newest_in_first + 500) == []
        assert log.delete_retained_segments(10**9, now_ms=newest_in_first + 1001)[:1] == [bases[0]]
    finally:
        log.close()


# -- damaged state and checkpoint ----------------------------------------------------------------
@pytest.mark.parametrize("how", ["zeroed", "garbage", "truncated", "flipped", "missing"])
def test_damaged_replica_state_triggers_recovery(pristine: tuple, tmp_path: Path, how: str) -> None:
    _source, written, epochs = pristine
    directory = _copy(pristine, tmp_path)
    path = os.path.join(directory, STATE_FILE)
    if how == "zeroed":
        with open(path, "r+b") as f:
            f.write(b"\0" * 128)
    elif how == "garbage":
        with open(path, "r+b") as f:
            f.write(random.Random(7).randbytes(128))
    elif how == "truncated":
        os.truncate(path, 40)
    elif how == "flipped":
        with open(path, "r+b") as f:
            f.seek(20)
            byte = f.read(1)[0]
            f.seek(20)
            f.write(bytes([byte ^ 0x10]))
    else:
        os.unlink(path)
    with Log.open(directory, CONFIG) as log:
        assert log.log_end_offset == written[-1][0] + 1
        assert log.epoch_entries == epochs
    assert verify_replica(directory) == []
    assert _rows(read_all(directory)) == written


def test_state_ahead_of_the_files_triggers_recovery(pristine: tuple, tmp_path: Path) -> None:
    """A published end past the end of the file (the file lost its tail) is not trusted."""
    source, written, _epochs = pristine
    directory = _copy(pristine, tmp_path)
    last = list_segment_bases(source)[-1]
    batches = _batches(source, last)
    os.truncate(os.path.join(directory, f"{last:020d}.log"), batches[-1][0] + 3)
    with Log.open(directory, CONFIG) as log:
        assert log.log_end_offset == batches[-1][2]
    assert _rows(read_all(directory)) == written[: batches[-1][2]]
    assert verify_replica(directory) == []


@pytest.mark.parametrize("how", ["garbage", "truncated", "wrong count", "missing", "empty"])
@pytest.mark.parametrize("recover", [True, False])
def test_damaged_leader_epoch_checkpoint_falls_back_to_the_batches(pristine: tuple, tmp_path: Path, how: str,
                                                                    recover: bool) -> None:
    _source, written, epochs = pristine
    directory = _copy(pristine, tmp_path)
    path = os.path.join(directory, LEADER_EPOCH_FILE)
    text = Path(path).read_text()
    if how == "garbage":
        Path(path).write_bytes(b"\xff\xfe garbage\n")
    elif how == "truncated":
        Path(path).write_text(text[: len(text) // 2 + 1])
    elif how == "wrong count":
        Path(path).write_text(text.replace(f"\n{len(epochs)}\n", f"\n{len(epochs) + 3}\n", 1))
    elif how == "empty":
        Path(path).write_text("")
    else:
        os.unlink(path)
    with LogReader(directory) as reader:
        assert reader.leader_epochs() == epochs
    with Log.open(directory, CONFIG, recover=recover) as log:
        assert log.epoch_entries == epochs
        assert log.end_offset_for_epoch(epochs[1][0]) == (epochs[1][0], epochs[2][1])
    assert verify_replica(directory) == []
    with LogReader(directory) as reader:
        assert reader.leader_epochs() == epochs
    assert _rows(read_all(directory)) == written


def test_unpublished_epoch_in_the_checkpoint_is_ignored(tmp_path: Path) -> None:
    """A writer killed between writing the checkpoint and publishing leaves an epoch entry for an
    append nobody saw; the other processes must not believe it."""
    directory = str(tmp_path / "t-0")
    with Log.create(directory, CONFIG) as log:
        log.append(encode_batch([b"a"], timestamp=1), leader_epoch=3)
        entries = log.epoch_entries
        end = log.log_end_offset
    from kctl.storage.checkpoint import write_leader_epoch_checkpoint

    write_leader_epoch_checkpoint(os.path.join(directory, LEADER_EPOCH_FILE), [*entries, (9, end)])
    with LogReader(directory) as reader:
        assert reader.leader_epochs() == entries
    log = Log(directory, CONFIG)
    try:
        log.refresh()
        assert log.epoch_entries == entries
        log.append(encode_batch([b"b"], timestamp=2), leader_epoch=4)
        assert log.epoch_entries == [*entries, (4, end)]
    finally:
        log.close()
