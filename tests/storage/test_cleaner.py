"""The log cleaner: compaction keeps exactly the latest record per key below the high watermark,
never moves an offset, leaves the active segment alone, and keeps the replica valid (CRCs,
contiguous batches, indexes) for kctl's readers and for Kafka's own record parser."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kctl.storage.cleaner import (
    CLEANER_CHECKPOINT_FILE,
    clean_log,
    cleanable_segments,
    dirty_ratio,
    finish_interrupted_swaps,
    read_first_dirty_offset,
)
from kctl.storage.log import Log, LogConfig, LogReader
from kctl.storage.records import Compression, decode_batch, encode_batch, encode_batch_with_deltas
from kctl.storage.segment import list_segment_bases
from kctl.storage.verify import dump_replica, verify_replica
from tests.storage.log_helpers import read_all, segment_files

DAY = 24 * 3600 * 1000
NOW = 10 * DAY


@dataclass(frozen=True)
class Written:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    batch_max_timestamp: int


def _config(**kw: object) -> LogConfig:
    cfg = LogConfig(segment_bytes=600, index_interval_bytes=100, retention_ms=-1, cleanup_policy="compact",
                    delete_retention_ms=DAY)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _append(log: Log, rows: list[tuple[bytes | None, bytes | None]], timestamp: int, *,
            compression: Compression = Compression.NONE, headers: bool = False, epoch: int = 0,
            producer_id: int = -1, base_sequence: int = -1) -> list[Written]:
    hdrs = [(("h", k),) for k, _v in rows] if headers else None
    batch = encode_batch([v for _k, v in rows], keys=[k for k, _v in rows], headers=hdrs,
                         timestamps=[timestamp + i for i in range(len(rows))], compression=compression,
                         producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                         base_sequence=base_sequence)
    log.refresh()
    info = log.append(batch, leader_epoch=epoch, now_ms=timestamp)
    max_ts = timestamp + len(rows) - 1
    return [Written(info.base_offset + i, timestamp + i, k, v, tuple(hdrs[i]) if hdrs else (), max_ts)
            for i, (k, v) in enumerate(rows)]


def _expected(written: list[Written], clean_upto: int, cleaned_below: int, now: int, retention: int
              ) -> list[tuple]:
    """The model: below ``cleaned_below`` the latest record per key (among those below
    ``clean_upto``), minus expired tombstones and keyless records; everything else untouched."""
    latest = {w.key: w.offset for w in written if w.offset < clean_upto and w.key is not None}
    out = []
    for w in written:
        if w.offset < cleaned_below:
            if w.key is None or latest[w.key] != w.offset:
                continue
            if w.value is None and now - w.batch_max_timestamp > retention:
                continue
        out.append((w.offset, w.timestamp, w.key, w.value, w.headers))
    return out


def _read(directory: str) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in read_all(directory)]


def _batch_bounds(directory: str) -> list[tuple[int, int]]:
    return [(b.header.base_offset, b.header.last_offset) for b in dump_replica(directory)]


def _kafka_parses(directory: str) -> list[tuple[int, bytes | None, bytes | None]]:
    """Every record of every segment as kafka-python's MemoryRecords reads it (CRCs checked)."""
    from kafka.record import MemoryRecords

    out = []
    for path in segment_files(directory):
        with open(path, "rb") as f:
            records = MemoryRecords(f.read())
        while True:
            batch = records.next_batch()
            if batch is None:
                break
            assert batch.validate_crc()
            out.extend((r.offset, r.key, r.value) for r in batch)
    return out


KEYS = st.one_of(st.none(), st.sampled_from([bytes([c]) for c in b"abcdefghijklmnop"]))
VALUES = st.one_of(st.none(), st.binary(min_size=1, max_size=30))
BATCHES = st.lists(
    st.tuples(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=6),
              st.integers(0, 3 * DAY),  # age of the batch at NOW
              st.sampled_from([Compression.NONE, Compression.NONE, Compression.GZIP]),
              st.booleans()),
    min_size=3, max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=BATCHES, hw_fraction=st.one_of(st.just(1.0), st.floats(0, 1)), passes=st.integers(1, 2))
