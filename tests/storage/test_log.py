"""Log: appends and their validation, torn appends by killed writers, segments a killed roll
left behind, several Log instances (processes) on one replica, retention, timestamps."""

from __future__ import annotations

import multiprocessing
import os
import struct
from pathlib import Path

import pytest

from kctl.errors import CorruptRecordError, RecordTooLargeError
from kctl.storage.log import STATE_FILE, Log, LogConfig, LogEndState, LogReader, ReplicaStateFile
from kctl.storage.records import encode_batch, read_header
from kctl.storage.segment import LogSegment, list_segment_bases
from kctl.storage.verify import verify_replica
from tests.storage.log_helpers import read_all, simple_batch

SMALL = LogConfig(segment_bytes=600, index_interval_bytes=100)


def _values(directory: str) -> list[bytes | None]:
    return [r.value for r in read_all(directory)]


def _fill(log: Log, batches: int, per_batch: int = 3, start: int = 0, epoch: int = 0) -> None:
    for i in range(batches):
        log.append(simple_batch(per_batch, start=start + i * per_batch, timestamp=1000 + i), leader_epoch=epoch)


@pytest.fixture
def directory(tmp_path: Path) -> str:
    return str(tmp_path / "topic-0")


# -- appends -------------------------------------------------------------------------------------
def test_append_assigns_offsets_stamps_epoch_and_keeps_the_crc(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        infos = [log.append(simple_batch(n, timestamp=5), leader_epoch=7) for n in (1, 4, 2)]
        assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 0), (1, 4), (5, 6)]
        assert log.log_end_offset == 7 and log.epoch_entries == [(7, 0)]
    with LogReader(directory) as reader:
        reader.seek(0)
        _chunk, headers = reader.read(100)
    assert [(h.base_offset, h.partition_leader_epoch) for _p, h in headers] == [(0, 7), (1, 7), (5, 7)]
    assert verify_replica(directory) == []


