"""Connector pieces without broker processes: the JSON shape of rows, change capture by
triggers, the sink's idempotent apply, the connector's lock, status and events, and the CLI's
errors."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.client.admin import Cluster
from kctl.client.consumer import FetchedBatch
from kctl.connect.file_source import FileSource, parse_position
from kctl.connect.runtime import POSITION_HEADER, STATUS_FILE, ConnectorDir, ConnectorRun
from kctl.connect.sqlite_common import Column, decode_value, encode_json, open_database, table_columns
from kctl.connect.sqlite_sink import SqliteSink
from kctl.connect.sqlite_source import SqliteSource, change_table, describe_schema_change
from kctl.connect.status import connector_status
from kctl.errors import ConnectorError
from kctl.storage.records import BatchHeader, Record
from tests.conftest import run_kctl

SQL_VALUES = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                       st.text(max_size=20), st.binary(max_size=20))


@settings(max_examples=200)
@given(values=st.lists(SQL_VALUES, min_size=1, max_size=6))
def test_a_row_survives_its_json_form(values):
    names = [f"c{i}" for i in range(len(values))]
    doc = json.loads(encode_json(names, values))
    assert list(doc) == names
    back = [decode_value(v) for v in doc.values()]
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]


@pytest.fixture
def cluster_dir(tmp_path) -> str:
    """An initialised cluster directory (no broker is started)."""
    path = str(tmp_path / "cluster")
    Cluster.init(path, brokers=1)
    return path


def _changes(db: str, name: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f'SELECT _kctl_op, id, v FROM "{change_table(name)}" ORDER BY _kctl_id').fetchall()
    finally:
        conn.close()


def test_triggers_capture_every_change_after_the_snapshot(cluster_dir, tmp_path):
    db = str(tmp_path / "s.db")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b")])
    source = SqliteSource(cluster_dir, db, "t", name="s")
    source._conn = open_database(db, lock_timeout=5, must_exist=True)
    assert source._install(table_columns(source._conn, "t")) == 2
    conn.execute("INSERT INTO t VALUES (3, 'c')")
    conn.execute("UPDATE t SET v = 'a2' WHERE id = 1")
    conn.execute("UPDATE t SET id = 20 WHERE id = 2")  # the key moves: a delete and an insert
    conn.execute("DELETE FROM t WHERE id = 3")
    assert _changes(db, "s") == [("r", 1, "a"), ("r", 2, "b"), ("c", 3, "c"), ("u", 1, "a2"),
                                 ("d", 2, "b"), ("u", 20, "b"), ("d", 3, "c")]
    source._conn.close()


def test_schema_changes_are_described():
    old = [Column("id", "INTEGER", 1), Column("name", "TEXT", 0), Column("gone", "", 0)]
    new = [Column("id", "INTEGER", 1), Column("name", "INT", 0), Column("extra", "REAL", 0)]
    text = describe_schema_change(old, new)
    assert "column 'extra' added" in text
    assert "column 'gone' removed" in text
    assert "column 'name' changed from TEXT to INT" in text


def _batch(topic: str, partition: int, rows: list[tuple[int, dict | None, dict | None]]) -> FetchedBatch:
    records = [Record(off, 0, None if k is None else json.dumps(k).encode(),
                      None if v is None else json.dumps(v).encode(), ()) for off, k, v in rows]
    header = BatchHeader(rows[0][0], 0, 0, 2, 0, 0, len(rows) - 1, 0, 0, -1, -1, -1, len(rows))
    return FetchedBatch(topic, partition, header, rows[0][0], records=records)


def test_the_sink_applies_upserts_and_deletes_once(cluster_dir, tmp_path):
    db = str(tmp_path / "d.db")
    sink = SqliteSink(cluster_dir, "t", db, "items")
    sink._conn = open_database(db, lock_timeout=5, must_exist=False)
    first = [_batch("t", 0, [(0, {"id": 1}, {"id": 1, "name": "a"}), (1, {"id": 2}, {"id": 2, "name": "b"}),
                             (2, {"id": 1}, {"id": 1, "name": "a2"})]),
             _batch("t", 1, [(0, {"id": 3}, {"id": 3, "name": "c", "blob": {"base64": "AAE="}})])]
    assert sink.apply(first) == {("t", 0): 3, ("t", 1): 1}
    rows = sink._conn.execute("SELECT id, name, blob FROM items ORDER BY id").fetchall()
    assert rows == [(1, "a2", None), (2, "b", None), (3, "c", b"\x00\x01")]
    # a replay of what was applied changes nothing; new records after it apply
    assert sink.apply(first) == {}
    assert sink.stats.skipped == 4
    sink.apply([_batch("t", 0, [(2, {"id": 1}, {"id": 1, "name": "stale"}), (3, {"id": 2}, None)])])
    rows = sink._conn.execute("SELECT id, name FROM items ORDER BY id").fetchall()
    assert rows == [(1, "a2"), (3, "c")]
    stored = sink._conn.execute("SELECT topic, partition, next_offset FROM _kctl_sink_offsets ORDER BY 1, 2")
    assert stored.fetchall() == [("t", 0, 4), ("t", 1, 1)]
    sink._conn.close()


def test_the_sink_upserts_into_a_table_without_a_unique_key(cluster_dir, tmp_path):
    db = str(tmp_path / "d.db")
    sqlite3.connect(db).execute("CREATE TABLE items (a, b, v)")
    sink = SqliteSink(cluster_dir, "t", db, "items")
    sink._conn = open_database(db, lock_timeout=5, must_exist=False)
    sink.apply([_batch("t", 0, [(0, {"a": 1, "b": "x"}, {"a": 1, "b": "x", "v": 1})])])
    sink.apply([_batch("t", 0, [(1, {"a": 1, "b": "x"}, {"a": 1, "b": "x", "v": 2}),
                                (2, {"a": 2, "b": "x"}, {"a": 2, "b": "x", "v": 3})])])
    assert sink._conn.execute("SELECT a, b, v FROM items ORDER BY a").fetchall() == [(1, "x", 2), (2, "x", 3)]
    with pytest.raises(ConnectorError, match="not JSON"):
        sink.apply([FetchedBatch("t", 0, _batch("t", 0, [(3, {"a": 1}, None)]).header, 3,
                                 records=[Record(3, 0, b"plain", b"text", ())])])
    sink._conn.close()


def test_a_connector_run_holds_its_lock_and_reports_its_state(cluster_dir):
    layout = Cluster(cluster_dir).layout
    config = {"connector_type": "file-source", "kind": "source", "file": "/x", "topic": "t"}
    with ConnectorRun(layout, "c1", config):
        with pytest.raises(ConnectorError, match="already running"), ConnectorRun(layout, "c1", config):
            pass
        (row,) = connector_status(cluster_dir)
        assert (row["name"], row["state"], row["pid"]) == ("c1", "running", os.getpid())
    assert connector_status(cluster_dir, "c1")[0]["state"] == "stopped"
    with pytest.raises(ConnectorError, match="already exists with topic 't'"), \
            ConnectorRun(layout, "c1", {**config, "topic": "other"}):
        pass
    with pytest.raises(RuntimeError), ConnectorRun(layout, "c1", config):
        raise RuntimeError("boom")
    (row,) = connector_status(cluster_dir)
    assert row["state"] == "failed" and "boom" in row["last_error"]
    # a status file that says running while nobody holds the lock: the process was killed
    cdir = ConnectorDir(layout, "c1")
    with open(cdir.file(STATUS_FILE), "w") as f:
        json.dump({"state": "running", "pid": 1}, f)
    assert connector_status(cluster_dir)[0]["state"] == "dead"
    kinds = [e["type"] for e in Cluster(cluster_dir).events() if e.get("connector") == "c1"]
    assert kinds == ["connector_started", "connector_stopped", "connector_started", "connector_error"]


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.failed = 0
        self.first_error = None

    def send(self, topic: str, value: bytes, **kw: Any) -> None:
        self.sent.append((value, dict(kw["headers"])[POSITION_HEADER]))

    def flush(self) -> None:
        pass


def test_the_file_source_produces_whole_lines_with_their_end_positions(cluster_dir, tmp_path):
    layout = Cluster(cluster_dir).layout
    source = FileSource(cluster_dir, str(tmp_path / "in.txt"), "t")
    source.stats.inode = 7
    producer = _FakeProducer()
    with ConnectorRun(layout, source.name, {"connector_type": "file-source", "topic": "t"}) as run:
        source._produce_lines(run, producer, b"ab\ncd\r\nunfinished", final=False)  # type: ignore[arg-type]
        assert producer.sent == [(b"ab", b"7:3"), (b"cd", b"7:7")]
        assert source._pending == b"unfinished"
        source._produce_lines(run, producer, source._pending, final=True)  # type: ignore[arg-type]
        assert producer.sent[-1] == (b"unfinished", b"7:17")
        assert parse_position(run.dir.source_offset()["position"]) == (7, 17)
    assert parse_position(b"12:34") == (12, 34)
    assert parse_position(b"junk") is None


def test_cli_errors_name_the_problem(cluster_dir, tmp_path):
    db = str(tmp_path / "s.db")
    missing = run_kctl(cluster_dir, "connect", "sqlite-source", "--db", db, "--table", "t")
    assert missing.returncode == 1
    assert f"kctl: error: database file {db} does not exist" in missing.stderr.decode()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE nokey (a, b)")
    no_table = run_kctl(cluster_dir, "connect", "sqlite-source", "--db", db, "--table", "nope")
    assert no_table.returncode == 1
    assert "table 'nope' does not exist" in no_table.stderr.decode()
    assert "(tables: nokey, t)" in no_table.stderr.decode()
    no_key = run_kctl(cluster_dir, "connect", "sqlite-source", "--db", db, "--table", "nokey")
    assert "has no primary key" in no_key.stderr.decode()
    conn.execute("BEGIN EXCLUSIVE")
    try:
        locked = run_kctl(cluster_dir, "connect", "sqlite-source", "--db", db, "--table", "t", "--lock-timeout", "0.3")
    finally:
        conn.execute("ROLLBACK")
    assert locked.returncode == 1
    assert "is locked" in locked.stderr.decode()
    assert locked.stderr.decode().count("kctl: error:") == 1
    status = run_kctl(cluster_dir, "-o", "json", "connect", "status")
    assert status.returncode == 0 and json.loads(status.stdout) == {"connectors": []}


def test_deleting_a_source_removes_its_change_capture(cluster_dir, tmp_path):
    from kctl.connect.status import delete_connector

    db = str(tmp_path / "s.db")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, extra TEXT)")
    source = SqliteSource(cluster_dir, db, "t", name="s")
    source._conn = open_database(db, lock_timeout=5, must_exist=True)
    source._install(table_columns(source._conn, "t"))
    source._conn.close()
    with pytest.raises(sqlite3.OperationalError, match="_kctl_s_"):
        conn.execute("ALTER TABLE t DROP COLUMN extra")  # the capture triggers need the column
    layout = Cluster(cluster_dir).layout
    config = {"connector_type": "sqlite-source", "kind": "source", "db": db, "table": "t", "topic": "t"}
    with ConnectorRun(layout, "s", config), pytest.raises(ConnectorError, match="is running"):
        delete_connector(cluster_dir, "s")
    assert delete_connector(cluster_dir, "s")["capture_removed"] is True
    conn.execute("ALTER TABLE t DROP COLUMN extra")
    assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE '\\_kctl%' ESCAPE '\\' "
                        "AND type != 'table'").fetchall() == []
    assert not os.path.exists(ConnectorDir(layout, "s").path)
    with pytest.raises(ConnectorError, match="does not exist"):
        delete_connector(cluster_dir, "s")
