"""The bookkeeping behind the duplicate check: the kctl.input/kctl.stream headers and the file of
remembered output positions."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from kctl.storage.records import Record
from kctl.streams.positions import MAX_ENTRIES, PositionsFile, parse_input_header


def _rec(headers):
    return Record(0, 0, None, b"v", tuple(headers))


def test_input_header_is_read_only_for_its_group():
    rec = _rec([("x", b"1"), ("kctl.stream", b"stream-a"), ("kctl.input", b"orders:2:41")])
    assert parse_input_header(rec) == ("orders", 2, 41)
    assert parse_input_header(rec, "stream-a") == ("orders", 2, 41)
    assert parse_input_header(rec, "stream-b") is None
    assert parse_input_header(_rec([("kctl.input", b"orders:2:41")]), "stream-a") is None
    assert parse_input_header(_rec([("kctl.input", b"garbage")])) is None
    assert parse_input_header(_rec([])) is None


@given(st.from_regex(r"[a-zA-Z0-9._-]{1,30}", fullmatch=True), st.integers(0, 10_000), st.integers(0, 2**62))
def test_input_header_round_trip(topic, partition, offset):
    rec = _rec([("kctl.stream", b"g"), ("kctl.input", f"{topic}:{partition}:{offset}".encode())])
    assert parse_input_header(rec, "g") == (topic, partition, offset)


def test_positions_pick_the_newest_entry_at_or_below_the_commit(tmp_path):
    path = str(tmp_path / "g" / "t-0" / "positions.json")
    pf = PositionsFile(path)
    assert pf.entry_for(100) is None
    pf.add(10, {0: 5, 1: 7})
    pf.add(20, {0: 9, 1: 7})
    again = PositionsFile(path)
    assert again.entry_for(9) is None
    assert again.entry_for(10) == {0: 5, 1: 7}
    assert again.entry_for(19) == {0: 5, 1: 7}
    assert again.entry_for(1000) == {0: 9, 1: 7}


def test_positions_keep_only_recent_entries(tmp_path):
    pf = PositionsFile(str(tmp_path / "p.json"))
    for d in range(1, 30):
        pf.add(d, {0: d * 10})
    assert len(pf.entries) == MAX_ENTRIES
    assert PositionsFile(pf.path).entry_for(29) == {0: 290}
    assert PositionsFile(pf.path).entry_for(5) is None


def test_damaged_positions_file_means_a_full_scan(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{not json")
    assert PositionsFile(str(path)).entry_for(10) is None
    path.write_text(json.dumps({"entries": [{"input_offset": "x"}]}))
    assert PositionsFile(str(path)).entry_for(10) is None
