"""The SQLite state store: transactions of changed keys plus its position, reopened intact."""

from __future__ import annotations

from kctl.streams.store import StateStore


def test_save_load_and_reopen(tmp_path):
    store = StateStore(str(tmp_path / "g" / "t-0"))
    assert store.load() == {} and store.meta() == {}
    store.save({b"a": {"count": 1}, b"b": {"count": 2}}, {"changelog_offset": 2, "input_offset": 1})
    store.save({b"a": {"count": 3}, b"b": None}, {"changelog_offset": 4, "input_offset": 3})
    store.close()
    again = StateStore(str(tmp_path / "g" / "t-0"))
    assert again.load() == {b"a": {"count": 3}}
    assert again.meta() == {"changelog_offset": "4", "input_offset": "3"}
    again.replace({b"z": {"count": 9}}, {"changelog_offset": 1})
    assert again.load() == {b"z": {"count": 9}}
    assert again.meta() == {"changelog_offset": "1"}
    again.close()