def test_cleaning_keeps_the_latest_record_per_key_and_every_offset(batches, hw_fraction, passes):
    root = tempfile.mkdtemp(prefix="kctl-clean-")
    directory = os.path.join(root, "t-0")
    try:
        log = Log.create(directory, _config(segment_bytes=300))
        written: list[Written] = []
        for rows, age, codec, headers in sorted(batches, key=lambda b: -b[1]):  # oldest first
            written += _append(log, rows, NOW - age, compression=codec, headers=headers)
        log.refresh()
        clean_upto = int(log.log_end_offset * hw_fraction)
        segments = cleanable_segments(log, clean_upto)
        cleaned_below = segments[-1][1] if segments else 0
        bounds = _batch_bounds(directory)
        for _ in range(passes):
            log.refresh()
            result = clean_log(log, clean_upto, NOW)
        expected = _expected(written, clean_upto, cleaned_below, NOW, DAY)
        assert _read(directory) == expected
        offsets = [r[0] for r in expected]
        assert offsets == sorted(set(offsets))
        assert _batch_bounds(directory) == bounds  # every batch kept, none moved
        assert verify_replica(directory) == []
        assert _kafka_parses(directory) == [(r[0], r[2], r[3]) for r in expected]
        assert read_first_dirty_offset(directory) == (cleaned_below if segments else None)
        assert result.first_dirty_offset == (cleaned_below if segments else log.log_start_offset)
        assert dirty_ratio(log, clean_upto) == 0.0
        # the cleaned log recovers to the same records and takes appends after them
        log.close()
        log = Log.open(directory, _config(segment_bytes=300), recover=True)
        assert _read(directory) == expected
        more = _append(log, [(b"z", b"after")], NOW)
        assert _read(directory) == expected + [(w.offset, w.timestamp, w.key, w.value, w.headers) for w in more]
        log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _log_with_updates(directory: str, keys: int = 4, rounds: int = 10, **cfg: object) -> tuple[Log, list[Written]]:
    log = Log.create(directory, _config(**{"segment_bytes": 250, **cfg}))
    written = []
    for r in range(rounds):
        written += _append(log, [(f"k{i}".encode(), f"v{r}-{i}".encode()) for i in range(keys)], NOW - DAY // 2)
    log.refresh()
    return log, written


def test_the_active_segment_and_records_above_the_high_watermark_are_left_alone(tmp_path):
    directory = str(tmp_path / "t-0")
    log, written = _log_with_updates(directory)
    assert len(log.segment_bases) > 2
    active = log.state.active_base_offset
    result = clean_log(log, log.log_end_offset, NOW)
    assert result.segments and max(result.segments) < active
    after = _read(directory)
    # everything in the active segment is still there, superseded or not
    assert [r for r in after if r[0] >= active] == \
        [(w.offset, w.timestamp, w.key, w.value, w.headers) for w in written if w.offset >= active]
    # below it, one record per key at most, and never one that a later record supersedes
    below = [r for r in after if r[0] < active]
    latest = {w.key: w.offset for w in written}
    assert all(latest[r[2]] == r[0] for r in below)


def test_a_record_above_the_high_watermark_supersedes_nothing(tmp_path):
    directory = str(tmp_path / "t-0")
    log = Log.create(directory, _config(segment_bytes=100))
    first = _append(log, [(b"k", b"old")], NOW)
    _append(log, [(b"x", b"pad")], NOW)
    hw = log.log_end_offset
    _append(log, [(b"k", b"uncommitted")], NOW)
    log.refresh()
    assert len(log.segment_bases) == 3
    clean_log(log, hw, NOW)
    assert (first[0].offset, b"old") in [(r[0], r[3]) for r in _read(directory)]
    clean_log(log, log.log_end_offset, NOW)
    assert b"old" not in [r[3] for r in _read(directory)]


def test_tombstones_stay_for_delete_retention_then_go_and_keyless_records_go(tmp_path):
    directory = str(tmp_path / "t-0")
    log = Log.create(directory, _config(segment_bytes=150))
    _append(log, [(b"old", b"1")], NOW - 3 * DAY)
    _append(log, [(b"old", None)], NOW - 2 * DAY)          # expired tombstone
    _append(log, [(b"new", b"1")], NOW - 3 * DAY)
    _append(log, [(b"new", None)], NOW - DAY // 2)         # tombstone within retention
    _append(log, [(None, b"keyless")], NOW)
    _append(log, [(b"live", b"1")], NOW)
    _append(log, [(b"tail", b"1")], NOW)
    log.refresh()
    result = clean_log(log, log.log_end_offset, NOW)
    rows = [(r[2], r[3]) for r in _read(directory)]
    assert (b"new", None) in rows
    assert all(k != b"old" for k, _v in rows)
    assert (None, b"keyless") not in rows
    assert (b"live", b"1") in rows
    assert result.tombstones_removed == 1
    assert result.records_removed >= 3  # old=1, new=1, the keyless record
    assert verify_replica(directory) == []


def test_an_emptied_batch_stays_as_an_empty_batch_with_its_producer_fields(tmp_path):
    directory = str(tmp_path / "t-0")
    log = Log.create(directory, _config(segment_bytes=200))
    _append(log, [(b"k", b"1"), (b"k", b"2"), (b"k", b"3")], NOW, producer_id=77, base_sequence=5, epoch=3)
    _append(log, [(b"k", b"4")], NOW, epoch=3)
    _append(log, [(b"pad", b"x" * 100)], NOW, epoch=3)
    log.refresh()
    clean_log(log, log.log_end_offset, NOW)
    first = next(iter(dump_replica(directory)))
    h = first.header
    assert (h.base_offset, h.last_offset_delta, h.records_count) == (0, 2, 0)
    assert (h.producer_id, h.producer_epoch, h.base_sequence, h.partition_leader_epoch) == (77, 0, 5, 3)
    assert first.crc_valid
    assert [(r[0], r[3]) for r in _read(directory)][:1] == [(3, b"4")]


def test_a_partly_kept_batch_keeps_offset_deltas_and_compression(tmp_path):
    directory = str(tmp_path / "t-0")
    log = Log.create(directory, _config(segment_bytes=200))
    _append(log, [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1")], NOW, compression=Compression.GZIP)
    _append(log, [(b"b", b"2")], NOW)
    _append(log, [(b"pad", b"x" * 150)], NOW)
    log.refresh()
    clean_log(log, log.log_end_offset, NOW)
    first = next(iter(dump_replica(directory, print_data=True)))
    assert first.header.compression == Compression.GZIP
    assert [(r.offset, r.key, r.value) for r in first.records or []] == [(2, b"a", b"2"), (3, b"c", b"1")]


def test_the_dirty_ratio_and_the_checkpoint_follow_kafka(tmp_path):
    directory = str(tmp_path / "t-0")
    log, _ = _log_with_updates(directory)
    assert dirty_ratio(log, 0) == 0.0
    assert dirty_ratio(log, log.log_end_offset) == 1.0
    result = clean_log(log, log.log_end_offset, NOW)
    assert result.dirty_ratio == 1.0
    with open(os.path.join(directory, CLEANER_CHECKPOINT_FILE)) as f:
        assert f.read() == f"0\n1\nt 0 {result.first_dirty_offset}\n"
    assert dirty_ratio(log, log.log_end_offset) == 0.0
    for r in range(10):
        _append(log, [(b"k0", f"again-{r}".encode()), (b"k1", b"x")], NOW)
    log.refresh()
    assert 0.0 < dirty_ratio(log, log.log_end_offset) < 1.0


def test_a_reader_in_the_middle_of_a_segment_carries_on_across_a_cleaning(tmp_path):
    directory = str(tmp_path / "t-0")
    log, written = _log_with_updates(directory, keys=6, rounds=12)
    with LogReader(directory) as reader:
        reader.seek(0)
        chunk, headers = reader.read(1 << 62, 100)
        got = [r for pos, _h in headers for r in decode_batch(chunk, pos)[1]]
        clean_log(log, log.log_end_offset, NOW)
        while True:
            chunk, headers = reader.read(1 << 62, 300)
            if not headers:
                break
            got += [r for pos, _h in headers for r in decode_batch(chunk, pos)[1]]
    offsets = [r.offset for r in got]
    assert offsets == sorted(set(offsets))
    # after the first chunk it reads the cleaned log: each key's latest record is there
    latest = {w.key: w.offset for w in written}
    assert set(latest.values()) <= set(offsets)
    assert len(got) < len(written)


def test_an_interrupted_swap_is_completed_or_discarded(tmp_path):
    directory = str(tmp_path / "t-0")
    log, _ = _log_with_updates(directory)
    base = log.segment_bases[0]
    stem = os.path.join(directory, f"{base:020d}")
    before = _read(directory)
    # a complete set renamed to .swap but not yet over the live files: completed
    empty = encode_batch_with_deltas([], base_offset=0, last_offset_delta=3, max_timestamp=NOW)
    with open(stem + ".log", "rb") as f:
        original = f.read()
    first_size = decode_batch(original)[0].size
    with open(stem + ".log.swap", "wb") as f:
        f.write(empty + original[first_size:])
    for suffix in (".index.swap", ".timeindex.swap"):
        open(stem + suffix, "wb").close()
    open(stem + ".log.cleaned", "wb").close()
    assert finish_interrupted_swaps(directory) == [base]
    assert not [n for n in os.listdir(directory) if n.endswith((".swap", ".cleaned"))]
    log.close()
    log = Log.open(directory, _config(), recover=True)
    assert _read(directory) == before[4:]
    assert verify_replica(directory) == []
    # an incomplete set (no .log.swap) is thrown away and changes nothing
    base2 = log.segment_bases[1]
    open(os.path.join(directory, f"{base2:020d}.index.swap"), "wb").close()
    assert finish_interrupted_swaps(directory) == []
    assert _read(directory) == before[4:]
    log.close()


def test_segment_files_stay_sorted_and_named_by_base_offset(tmp_path):
    directory = str(tmp_path / "t-0")
    log, _ = _log_with_updates(directory)
    bases = list_segment_bases(directory)
    clean_log(log, log.log_end_offset, NOW)
    assert list_segment_bases(directory) == bases
    assert not [n for n in os.listdir(directory) if n.endswith((".swap", ".cleaned"))]
