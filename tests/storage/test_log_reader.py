"""LogReader: seeks anywhere, follows rolls, re-seeks after truncation and retention, and never
serves bytes from a file that was replaced under it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kctl.errors import OffsetOutOfRangeError
from kctl.storage.log import Log, LogConfig, LogReader
from kctl.storage.records import decode_batch
from kctl.storage.segment import LogSegment
from tests.storage.log_helpers import read_all, simple_batch

CONFIG = LogConfig(segment_bytes=700, index_interval_bytes=150)


@pytest.fixture
def directory(tmp_path: Path) -> str:
    return str(tmp_path / "topic-0")


def _build(directory: str, batches: int = 30, config: LogConfig = CONFIG) -> list[int]:
    """Batches of 1..4 records; returns the base offset of each batch."""
    bases = []
    with Log.create(directory, config) as log:
        for i in range(batches):
            bases.append(log.append(simple_batch(1 + i % 4, start=log.log_end_offset), leader_epoch=0).base_offset)
        assert len(log.segment_bases) >= 4 or config is not CONFIG
    return bases


def _drain(reader: LogReader, max_offset: int = 1 << 62, max_bytes: int = 1 << 20) -> list[int]:
    offsets = []
    while True:
        chunk, headers = reader.read(max_offset, max_bytes)
        if not headers:
            return offsets
        for pos, _h in headers:
            offsets.extend(r.offset for r in decode_batch(chunk, pos)[1])


def test_seek_to_every_offset(directory: str) -> None:
    bases = _build(directory)
    end = bases[-1] + 1 + (len(bases) - 1) % 4
    with Log(directory, CONFIG) as log:
        log.refresh()
        segment_bases = log.segment_bases
    assert set(segment_bases) <= set(bases)
    with LogReader(directory) as reader:
        for offset in range(end + 1):
            reader.seek(offset)
            got = _drain(reader, max_bytes=1 + offset * 37 % 400)
            containing = max(b for b in bases if b <= offset) if offset < end else end
            # whole batches: the first one holds the offset (mid-batch seeks start at its base)
            assert got == list(range(containing, end)), offset
            assert reader.next_offset == end
        with pytest.raises(OffsetOutOfRangeError):
            reader.seek(end + 1)
        with pytest.raises(OffsetOutOfRangeError):
            reader.seek(-1)


def test_read_respects_max_offset_and_max_bytes(directory: str) -> None:
    bases = _build(directory, config=LogConfig())  # one segment: a read never spans two
    with LogReader(directory) as reader:
        reader.seek(0)
        chunk, headers = reader.read(bases[3])
        assert [h.base_offset for _p, h in headers] == bases[:3] and reader.next_offset == bases[3]
        # a batch straddling max_offset is handed out, and the cursor stays on it
        assert bases[6] - bases[5] == 2
        chunk, headers = reader.read(bases[5] + 1)
        assert [h.base_offset for _p, h in headers] == bases[3:6] and reader.next_offset == bases[5] + 1
        chunk, headers = reader.read(bases[7])
        assert [h.base_offset for _p, h in headers] == bases[5:7] and reader.next_offset == bases[7]
        # max_bytes smaller than a header still returns one whole batch
        for max_bytes in (1, 60, 61, 62):
            reader.seek(bases[7])
            chunk, headers = reader.read(1 << 62, max_bytes)
            assert len(headers) == 1 and len(chunk) == headers[0][1].size


def test_tail_follows_appends_and_rolls(directory: str) -> None:
    with Log.create(directory, CONFIG) as log, LogReader(directory) as reader:
        reader.seek(0)
        seen: list[int] = []
        for i in range(40):
            log.append(simple_batch(2, start=i), leader_epoch=0)
            if i % 3 == 0:
                seen += _drain(reader, max_bytes=200)
        seen += _drain(reader)
        assert seen == list(range(80)) and len(log.segment_bases) > 5


def test_truncation_under_a_reader(directory: str) -> None:
    _build(directory)
    with Log(directory, CONFIG) as log, LogReader(directory) as reader:
        log.refresh()
        reader.seek(0)
        _drain(reader, max_offset=40)
        assert reader.next_offset >= 40
        log.truncate_to(30)
        cut = log.log_end_offset
        # the cursor is past the new end: out of range, as Kafka's fetch would answer
        with pytest.raises(OffsetOutOfRangeError):
            reader.read(1 << 62)
        # new data overwrites the same positions; the reader seeks and serves only the new data
        reader.seek(cut - 1 if cut else 0)
        for i in range(10):
            log.append(simple_batch(3, start=1000 + i), leader_epoch=5)
        got = []
        while True:
            chunk, headers = reader.read(1 << 62)
            if not headers:
                break
            got += [r for _p, h in headers for r in decode_batch(chunk, _p)[1]]
        assert [r.offset for r in got if r.offset >= cut] == list(range(cut, cut + 30))
        assert all(r.value.startswith(b"v10") for r in got if r.offset >= cut)


def test_truncate_and_refill_below_a_reader_position_is_not_served_stale(directory: str) -> None:
    """The reader sits at offset p; the log is cut below p and refilled past p with other data.
    The reader must serve the new records at p, never the old bytes."""
    with Log.create(directory, CONFIG) as log:
        for i in range(6):
            log.append(simple_batch(2, start=i * 2, size=10), leader_epoch=0)
        with LogReader(directory) as reader:
            reader.seek(0)
            assert _drain(reader, max_offset=8) == list(range(8))
            log.truncate_to(3)
            for i in range(5):
                log.append(simple_batch(3, start=500 + i * 3, size=33), leader_epoch=1)
            chunk, headers = reader.read(1 << 62)
            records = [r for p, _h in headers for r in decode_batch(chunk, p)[1]]
            assert records and all(r.value.startswith(b"v5") for r in records)
            assert [r.offset for r in records if r.offset >= 8][:1] == [8]


def test_truncate_fully_under_a_reader_with_the_file_open(directory: str) -> None:
    with Log.create(directory, CONFIG) as log, LogReader(directory) as reader:
        log.append(simple_batch(4), leader_epoch=0)
        reader.seek(0)
        assert _drain(reader, max_offset=2) == [0, 1, 2, 3]
        log.truncate_fully(0)  # deletes 0.log and makes a new one of the same name
        log.append(simple_batch(4, start=90), leader_epoch=1)
        reader.seek(0)
        chunk, headers = reader.read(1 << 62)
        values = [r.value for p, _h in headers for r in decode_batch(chunk, p)[1]]
        assert values == [f"v{90 + i}".encode().ljust(20, b".") for i in range(4)]


def test_retention_under_a_reader(directory: str) -> None:
    _build(directory)
    with Log(directory, CONFIG) as log, LogReader(directory) as reader:
        log.refresh()
        reader.seek(0)
        _chunk, _headers = reader.read(3)  # holds segment 0 open
        bases = log.segment_bases
        log.delete_segments_below(bases[2])
        with pytest.raises(OffsetOutOfRangeError):
            reader.read(1 << 62)
        with pytest.raises(OffsetOutOfRangeError):
            reader.seek(bases[2] - 1)
        reader.seek(log.log_start_offset)
        assert _drain(reader)[0] == bases[2]


def test_reader_whose_segment_vanished_between_reads(directory: str) -> None:
    _build(directory)
    with Log(directory, CONFIG) as log, LogReader(directory) as reader:
        log.refresh()
        bases = log.segment_bases
        reader.seek(bases[1])
        reader.read(bases[1] + 1)
        log.delete_segments_below(bases[3])
        reader.next_offset = bases[3]  # as a consumer resetting its position does
        reader.seek(bases[3])
        assert _drain(reader)[:1] == [bases[3]]


def test_reader_ignores_a_segment_past_the_published_active_one(directory: str) -> None:
    with Log.create(directory, CONFIG) as log:
        log.append(simple_batch(3), leader_epoch=0)
        log.roll()
        log.append(simple_batch(3, start=3), leader_epoch=0)
    stray = LogSegment(directory, 6)
    stray.create()
    stray.write(0, simple_batch(5, start=600, base_offset=6))
    stray.close()
    with LogReader(directory) as reader:
        reader.seek(0)
        assert _drain(reader) == list(range(6))
        reader.seek(6)
        assert _drain(reader) == []
        assert reader.offset_for_timestamp(0) == 0
    assert [r.offset for r in read_all(directory)] == list(range(6))


def test_reader_on_an_empty_log_and_one_that_starts_late(directory: str) -> None:
    with Log.create(directory, CONFIG, start_offset=500) as log, LogReader(directory) as reader:
        reader.seek(500)
        assert reader.read(1 << 62) == (b"", [])
        with pytest.raises(OffsetOutOfRangeError):
            reader.seek(0)
        log.append(simple_batch(2), leader_epoch=0)
        assert _drain(reader) == [500, 501]
