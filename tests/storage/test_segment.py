"""LogSegment: names, the sparse indexes and their lookups, scanning, and a whole segment written
by Log read back by kafka-python's own record reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kctl.storage.log import Log, LogConfig
from kctl.storage.records import Compression, encode_batch
from kctl.storage.segment import (
    INDEX_ENTRY,
    LogSegment,
    list_segment_bases,
    parse_segment_name,
    segment_name,
)
from tests.storage.log_helpers import simple_batch


def test_names() -> None:
    assert segment_name(0) == "00000000000000000000"
    assert segment_name(2**63 - 1) == "09223372036854775807"
    assert parse_segment_name("00000000000000000042.log") == 42
    for junk in ("42.log", "00000000000000000042.index", "0000000000000000004x.log",
                 "00000000000000000042.log.cleaned", "000000000000000000042.log"):
        assert parse_segment_name(junk) is None


def test_list_segment_bases_sorts_and_ignores_other_files(tmp_path: Path) -> None:
    for name in ("00000000000000000100.log", "00000000000000000007.log", "00000000000000000007.index",
                 "00000000000000000050.log.swap", "replica.state", "leader-epoch-checkpoint"):
        (tmp_path / name).write_bytes(b"")
    assert list_segment_bases(str(tmp_path)) == [7, 100]


@pytest.fixture
def segment(tmp_path: Path) -> tuple[LogSegment, list[tuple[int, int, int]]]:
    """A segment of 40 batches (base offset 1000) with an entry per batch in its index."""
    seg = LogSegment(str(tmp_path), 1000)
    seg.create()
    layout = []
    pos = 0
    offset = 1000
    for i in range(40):
        batch = simple_batch(1 + i % 3, base_offset=offset, timestamp=5000 + i)
        seg.write(pos, batch)
        layout.append((pos, offset, offset + i % 3))
        pos += len(batch)
        offset += 1 + i % 3
    for n, (p, _first, last) in enumerate(layout[1:]):
        seg.append_index(n, last - 1000, p)
    return seg, layout


def test_find_batch_at_every_offset(segment: tuple[LogSegment, list]) -> None:
    seg, layout = segment
    end = seg.log_size()
    for pos, first, last in layout:
        for offset in range(first, last + 1):
            for entries in (None, 0, 5, 39):
                found = seg.find_batch(offset, end, entries)
                assert found is not None and (found[0], found[1].base_offset) == (pos, first)
    assert seg.find_batch(layout[-1][2] + 1, end) is None
    assert seg.find_batch(0, end)[0] == 0  # below the base: the first batch


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.tuples(st.integers(0, 38), st.integers(-5, 200), st.integers(-100, 10_000)),
                        min_size=1, max_size=10), probe=st.integers(1000, 1079))
def test_find_batch_never_trusts_a_wrong_index_entry(segment: tuple[LogSegment, list], garbage: list,
                                                     probe: int) -> None:
    seg, layout = segment
    original = seg.index_entries()
    try:
        for n, rel, pos in garbage:
            seg.append_index(n, rel, pos)
        found = seg.find_batch(probe, seg.log_size())
        if probe > layout[-1][2]:
            assert found is None
        else:
            want = next((p, f) for p, f, last in layout if f <= probe <= last)
            assert found is not None and (found[0], found[1].base_offset) == want
    finally:
        for n, (rel, pos) in enumerate(original):
            seg.append_index(n, rel, pos)


def test_lookup_on_a_missing_index_scans(tmp_path: Path) -> None:
    seg = LogSegment(str(tmp_path), 0)
    seg.create()
    seg.write(0, simple_batch(2) + simple_batch(2, base_offset=2))
    os.unlink(seg.index_path)
    assert seg.lookup_entry(3) is None and seg.lookup_position(3) == 0
    assert seg.find_batch(3, seg.log_size())[1].base_offset == 2
    assert not os.path.exists(seg.index_path), "a lookup must not create the index"


def test_batches_with_a_chunk_smaller_than_a_batch_and_a_torn_tail(segment: tuple[LogSegment, list]) -> None:
    seg, layout = segment
    size = seg.log_size()
    for chunk in (61, 70, 100, 1 << 20):
        assert [(p, h.base_offset) for p, h in seg.batches(chunk=chunk)] == [(p, f) for p, f, _l in layout]
    # a torn tail and an end past the file both end the scan quietly
    assert len(list(seg.batches(0, size - 1))) == 39
    assert len(list(seg.batches(0, size + 500))) == 40
    assert list(seg.batches(layout[5][0], layout[7][0])) == list(seg.batches())[5:7]


def test_indexes_look_sane(segment: tuple[LogSegment, list]) -> None:
    seg, layout = segment
    size = seg.log_size()
    seg.append_time_index(0, 5039, layout[-1][2] - 1000)
    assert seg.indexes_look_sane(size, 1080)
    assert not seg.indexes_look_sane(size, 1030)  # entries past the next segment's base
    assert seg.indexes_look_sane(size, None, 10, 1)
    seg.append_index(39, 0, 0)  # a last entry that goes backwards
    assert not seg.indexes_look_sane(size, None)
    seg.truncate_index(39)
    seg.append_time_index(1, 5040, layout[-1][2] - 1000)  # no batch has that max timestamp
    assert not seg.indexes_look_sane(size, None)
    seg.truncate_time_index(1)
    with open(seg.index_path, "ab") as f:
        f.write(b"\0\0\0")
    assert not seg.indexes_look_sane(size, None)
    assert seg.indexes_look_sane(size, None, 39, 1)  # the published count is what matters then


def test_write_parts(tmp_path: Path) -> None:
    seg = LogSegment(str(tmp_path), 0)
    seg.create()
    seg.write_parts(3, b"abc", memoryview(b"defgh")[1:])
    assert seg.read(0, 20) == b"\0\0\0abcefgh"
    seg.create(fresh=True)
    assert seg.log_size() == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python's own use of importlib
def test_a_whole_segment_parses_with_kafka_python(tmp_path: Path) -> None:
    """The design's promise: a .log written by kctl is a Kafka segment, byte for byte."""
    from kafka.record import MemoryRecords

    directory = str(tmp_path / "t-0")
    written = []
    with Log.create(directory, LogConfig(segment_bytes=1 << 20)) as log:
        for i in range(60):
            n = 1 + i % 5
            keys = [None if j % 2 else f"key-{i}-{j}".encode() for j in range(n)]
            values = [None if (i + j) % 11 == 0 else f"value-{i}-{j}".encode() * (1 + j) for j in range(n)]
            headers = [[("h", f"{i}".encode()), ("n", None)] if j == 0 else [] for j in range(n)]
            timestamps = [1_700_000_000_000 + i * 10 + j for j in range(n)]
            codec = (Compression.NONE, Compression.GZIP)[i % 2]
            batch = encode_batch(values, keys=keys, headers=headers, timestamps=timestamps, compression=codec)
            info = log.append(batch, leader_epoch=i // 20)
            written += [(info.base_offset + j, timestamps[j], keys[j], values[j],
                         [(k, v) for k, v in headers[j]], i // 20) for j in range(n)]
        segment_path = os.path.join(directory, f"{log.segment_bases[0]:020d}.log")
    with open(segment_path, "rb") as f:
        data = f.read()
    records = MemoryRecords(data)
    seen = []
    batches = 0
    while True:
        batch = records.next_batch()
        if batch is None:
            break
        batches += 1
        assert batch.validate_crc()
        for r in batch:
            seen.append((r.offset, r.timestamp, r.key, r.value, list(r.headers), batch.leader_epoch))
    assert batches == 60 and records.valid_bytes() == len(data)
    assert seen == written


def test_index_entry_layout_is_kafkas(tmp_path: Path) -> None:
    """8-byte entries: int32 offset relative to the base (the batch's last offset), int32 position."""
    directory = str(tmp_path / "t-0")
    with Log.create(directory, LogConfig(index_interval_bytes=1)) as log:
        log.append_replicated(simple_batch(2, base_offset=0) + simple_batch(3, base_offset=2)
                              + simple_batch(1, base_offset=5))
        first_size = len(simple_batch(2))
    with open(os.path.join(directory, f"{0:020d}.index"), "rb") as f:
        raw = f.read()
    assert [INDEX_ENTRY.unpack_from(raw, i) for i in range(0, len(raw), 8)] == \
        [(4, first_size), (5, first_size + len(simple_batch(3)))]
