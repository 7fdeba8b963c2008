"""The SQLite source: a table's snapshot, then every insert, update and delete, as change events.

Capture. On its first start the source takes the database's write lock (``BEGIN IMMEDIATE``) and,
in that one transaction, creates a change table ``_kctl_changes_<name>`` (an AUTOINCREMENT id, an
operation, and the table's columns), installs AFTER INSERT/UPDATE/DELETE triggers that append
every change to it, and copies the whole table into it as snapshot rows (operation ``r``). No
write can fall between the snapshot and the first captured change, and the snapshot and the
changes form one stream ordered by id: the source's position. The installed column list is
kept in ``_kctl_sources``, so a later change of the table's columns is noticed.

Events. One record per change: key = the primary key as a JSON object, value = the row as a JSON
object, or null for a delete (a tombstone, so a compacted topic holds the table's current state).
An update that changes the primary key is a delete of the old key and an insert of the new one.
Headers: ``kctl.source.position`` (the change id) and ``kctl.source.op`` (r, c, u, d).

Delivery is exactly once (see :mod:`kctl.connect.runtime`): changes are produced in id order with
``acks=all``; after each acknowledged flush the position goes to ``source-offset.json`` and the
delivered rows are deleted from the change table; after a crash the position is recovered from
the end of the topic's partitions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.metadata import require_live_cluster
from kctl.connect.runtime import (
    OP_HEADER,
    POSITION_HEADER,
    ConnectorRun,
    StopFlag,
    ensure_topic,
    last_positions,
    now_ms,
    safe_name,
)
from kctl.connect.sqlite_common import (
    Column,
    database_error,
    encode_json,
    open_database,
    primary_key,
    quote,
    table_columns,
    user_tables,
)
from kctl.errors import ConnectorError, InvalidTopicError

REGISTRY_TABLE = "_kctl_sources"
CHANGE_TABLE_PREFIX = "_kctl_changes_"
_ID, _OP = "_kctl_id", "_kctl_op"
_TRIGGERS = ("insert", "update", "delete")


def change_table(name: str) -> str:
    return CHANGE_TABLE_PREFIX + name


def trigger_names(name: str) -> list[str]:
    return [f"_kctl_{name}_{kind}" for kind in _TRIGGERS]


def _columns_json(columns: list[Column]) -> str:
    return json.dumps([[c.name, c.type, c.pk] for c in columns])


def _columns_from_json(text: str) -> list[Column]:
    return [Column(n, t, int(pk)) for n, t, pk in json.loads(text)]


def describe_schema_change(old: list[Column], new: list[Column]) -> str:
    """``column 'x' added; column 'y' removed`` and the like."""
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    parts = [f"column '{n}' added" for n in after if n not in before]
    parts += [f"column '{n}' removed" for n in before if n not in after]
    for n, c in after.items():
        b = before.get(n)
        if b is not None and (b.type, b.pk) != (c.type, c.pk):
            parts.append(f"column '{n}' changed from {b.type or 'untyped'}{' (key)' if b.pk else ''} to "
                         f"{c.type or 'untyped'}{' (key)' if c.pk else ''}")
    if not parts and [c.name for c in old] != [c.name for c in new]:
        parts.append("columns reordered")
    return "; ".join(parts) or "no visible difference"


def pending_changes(db: str, name: str, position: int) -> int | None:
    """Changes captured but not yet delivered (for ``connect status``); None if unknown."""
    from urllib.request import pathname2url

    try:
        conn = sqlite3.connect(f"file:{pathname2url(db)}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute(f"SELECT count(*) FROM {quote(change_table(name))} WHERE {_ID} > ?",
                           (position,)).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


@dataclass
class SourceStats:
    snapshot_rows: int = 0
    produced: int = 0
    skipped: int = 0
    position: int = 0


class SqliteSource:
    """``kctl connect sqlite-source``: one table of one SQLite database into one topic."""

    def __init__(self, data_dir: str, db: str, table: str, *, topic: str | None = None, name: str | None = None,
                 poll_interval: float = 0.5, lock_timeout: float = 30.0, resnapshot: bool = False,
                 partitions: int = 1, max_batch: int = 20000, on_info: Callable[[str], None] | None = None) -> None:
        self.data_dir = data_dir
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.db = os.path.abspath(db)
        self.table = table
        if topic is None:
            try:
                from kctl.cluster.config import validate_topic_name

                topic = validate_topic_name(table)
            except InvalidTopicError:
                raise ConnectorError(f"table name '{table}' is not a valid topic name: pass --topic") from None
        self.topic = topic
        self.name = name or f"sqlite-source-{safe_name(table)}"
        self.poll_interval = poll_interval
        self.lock_timeout = lock_timeout
        self.resnapshot = resnapshot
        self.partitions = partitions
        self.max_batch = max_batch
        self.on_info = on_info
        self.stats = SourceStats()
        self._conn: sqlite3.Connection | None = None
        self._columns: list[Column] = []
        self._select = ""

    # -- the database side --------------------------------------------------------------------
    def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        assert self._conn is not None
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise database_error(self.db, exc, self.lock_timeout) from None

    def _current_columns(self) -> list[Column]:
        assert self._conn is not None
        columns = table_columns(self._conn, self.table)
        if not columns:
            tables = ", ".join(user_tables(self._conn)) or "none"
            raise ConnectorError(f"table '{self.table}' does not exist in {self.db} (tables: {tables})")
        if not primary_key(columns):
            raise ConnectorError(f"table '{self.table}' has no primary key: change events need one for their key")
        if {_ID, _OP} & {c.name for c in columns}:
            raise ConnectorError(f"table '{self.table}' has a column named {_ID} or {_OP}, which the source uses")
        return columns

    def _registered(self) -> tuple[str, list[Column]] | None:
        found = self._sql("SELECT name FROM sqlite_master WHERE type='table' AND name=?", (REGISTRY_TABLE,))
        if found.fetchone() is None:
            return None
        row = self._sql(f"SELECT tbl, columns FROM {REGISTRY_TABLE} WHERE name=?", (self.name,)).fetchone()
        return None if row is None else (row[0], _columns_from_json(row[1]))

    def _install(self, columns: list[Column]) -> int:
        """Create (or extend) the change table, (re)install the triggers and copy the table in as
        snapshot rows, all in one write transaction. Returns the number of snapshot rows."""
        name, table = self.name, quote(self.table)
        chg = quote(change_table(name))
        cols = ", ".join(quote(c.name) for c in columns)
        new = ", ".join(f"NEW.{quote(c.name)}" for c in columns)
        old = ", ".join(f"OLD.{quote(c.name)}" for c in columns)
        key_moved = " OR ".join(f"OLD.{quote(k)} IS NOT NEW.{quote(k)}" for k in primary_key(columns))
        order = ", ".join(quote(k) for k in primary_key(columns))
        ins, upd, dele = (quote(t) for t in trigger_names(name))
        self._sql("BEGIN IMMEDIATE")
        try:
            self._sql(f"CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (name TEXT PRIMARY KEY, tbl TEXT NOT NULL, "
                      "columns TEXT NOT NULL, snapshot_ms INTEGER NOT NULL)")
            self._sql(f"CREATE TABLE IF NOT EXISTS {chg} ({_ID} INTEGER PRIMARY KEY AUTOINCREMENT, "
                      f"{_OP} TEXT NOT NULL)")
            assert self._conn is not None
            have = {c.name for c in table_columns(self._conn, change_table(name))}
            for c in columns:
                if c.name not in have:
                    self._sql(f"ALTER TABLE {chg} ADD COLUMN {quote(c.name)}")
            for trigger in (ins, upd, dele):
                self._sql(f"DROP TRIGGER IF EXISTS {trigger}")
            self._sql(f"CREATE TRIGGER {ins} AFTER INSERT ON {table} BEGIN "
                      f"INSERT INTO {chg} ({_OP}, {cols}) VALUES ('c', {new}); END")
            self._sql(f"CREATE TRIGGER {upd} AFTER UPDATE ON {table} BEGIN "
                      f"INSERT INTO {chg} ({_OP}, {cols}) SELECT 'd', {old} WHERE {key_moved}; "
                      f"INSERT INTO {chg} ({_OP}, {cols}) VALUES ('u', {new}); END")
            self._sql(f"CREATE TRIGGER {dele} AFTER DELETE ON {table} BEGIN "
                      f"INSERT INTO {chg} ({_OP}, {cols}) VALUES ('d', {old}); END")
            copied = self._sql(f"INSERT INTO {chg} ({_OP}, {cols}) SELECT 'r', {cols} FROM {table} "
                               f"ORDER BY {order}").rowcount
            self._sql(f"INSERT OR REPLACE INTO {REGISTRY_TABLE} (name, tbl, columns, snapshot_ms) "
                      "VALUES (?, ?, ?, ?)", (name, self.table, _columns_json(columns), now_ms()))
            self._sql("COMMIT")
        except BaseException:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        return copied

    def _check_capture(self) -> None:
        """Stop (keeping the place) when the table or its triggers changed under the capture."""
        columns = self._current_columns()
        if columns != self._columns:
            raise ConnectorError(
                f"table '{self.table}' changed since the snapshot: {describe_schema_change(self._columns, columns)}. "
                f"The source stopped at change {self.stats.position}, nothing lost; restart it with --resnapshot "
                "to deliver what was captured and then a new snapshot with the new columns")
        names = trigger_names(self.name)
        found = self._sql(f"SELECT count(*) FROM sqlite_master WHERE type='trigger' AND name IN "
                          f"({', '.join('?' * len(names))})", tuple(names)).fetchone()[0]
        if found != len(names):
            raise ConnectorError(
                f"the change-capture triggers on '{self.table}' are gone (was the table dropped and created "
                f"again?); the source stopped at change {self.stats.position}: restart it with --resnapshot")

    def _prepare_select(self) -> None:
        cols = ", ".join(quote(c.name) for c in self._columns)
        self._select = (f"SELECT {_ID}, {_OP}, {cols} FROM {quote(change_table(self.name))} "
                        f"WHERE {_ID} > ? ORDER BY {_ID} LIMIT ?")
        names = [c.name for c in self._columns]
        pk = primary_key(self._columns)
        self._names = names
        self._pk_names = pk
        self._pk_index = [names.index(k) for k in pk]

    def _prune(self, position: int) -> None:
        """Delete delivered rows from the change table; skipped when the database is busy."""
        assert self._conn is not None
        self._conn.execute("PRAGMA busy_timeout = 50")
        try:
            self._conn.execute(f"DELETE FROM {quote(change_table(self.name))} WHERE {_ID} <= ?", (position,))
        except sqlite3.OperationalError:
            pass
        finally:
            self._conn.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")

    # -- running ------------------------------------------------------------------------------
    def run(self, stop: Callable[[], bool] | None = None) -> SourceStats:
        """Capture and produce until ``stop()`` is true (or SIGTERM/SIGINT when ``stop`` is None)."""
        if stop is None:
            flag = StopFlag()
            with flag.on_signals():
                return self._run(flag)
        return self._run(stop)

    def _info(self, message: str) -> None:
        if self.on_info is not None:
            self.on_info(message)

    def _run(self, stop: Callable[[], bool]) -> SourceStats:
        config = {"connector_type": "sqlite-source", "kind": "source", "db": self.db, "table": self.table,
                  "topic": self.topic}
        self._conn = open_database(self.db, lock_timeout=self.lock_timeout, must_exist=True)
        try:
            self._current_columns()  # the table's problems first: they are the user's to fix
            require_live_cluster(self.layout)
            with ConnectorRun(self.layout, self.name, config, on_info=self.on_info) as run:
                self._start(run)
                self._loop(run, stop)
        finally:
            self._conn.close()
            self._conn = None
        return self.stats

    def _start(self, run: ConnectorRun) -> None:
        columns = self._current_columns()
        registered = self._registered()
        if registered is not None and registered[0] != self.table:
            raise ConnectorError(f"connector '{self.name}' captures table '{registered[0]}' in {self.db}, "
                                 f"not '{self.table}'; choose another --name")
        if ensure_topic(self.data_dir, self.topic, partitions=self.partitions, config={"cleanup.policy": "compact"}):
            self._info(f"created topic {self.topic} (cleanup.policy=compact)")
        if registered is None:
            self._columns = columns
            self.stats.snapshot_rows = self._install(columns)
            self._info(f"snapshot of table {self.table}: {self.stats.snapshot_rows} row(s); capturing changes")
        else:
            self._columns = registered[1]
        self._prepare_select()
        self._recover(run)
        if registered is not None and (self.resnapshot or columns != self._columns):
            if not self.resnapshot:
                self._check_capture()  # raises, naming what changed
            self._deliver_pending(run)
            self._columns = columns
            self.stats.snapshot_rows = self._install(columns)
            self._prepare_select()
            self._info(f"new snapshot of table {self.table}: {self.stats.snapshot_rows} row(s)")
        run.save_status(force=True, position=self.stats.position, snapshot_rows=self.stats.snapshot_rows)

    def _recover(self, run: ConnectorRun) -> None:
        """Where we left off: the offset file, and the end of each partition (see runtime)."""
        saved = run.dir.source_offset()
        self.stats.position = int(saved["position"]) if saved else 0
        from kctl.client.admin import Cluster

        timeout = max(30.0, Cluster(self.data_dir).settings.get("replica.lag.time.max.ms", 30000) / 1000 + 10)
        tails = {p: int(v) for p, v in last_positions(self.data_dir, self.topic, timeout).items() if v.isdigit()}
        self._tails = tails
        self._skip_upto = max(tails.values(), default=0)
        if self._skip_upto > self.stats.position:
            self._info(f"resuming after change {self.stats.position}; changes up to {self._skip_upto} "
                       "found in the topic are not produced again")
        elif self.stats.position:
            self._info(f"resuming after change {self.stats.position}")

    def _deliver_pending(self, run: ConnectorRun) -> None:
        from kctl.client.producer import Producer

        with Producer(self.data_dir, acks="all") as producer:
            while self._step(run, producer):
                pass

    def _loop(self, run: ConnectorRun, stop: Callable[[], bool]) -> None:
        from kctl.client.producer import Producer

        with Producer(self.data_dir, acks="all") as producer:
            while not stop():
                self._check_capture()
                if self._step(run, producer):
                    continue
                run.save_status(position=self.stats.position, produced=self.stats.produced)
                deadline = time.monotonic() + self.poll_interval
                while not stop() and time.monotonic() < deadline:
                    time.sleep(min(0.05, self.poll_interval))

    def _step(self, run: ConnectorRun, producer: Any) -> bool:
        """Produce the next changes after the position; True if there were any."""
        from kctl.client.partitioner import partition_for_key

        rows = self._sql(self._select, (self.stats.position, self.max_batch)).fetchall()
        if not rows:
            return False
        topic = self.topic
        names, pk_names, pk_index = self._names, self._pk_names, self._pk_index
        partitions = producer.partitions_for(topic) if self._skip_upto else 0
        failed_before = producer.failed
        for row in rows:
            change_id, op = row[0], row[1]
            values = row[2:]
            key = encode_json(pk_names, [values[i] for i in pk_index])
            if change_id <= self._skip_upto and change_id <= self._tails.get(partition_for_key(key, partitions), 0):
                self.stats.skipped += 1
                continue
            value = None if op == "d" else encode_json(names, values)
            producer.send(topic, value, key=key,
                          headers=[(POSITION_HEADER, str(change_id).encode()), (OP_HEADER, op.encode())])
            self.stats.produced += 1
        producer.flush()
        if producer.failed > failed_before:
            raise ConnectorError(f"changes after {self.stats.position} could not be delivered to topic "
                                 f"'{topic}': {producer.first_error}")
        self.stats.position = rows[-1][0]
        run.dir.write_source_offset(self.stats.position)
        self._prune(self.stats.position)
        run.save_status(position=self.stats.position, produced=self.stats.produced)
        return True



def uninstall_capture(db: str, name: str, lock_timeout: float = 30.0) -> bool:
    """Drop a source's triggers, change table and registration from ``db``; True if it had any."""
    conn = open_database(db, lock_timeout=lock_timeout, must_exist=True)
    try:
        conn.execute("BEGIN IMMEDIATE")
        found = False
        for trigger in trigger_names(name):
            found |= conn.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' AND name=?",
                                  (trigger,)).fetchone() is not None
            conn.execute(f"DROP TRIGGER IF EXISTS {quote(trigger)}")
        found |= bool(table_columns(conn, change_table(name)))
        conn.execute(f"DROP TABLE IF EXISTS {quote(change_table(name))}")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (REGISTRY_TABLE,)).fetchone():
            conn.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE name=?", (name,))
        conn.execute("COMMIT")
        return found
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise database_error(db, exc, lock_timeout) from None
    finally:
        conn.close()