def test_append_accepts_bytes_bytearray_and_memoryview_like_input(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        batch = simple_batch(2)
        log.append(batch, leader_epoch=0)
        log.append(bytearray(batch), leader_epoch=0)
    assert _values(directory) == [b"v0".ljust(20, b"."), b"v1".ljust(20, b".")] * 2


@pytest.mark.parametrize("damage", ["crc", "partial", "trailing", "too large", "magic"])
def test_rejected_append_writes_nothing(directory: str, damage: str) -> None:
    with Log.create(directory, LogConfig(max_message_bytes=300)) as log:
        log.append(simple_batch(2), leader_epoch=1)
        batch = bytearray(simple_batch(3))
        if damage == "crc":
            batch[-1] ^= 0x40
        elif damage == "partial":
            batch = batch[:-5]
        elif damage == "trailing":
            batch += b"\0" * 7
        elif damage == "too large":
            batch = bytearray(simple_batch(20, size=40))
        else:
            batch[16] = 1
        error = RecordTooLargeError if damage == "too large" else CorruptRecordError
        with pytest.raises(error):
            log.append(bytes(batch), leader_epoch=2)
        assert log.log_end_offset == 2 and log.epoch_entries == [(1, 0)]
        assert os.path.getsize(os.path.join(directory, f"{0:020d}.log")) == log.state.active_size
        log.append(simple_batch(1, start=9), leader_epoch=2)
        assert log.log_end_offset == 3
    assert verify_replica(directory) == []
    assert len(_values(directory)) == 3


@pytest.mark.parametrize("damage", ["gap", "overlap", "crc", "partial", "partial header"])
def test_rejected_replicated_chunk_changes_nothing(directory: str, damage: str) -> None:
    """The whole chunk is checked before anything is written or the state moves, even when a
    roll would happen half-way through it."""
    with Log.create(directory, SMALL) as log:
        log.append_replicated(simple_batch(3, base_offset=0, epoch=1))
        good = [simple_batch(5, start=3 + 5 * i, base_offset=3 + 5 * i, epoch=2) for i in range(6)]
        chunk = bytearray(b"".join(good))
        last = len(chunk) - len(good[-1])
        if damage == "gap":
            struct.pack_into(">q", chunk, last, 3 + 5 * 5 + 1)
        elif damage == "overlap":
            struct.pack_into(">q", chunk, last, 3 + 5 * 5 - 1)
        elif damage == "crc":
            chunk[-1] ^= 1
        elif damage == "partial":
            chunk = chunk[:-1]
        else:
            chunk = chunk[: last + 30]
        before = (log.log_end_offset, list(log.segment_bases), log.state.active_size)
        with pytest.raises(CorruptRecordError):
            log.append_replicated(bytes(chunk))
        assert (log.log_end_offset, list(log.segment_bases), log.state.active_size) == before
        assert log.epoch_entries == [(1, 0)]
        assert log.append_replicated(b"".join(good)) == 33
        assert log.epoch_entries == [(1, 0), (2, 3)]
    assert verify_replica(directory) == []
    assert [r.offset for r in read_all(directory)] == list(range(33))


def test_rolls_at_segment_bytes_and_segment_ms(directory: str) -> None:
    batch = simple_batch(3)
    with Log.create(directory, LogConfig(segment_bytes=len(batch) * 3, segment_ms=1000)) as log:
        for _ in range(7):
            log.append(batch, leader_epoch=0, now_ms=log.state.active_created_ms)
        assert log.segment_bases == [0, 9, 18]
        log.append(batch, leader_epoch=0, now_ms=log.state.active_created_ms + 1001)
        assert log.segment_bases == [0, 9, 18, 21]
        log.roll()
        log.roll()  # a no-op on an empty active segment
        assert log.segment_bases == [0, 9, 18, 21, 24]
    assert verify_replica(directory) == []
    assert len(_values(directory)) == 24


def test_state_layout_version_1_still_reads() -> None:
    fields = (10, 2, 8, 300, 1, 1, 50, 999, 9, 999, 3, 5, 12345)
    body = struct.pack(">4sH2x" + "q" * 13, b"KLES", 1, *fields)
    from kctl.storage.crc import crc32c

    state = LogEndState.unpack(body + struct.pack(">I", crc32c(body)))
    assert state == LogEndState(*fields, generation=0)
    assert LogEndState.unpack(state.pack()) == state
    assert LogEndState.unpack(body + b"\0\0\0\0") is None


# -- torn appends --------------------------------------------------------------------------------
def test_bytes_past_the_published_end_are_never_served_and_are_cut_by_the_next_append(directory: str) -> None:
    with Log.create(directory, LogConfig(index_interval_bytes=50)) as log:
        _fill(log, 4)
        published = log.state.active_size
        entries = log.state.index_entries
    seg = LogSegment(directory, 0)
    # a writer killed half-way: a whole batch, then half a batch, then junk index entries
    tail = simple_batch(3, start=100, base_offset=12) + simple_batch(3, start=200, base_offset=15)[:40]
    seg.write(published, tail)
    seg.append_index(entries, 13, published)
    seg.append_time_index(9, 77, 13)
    seg.close()
    assert [r.offset for r in read_all(directory)] == list(range(12))
    assert verify_replica(directory) == []
    other = Log(directory, LogConfig(index_interval_bytes=50))  # another process
    try:
        other.refresh()
        info = other.append(simple_batch(2, start=300), leader_epoch=0)
        assert (info.base_offset, info.last_offset) == (12, 13)
        assert os.path.getsize(os.path.join(directory, f"{0:020d}.log")) == other.state.active_size
    finally:
        other.close()
    values = _values(directory)
    assert len(values) == 14 and values[12].startswith(b"v300")
    assert verify_replica(directory) == []


def _killed_appender(directory: str, cut: int) -> None:
    """Append one batch and die half-way through writing it (as SIGKILL would leave it)."""
    log = Log(directory)
    log.refresh()

    def dying_write(self: LogSegment, position: int, head: bytes, body: memoryview) -> None:
        data = bytes(head) + bytes(body)
        os.pwrite(self.log_fd, data[:cut], position)
        os._exit(9)

    LogSegment.write_parts = dying_write  # type: ignore[method-assign]
    log.append(simple_batch(4, start=500), leader_epoch=3)


@pytest.mark.parametrize("cut", [10, 61, 100])
def test_writer_killed_mid_append(directory: str, cut: int) -> None:
    with Log.create(directory) as log:
        _fill(log, 3)
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_killed_appender, args=(directory, cut))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    assert [r.offset for r in read_all(directory)] == list(range(9))
    assert verify_replica(directory) == []
    with LogReader(directory) as reader:
        assert reader.leader_epochs() == [(0, 0)]  # the dead writer's epoch 3 was never published
    log = Log(directory)
    try:
        log.refresh()
        assert log.epoch_entries == [(0, 0)]
        info = log.append(simple_batch(1, start=900), leader_epoch=4)
        assert info.base_offset == 9 and log.epoch_entries == [(0, 0), (4, 9)]
    finally:
        log.close()
    assert [r.offset for r in read_all(directory)] == list(range(10))
    assert verify_replica(directory) == []


