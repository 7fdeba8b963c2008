"""The SQLite sink: a topic of change events applied to a table (upsert by key, delete on a
tombstone), as a member of a consumer group.

Each poll is applied in one database transaction, which also stores, per partition, the next
offset to apply in ``_kctl_sink_offsets`` (keyed by table, topic and partition). Offsets are
committed to the group only after that transaction commits. A crash between the two replays some
records, and the replay is a no-op: records below the stored offsets are skipped. So the table
is exactly what the topic says, however often the sink is killed.

Within one poll only the last record of each key is applied (a key lives in one partition, so
this keeps every key's order). A missing table is created from the first row: its columns in
the row's order, untyped (so every value keeps its SQLite storage class), with a primary key on
the key's fields; a row with a column the table lacks adds the column.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.metadata import require_live_cluster
from kctl.connect.runtime import ConnectorRun, StopFlag, safe_name, sink_group
from kctl.connect.sqlite_common import (
    database_error,
    decode_object,
    decode_value,
    open_database,
    primary_key,
    quote,
    table_columns,
)
from kctl.errors import ConnectorError

OFFSETS_TABLE = "_kctl_sink_offsets"


@dataclass
class SinkStats:
    applied: int = 0
    upserts: int = 0
    deletes: int = 0
    skipped: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)


def stored_offsets(conn: sqlite3.Connection, table: str) -> dict[tuple[str, int], int]:
    found = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name=?", (OFFSETS_TABLE,))
    if found.fetchone() is None:
        return {}
    rows = conn.execute(f"SELECT topic, partition, next_offset FROM {OFFSETS_TABLE} WHERE tbl=?", (table,))
    return {(t, int(p)): int(o) for t, p, o in rows}


class SqliteSink:
    """``kctl connect sqlite-sink``: one topic into one table of one SQLite database."""

    def __init__(self, data_dir: str, topic: str, db: str, table: str, *, group: str | None = None,
                 name: str | None = None, lock_timeout: float = 30.0,
                 on_info: Callable[[str], None] | None = None) -> None:
        from kctl.cluster.config import validate_topic_name

        self.data_dir = data_dir
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.topic = validate_topic_name(topic)
        self.db = os.path.abspath(db)
        self.table = table
        self.name = name or f"sqlite-sink-{safe_name(table)}"
        self.group = group or sink_group(self.name)
        self.lock_timeout = lock_timeout
        self.on_info = on_info
        self.stats = SinkStats()
        self._conn: sqlite3.Connection | None = None
        self._columns: list[str] = []
        self._pk: list[str] = []
        self._replace_ok = False

    def _info(self, message: str) -> None:
        if self.on_info is not None:
            self.on_info(message)

    # -- the table ----------------------------------------------------------------------------
    def _load_table(self) -> None:
        assert self._conn is not None
        columns = table_columns(self._conn, self.table)
        self._columns = [c.name for c in columns]
        self._pk = primary_key(columns)

    def _ensure_table(self, key_fields: list[str], row_fields: list[str]) -> None:
        """Create the table from the first row, or add the columns a row brings."""
        assert self._conn is not None
        if not self._columns:
            names = list(row_fields) + [k for k in key_fields if k not in row_fields]
            cols = ", ".join(quote(n) for n in names)
            pk = ", ".join(quote(k) for k in key_fields)
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({cols}, PRIMARY KEY ({pk}))")
            self._info(f"created table {self.table} ({', '.join(names)}; key {', '.join(key_fields)})")
            self._load_table()
        missing = [n for n in row_fields if n not in self._columns]
        for n in missing:
            self._conn.execute(f"ALTER TABLE {quote(self.table)} ADD COLUMN {quote(n)}")
        if missing:
            self._info(f"added column(s) {', '.join(missing)} to table {self.table}")
            self._load_table()
        # INSERT OR REPLACE upserts only when the table's primary key is the record key
        self._replace_ok = sorted(self._pk) == sorted(key_fields)

    # -- applying -----------------------------------------------------------------------------
    def apply(self, batches: list[Any]) -> dict[tuple[str, int], int]:
        """Apply fetched batches in one transaction; returns the next offsets now stored."""
        assert self._conn is not None
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise database_error(self.db, exc, self.lock_timeout) from None
        try:
            positions = self._apply_in_transaction(batches)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise database_error(self.db, exc, self.lock_timeout) from None
            raise
        self.stats.positions.update(positions)
        return positions

    def _apply_in_transaction(self, batches: list[Any]) -> dict[tuple[str, int], int]:
        assert self._conn is not None
        conn = self._conn
        stored = stored_offsets(conn, self.table)
        latest: dict[bytes, tuple[tuple[str, int], Any]] = {}
        positions: dict[tuple[str, int], int] = {}
        for batch in batches:
            tp = (batch.topic, batch.partition)
            floor = stored.get(tp, 0)
            for record in batch.records or ():
                if record.offset < floor:
                    self.stats.skipped += 1
                    continue
                if record.key is None:
                    raise ConnectorError(f"record {tp[0]}-{tp[1]}@{record.offset} has no key: the sink needs the "
                                         "primary key as a JSON object")
                latest[record.key] = (tp, record)
            if batch.next_offset > floor:
                positions[tp] = max(positions.get(tp, 0), batch.next_offset)
        if not self._columns:
            self._load_table()
        deletes: list[tuple[list[str], list[Any]]] = []
        upserts: dict[tuple[tuple[str, ...], tuple[str, ...]], list[list[Any]]] = {}
        for raw_key, ((topic, p), record) in latest.items():
            where = f"record {topic}-{p}@{record.offset}"
            key = decode_object(raw_key, f"the key of {where}")
            assert key is not None
            row = decode_object(record.value, f"the value of {where}")
            if row is None:
                deletes.append((list(key), [decode_value(v) for v in key.values()]))
                continue
            for k, v in key.items():
                row.setdefault(k, v)
            shape = (tuple(key), tuple(row))
            upserts.setdefault(shape, []).append([decode_value(v) for v in row.values()])
        for (key_fields, row_fields), rows in upserts.items():
            self._ensure_table(list(key_fields), list(row_fields))
            self._upsert(list(key_fields), list(row_fields), rows)
            self.stats.upserts += len(rows)
        if self._columns:
            for key_fields, values in deletes:
                cond = " AND ".join(f"{quote(k)} IS ?" for k in key_fields)
                conn.execute(f"DELETE FROM {quote(self.table)} WHERE {cond}", values)
                self.stats.deletes += 1
        if positions:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (tbl TEXT NOT NULL, topic TEXT NOT NULL, "
                         "partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, "
                         "PRIMARY KEY (tbl, topic, partition))")
            conn.executemany(f"INSERT OR REPLACE INTO {OFFSETS_TABLE} VALUES (?, ?, ?, ?)",
                             [(self.table, t, p, o) for (t, p), o in positions.items()])
        self.stats.applied += len(latest)
        return positions

    def _upsert(self, key_fields: list[str], row_fields: list[str], rows: list[list[Any]]) -> None:
        assert self._conn is not None
        table = quote(self.table)
        cols = ", ".join(quote(n) for n in row_fields)
        marks = ", ".join("?" * len(row_fields))
        if self._replace_ok:
            self._conn.executemany(f"INSERT OR REPLACE INTO {table} ({cols}) VALUES ({marks})", rows)
            return
        # no unique key to replace on: update the row with this key, else insert it
        key_at = [row_fields.index(k) for k in key_fields]
        sets = ", ".join(f"{quote(n)} = ?" for n in row_fields)
        cond = " AND ".join(f"{quote(k)} IS ?" for k in key_fields)
        for values in rows:
            cur = self._conn.execute(f"UPDATE {table} SET {sets} WHERE {cond}",
                                     [*values, *(values[i] for i in key_at)])
            if cur.rowcount == 0:
                self._conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", values)

    # -- running ------------------------------------------------------------------------------
    def run(self, stop: Callable[[], bool] | None = None) -> SinkStats:
        """Consume and apply until ``stop()`` is true (or SIGTERM/SIGINT when ``stop`` is None)."""
        if stop is None:
            flag = StopFlag()
            with flag.on_signals():
                return self._run(flag)
        return self._run(stop)

    def _run(self, stop: Callable[[], bool]) -> SinkStats:
        from kctl.client.group import GroupConsumer

        require_live_cluster(self.layout)
        config = {"connector_type": "sqlite-sink", "kind": "sink", "db": self.db, "table": self.table,
                  "topic": self.topic, "group": self.group}
        self._conn = open_database(self.db, lock_timeout=self.lock_timeout, must_exist=False)
        try:
            with ConnectorRun(self.layout, self.name, config, on_info=self.on_info) as run:
                self._load_table()
                consumer = GroupConsumer(self.data_dir, self.group, [self.topic], client_id=self.name,
                                         on_event=self._info)
                try:
                    while not stop():
                        batches = consumer.poll(0.25)
                        if batches:
                            positions = self.apply(batches)
                            consumer.delivered(positions)
                        run.save_status(applied=self.stats.applied,
                                        position={f"{t}-{p}": o for (t, p), o in sorted(self.stats.positions.items())})
                finally:
                    consumer.close()
        finally:
            self._conn.close()
            self._conn = None
        return self.stats
