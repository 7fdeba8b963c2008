"""verify_replica finds each kind of damage (and nothing on a sound log); dump_replica shows
exactly what was written."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from kctl.storage.log import LEADER_EPOCH_FILE, STATE_FILE, Log, LogConfig
from kctl.storage.records import encode_batch
from kctl.storage.segment import LogSegment, list_segment_bases
from kctl.storage.verify import dump_replica, verify_replica

CONFIG = LogConfig(segment_bytes=900, index_interval_bytes=150)


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[tuple[int, bytes | None, bytes | None, int]]]:
    directory = str(tmp_path_factory.mktemp("sound") / "t-0")
    written = []
    with Log.create(directory, CONFIG) as log:
        for i in range(40):
            keys = [f"k{i}".encode(), None]
            values = [f"value {i}".encode(), None if i % 5 == 0 else b"x" * i]
            info = log.append(encode_batch(values, keys=keys, timestamps=[100 + i, 99 + i]), leader_epoch=i // 10)
            written += [(info.base_offset, keys[0], values[0], 100 + i),
                        (info.base_offset + 1, None, values[1], 99 + i)]
        assert len(log.segment_bases) >= 4
    return directory, written


@pytest.fixture
def damaged(sound: tuple, tmp_path: Path) -> str:
    target = str(tmp_path / "t-0")
    shutil.copytree(sound[0], target)
    return target


def _segment_file(directory: str, index: int, suffix: str = ".log") -> str:
    return os.path.join(directory, f"{list_segment_bases(directory)[index]:020d}{suffix}")


def _poke(path: str, position: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(data)


def _messages(directory: str) -> list[str]:
    return [p.message for p in verify_replica(directory)]


def test_a_sound_log_verifies_clean(sound: tuple) -> None:
    assert verify_replica(sound[0]) == []


def test_dump_matches_what_was_written(sound: tuple) -> None:
    directory, written = sound
    dumped = list(dump_replica(directory, print_data=True))
    assert all(d.crc_valid for d in dumped)
    rows = [(r.offset, r.key, r.value, r.timestamp) for d in dumped for r in d.records or []]
    assert rows == written
    assert [d.header.partition_leader_epoch for d in dumped] == [i // 10 for i in range(40)]
    assert {d.segment for d in dumped} == {f"{b:020d}.log" for b in list_segment_bases(directory)}
    positions = {}
    for d in dumped:
        assert d.position == positions.get(d.segment, 0)
        positions[d.segment] = d.position + d.header.size
    assert [d.records for d in dump_replica(directory)] == [None] * 40


def test_dump_shows_only_published_batches(damaged: str) -> None:
    with Log.open(damaged, CONFIG) as log:
        end = log.state.active_size
        active = log.state.active_base_offset
        leo = log.log_end_offset
    # a writer killed after writing a batch but before publishing it
    LogSegment(damaged, active).write(end, encode_batch([b"unpublished"], base_offset=leo, timestamp=1))
    assert max(d.header.base_offset for d in dump_replica(damaged)) < leo
    assert verify_replica(damaged) == []


def test_flipped_byte_fails_the_crc(damaged: str) -> None:
    path = _segment_file(damaged, 1)
    _poke(path, 70, b"\xee")
    problems = verify_replica(damaged)
    assert len(problems) == 1 and problems[0].path == path and "CRC" in problems[0].message
    assert problems[0].position == 0
    assert not next(d for d in dump_replica(damaged) if d.segment == os.path.basename(path)).crc_valid


def test_flipped_base_offset_is_caught_although_outside_the_crc(damaged: str) -> None:
    path = _segment_file(damaged, 2)
    second = next(p for p, _h in LogSegment(damaged, list_segment_bases(damaged)[2]).batches() if p > 0)
    _poke(path, second + 7, b"\x7f")
    assert any("skip" in m or "backwards" in m for m in _messages(damaged))


def test_index_entry_pointing_nowhere(damaged: str) -> None:
    path = _segment_file(damaged, 0, ".index")
    assert os.path.getsize(path) >= 16
    _poke(path, 8, struct.pack(">ii", 3, 17))
    problems = verify_replica(damaged)
    assert [(p.path, p.position) for p in problems] == [(path, 8)]
    assert "points at no matching batch" in problems[0].message


@pytest.mark.parametrize("damage", ["wrong timestamp", "odd size", "missing final entry"])
def test_time_index_damage(damaged: str, damage: str) -> None:
    path = _segment_file(damaged, 0, ".timeindex")
    if damage == "wrong timestamp":
        _poke(path, 0, struct.pack(">q", 5))
    elif damage == "odd size":
        with open(path, "ab") as f:
            f.write(b"\1")
    else:
        os.truncate(path, os.path.getsize(path) - 12)
    problems = verify_replica(damaged)
    assert problems and all(p.path == path for p in problems)


def test_segment_shorter_than_its_published_end(damaged: str) -> None:
    path = _segment_file(damaged, -1)
    os.truncate(path, os.path.getsize(path) - 10)
    messages = _messages(damaged)
    assert any("shorter" in m for m in messages)


def test_torn_batch_in_a_rolled_segment(damaged: str) -> None:
    path = _segment_file(damaged, 1)
    os.truncate(path, os.path.getsize(path) - 10)
    problems = verify_replica(damaged)
    assert any(p.path == path and "runs past the end" in p.message for p in problems)


def test_damaged_state_and_checkpoint(damaged: str) -> None:
    _poke(os.path.join(damaged, STATE_FILE), 30, b"\x01\x02")
    with open(os.path.join(damaged, LEADER_EPOCH_FILE), "w") as f:
        f.write("0\n7\n1 2\n")
    messages = _messages(damaged)
    assert any("fails its CRC" in m for m in messages)
    assert any("expected 7 entries" in m for m in messages)


def test_checkpoint_without_the_published_epoch(damaged: str) -> None:
    with open(os.path.join(damaged, LEADER_EPOCH_FILE), "w") as f:
        f.write("0\n1\n0 0\n")
    assert any("published latest epoch" in m for m in _messages(damaged))


def test_missing_active_segment(damaged: str) -> None:
    LogSegment(damaged, list_segment_bases(damaged)[-1]).delete()
    messages = _messages(damaged)
    assert any("does not exist" in m for m in messages) and any("disagrees" in m for m in messages)