def test_segment_left_by_a_killed_roll_is_ignored_then_removed(directory: str) -> None:
    """A writer killed while rolling leaves a new segment nobody published. Writers that come
    after it may roll at other offsets; the stray must never be read as part of the log."""
    batch = simple_batch(3)
    cfg = LogConfig(segment_bytes=len(batch) * 4)
    with Log.create(directory, cfg) as log:
        _fill(log, 3)
        end = log.log_end_offset
    # the killed roll: a segment at the log end holding a (never published) batch
    stray = LogSegment(directory, end)
    stray.create()
    stray.write(0, simple_batch(3, start=700, base_offset=end))
    stray.close()
    log = Log(directory, LogConfig(segment_bytes=len(batch) * 5))  # a writer with another config
    try:
        log.refresh()
        assert log.segment_bases == [0]
        _fill(log, 3, start=1000)  # fills segment 0 past the stray's base, then rolls
        assert [r.offset for r in read_all(directory)] == list(range(18))
        assert verify_replica(directory) == []
        assert end not in list_segment_bases(directory)
    finally:
        log.close()
    values = _values(directory)
    assert not any(v.startswith(b"v70") for v in values)
    with Log.open(directory, cfg, recover=True) as log:
        assert log.log_end_offset == 18
    assert [r.offset for r in read_all(directory)] == list(range(18))


def test_recovery_keeps_a_stray_segment_only_if_it_continues_the_log(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        _fill(log, 2)
    stray = LogSegment(directory, 6)
    stray.create()
    stray.write(0, simple_batch(2, start=40, base_offset=6))
    stray.close()
    gap = LogSegment(directory, 50)
    gap.create()
    gap.write(0, simple_batch(2, start=50, base_offset=50))
    gap.close()
    with Log.open(directory, SMALL, recover=True) as log:
        # what a crashed roll wrote whole is kept, as Kafka keeps unflushed data; a gap is not
        assert log.log_end_offset == 8 and log.segment_bases == [0, 6]
    assert [r.offset for r in read_all(directory)] == list(range(8))
    assert verify_replica(directory) == []


# -- several instances (processes) on one replica ------------------------------------------------
def test_writer_with_stale_handles_after_another_truncated_fully(directory: str) -> None:
    """Process A holds the segment open; process B deletes and recreates it (a follower that
    fell behind). A's next append must land in the new file, not the deleted one."""
    with Log.create(directory, SMALL) as a:
        _fill(a, 2)
        b = Log(directory, SMALL)
        try:
            b.refresh()
            b.truncate_fully(0)
            b.append(simple_batch(1, start=50), leader_epoch=2)
        finally:
            b.close()
        a.refresh()
        assert a.log_end_offset == 1 and a.epoch_entries == [(2, 0)]
        info = a.append(simple_batch(1, start=60), leader_epoch=2)
        assert info.base_offset == 1
    assert _values(directory) == [b"v50".ljust(20, b"."), b"v60".ljust(20, b".")]
    assert verify_replica(directory) == []


def test_writers_take_turns(directory: str) -> None:
    """Instances that refresh before each change see each other's appends, rolls, truncations
    and retention."""
    logs = [Log.create(directory, SMALL), Log(directory, SMALL)]
    try:
        expected = 0
        for i in range(30):
            log = logs[i % 2]
            log.refresh()
            if i % 7 == 6:
                log.truncate_to(expected - 2)
                expected = log.log_end_offset
            elif i % 11 == 10:
                log.delete_segments_below(log.segment_bases[-1])
            else:
                log.append(simple_batch(3, start=i * 10), leader_epoch=i // 5)
                expected += 3
            assert log.log_end_offset == expected
            assert verify_replica(directory) == []
        logs[0].refresh()
        assert logs[0].epoch_entries == logs[1].epoch_entries
        with LogReader(directory) as reader:
            assert reader.leader_epochs() == logs[1].epoch_entries
    finally:
        for log in logs:
            log.close()
    offsets = [r.offset for r in read_all(directory)]
    assert offsets == list(range(offsets[0], expected))


def test_crash_mid_truncation_is_recovered(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        _fill(log, 12)
        bases = log.segment_bases
    assert len(bases) >= 3
    # a truncation that deleted the later segments and died before publishing
    for base in bases[1:]:
        LogSegment(directory, base).delete()
    with Log.open(directory, SMALL) as log:
        assert log.log_end_offset == bases[1]
    assert [r.offset for r in read_all(directory)] == list(range(bases[1]))
    assert verify_replica(directory) == []


def test_retention_never_touches_the_active_segment_or_data_above_the_high_watermark(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        _fill(log, 12)
        bases = log.segment_bases
        log.config.retention_bytes = 0
        assert log.delete_retained_segments(bases[2]) == bases[:2]
        assert log.log_start_offset == bases[2]
        assert log.delete_retained_segments(10**9) == bases[2:-1]
        assert log.segment_bases == bases[-1:] and log.log_start_offset == bases[-1]
    assert next(r.offset for r in read_all(directory)) == bases[-1]
    assert verify_replica(directory) == []


def test_cut_short_retention_leftovers_are_deleted_on_open(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        _fill(log, 12)
        bases = log.segment_bases
        log.state.log_start_offset = bases[2]
        log._publish()  # published, then killed before deleting the files
    with Log.open(directory, SMALL) as log:
        assert log.segment_bases == bases[2:]
    assert list_segment_bases(directory) == bases[2:]


def test_offset_for_timestamp_is_per_record_and_respects_the_log_start(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        log.append(encode_batch([b"a", b"b", b"c", b"d"], timestamps=[100, 300, 200, 400]), leader_epoch=0)
        log.append(encode_batch([b"e"], timestamp=250), leader_epoch=0)
        assert [log.offset_for_timestamp(t) for t in (0, 100, 101, 250, 300, 301, 400, 401)] == \
            [0, 0, 1, 1, 1, 3, 3, None]
        log.delete_segments_below(2)
        assert [log.offset_for_timestamp(t) for t in (0, 250, 300, 301)] == [2, 3, 3, 3]
        with LogReader(directory) as reader:
            assert reader.offset_for_timestamp(250) == 3


def test_end_offset_for_epoch_and_truncate_fully_clears_the_epoch_cache(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        for epoch, n in ((1, 3), (1, 2), (4, 1), (2, 5), (6, 2)):  # 2 < 4 is stamped but not cached
            log.append(simple_batch(n), leader_epoch=epoch)
        assert log.epoch_entries == [(1, 0), (4, 5), (6, 11)]
        assert [log.end_offset_for_epoch(e) for e in (0, 1, 3, 4, 5, 6, 9)] == \
            [(-1, -1), (1, 5), (1, 5), (4, 11), (4, 11), (6, 13), (6, 13)]
        log.truncate_fully(20)
        assert log.epoch_entries == [] and log.end_offset_for_epoch(9) == (-1, -1)
        assert (log.log_start_offset, log.log_end_offset) == (20, 20)


def test_state_file_regions_are_independent(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        _fill(log, 2)
        from kctl.storage.log import HighWatermark

        sf = ReplicaStateFile(directory)
        sf.write_high_watermark(HighWatermark(5, 2, 99))
        _fill(log, 2, start=50)
        assert sf.read_high_watermark() == HighWatermark(5, 2, 99)
        assert sf.read_log_end() == log.state
        sf.close()
    assert os.path.getsize(os.path.join(directory, STATE_FILE)) <= 256


def test_large_batch_in_a_small_segment(directory: str) -> None:
    big = simple_batch(50, size=100)
    with Log.create(directory, LogConfig(segment_bytes=1000, max_message_bytes=1 << 20)) as log:
        for i in range(3):
            log.append(big, leader_epoch=0)
            assert log.segment_bases == list(range(0, 50 * (i + 1), 50))
    assert read_header(big).size > 1000
    assert len(read_all(directory, max_bytes=10)) == 150
    assert verify_replica(directory) == []


def test_roll_by_another_writer_does_not_seal_a_killed_writers_tail(directory: str) -> None:
    with Log.create(directory, SMALL) as log:
        _fill(log, 2)
        published = log.state.active_size
    LogSegment(directory, 0).write(published, b"\x07" * 90)  # a killed writer's half batch
    other = Log(directory, SMALL)
    try:
        other.refresh()
        other.roll()
        other.append(simple_batch(1, start=77), leader_epoch=0)
    finally:
        other.close()
    assert os.path.getsize(os.path.join(directory, f"{0:020d}.log")) == published
    assert [r.offset for r in read_all(directory)] == list(range(7))
    assert verify_replica(directory) == []
