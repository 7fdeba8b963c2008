"""SQLite source and sink as real processes, killed with SIGKILL and restarted while the table
keeps changing: the sink's table ends equal to the source's, and the topic holds every change
exactly once."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time

import pytest

from kctl.client.consumer import Consumer
from kctl.client.offsetspec import OffsetSpec
from kctl.cluster.groups import GroupAdmin
from kctl.connect.runtime import POSITION_HEADER
from kctl.connect.sqlite_source import SqliteSource
from tests.conftest import run_kctl
from tests.connect.conftest import wait_for

pytestmark = pytest.mark.e2e

TABLE_SQL = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, tag BLOB)"


def make_source_db(path: str, rows: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute(TABLE_SQL)
    db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                   [(i, f"item-{i}", i % 7, i / 3, bytes([i % 256]) if i % 5 == 0 else None) for i in range(rows)])
    return db


def mutate(db: sqlite3.Connection, rng: random.Random, next_id: list[int], steps: int) -> None:
    """Small transactions of inserts, updates (some moving the key) and deletes."""
    for _ in range(steps):
        db.execute("BEGIN IMMEDIATE")
        for _ in range(rng.randint(1, 4)):
            ids = [r[0] for r in db.execute("SELECT id FROM items ORDER BY random() LIMIT 2")]
            op = rng.random()
            if op < 0.35 or not ids:
                db.execute("INSERT INTO items VALUES (?, ?, ?, ?, NULL)",
                           (next_id[0], f"new-{next_id[0]}", rng.randint(0, 9), rng.random()))
                next_id[0] += 1
            elif op < 0.75:
                db.execute("UPDATE items SET qty = qty + 1, price = ?, name = name || '+' WHERE id = ?",
                           (rng.random() * 100, ids[0]))
            elif op < 0.82:
                db.execute("UPDATE items SET id = ? WHERE id = ?", (next_id[0], ids[0]))
                next_id[0] += 1
            else:
                db.execute("DELETE FROM items WHERE id = ?", (ids[0],))
        db.execute("COMMIT")


def table_rows(path: str) -> list[tuple]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute("SELECT id, name, qty, price, tag, typeof(qty), typeof(price), typeof(tag) "
                            "FROM items ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def topic_records(data_dir: str, topic: str, partitions: int) -> list[tuple[int, int, bytes | None, list]]:
    out = []
    with Consumer(data_dir) as c:
        c.assign({(topic, p): OffsetSpec("beginning") for p in range(partitions)})
        deadline = time.monotonic() + 20
        while not c.at_end() and time.monotonic() < deadline:
            for b in c.poll(0.2):
                out.extend((b.partition, r.offset, r.key, list(r.headers)) for r in b.records or [])
    return out


def test_source_and_sink_killed_and_restarted_deliver_every_change_exactly_once(make_cluster, connector, tmp_path):
    c = make_cluster(brokers=2)
    # delete policy: nothing is compacted away, so the topic shows every change that was produced
    c.create_topic("items", partitions=2, replication_factor=2)
    src_db, dst_db = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    db = make_source_db(src_db, 300)
    rng = random.Random(7)
    next_id = [10_000]
    source_args = ("sqlite-source", "--db", src_db, "--table", "items", "--poll-interval", "0.05")
    sink_args = ("sqlite-sink", "--topic", "items", "--db", dst_db, "--table", "items")
    source = connector(*source_args)
    sink = connector(*sink_args)
    try:
        mutate(db, rng, next_id, 60)
        time.sleep(0.3)
        source.kill()  # in the middle of producing, most likely
        mutate(db, rng, next_id, 60)  # captured by the triggers while the source is down
        source = connector(*source_args)
        mutate(db, rng, next_id, 40)
        sink.kill()
        mutate(db, rng, next_id, 40)
        sink = connector(*sink_args)
        time.sleep(0.2)
        source.kill()
        source = connector(*source_args)
        mutate(db, rng, next_id, 40)
        wait_for(lambda: table_rows(dst_db) == table_rows(src_db), 25, "the sink table to equal the source table")

        def status() -> dict[str, dict]:
            out = run_kctl(c.layout.root, "-o", "json", "connect", "status")
            return {r["name"]: r for r in json.loads(out.stdout)["connectors"]}

        wait_for(lambda: [(r["state"], r["lag"]) for r in status().values()] == [("running", 0)] * 2, 10,
                 "both connectors running with no lag")
        (member,) = GroupAdmin(c.layout.root).describe_group("connect-sqlite-sink-items")["members"]
        assert member["client_id"] == "sqlite-sink-items" and member["pid"] == sink.popen.pid
        assert source.terminate() == 0, source.log()
        assert sink.terminate() == 0, sink.log()
    finally:
        db.close()
    changes = sqlite3.connect(src_db).execute("SELECT seq FROM sqlite_sequence WHERE name = "
                                              "'_kctl_changes_sqlite-source-items'").fetchone()[0]
    records = topic_records(c.layout.root, "items", 2)
    positions = [int(dict(h)[POSITION_HEADER]) for _p, _o, _k, h in records]
    assert sorted(positions) == list(range(1, changes + 1))  # every change, none twice
    assert {r["state"] for r in status().values()} == {"stopped"}
    # and in each partition in position order
    for p in range(2):
        mine = [int(dict(h)[POSITION_HEADER]) for q, _o, _k, h in records if q == p]
        assert mine == sorted(mine)


def test_a_compacted_topic_keeps_one_record_per_live_row(make_cluster, tmp_path):
    c = make_cluster(brokers=1, log_retention_check_interval_ms="300")
    c.create_topic("items", partitions=2, replication_factor=1,
                   config={"cleanup.policy": "compact", "segment.bytes": 2048, "min.cleanable.dirty.ratio": 0.01,
                           "delete.retention.ms": 0})
    src_db = str(tmp_path / "src.db")
    db = make_source_db(src_db, 150)
    stop = threading.Event()
    source = SqliteSource(c.layout.root, src_db, "items", poll_interval=0.05)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            source.run(stop.is_set)
        except BaseException as exc:
            failures.append(exc)
            raise

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: failures or source.stats.position >= 150, 20, "the snapshot to be delivered")
        assert not failures
        mutate(db, random.Random(3), [10_000], 150)

        def delivered() -> bool:
            assert not failures
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = '_kctl_changes_sqlite-source-items'")
            return source.stats.position == seq.fetchone()[0]

        wait_for(delivered, 20, "the changes to be delivered")
        # one more write per live row, in a batch of its own that fills a segment; then new rows,
        # whose batches roll it: the active segments (never cleaned) hold one record per key and
        # every superseded record is in a sealed segment, as compaction needs
        db.execute("UPDATE items SET qty = -1")
        wait_for(delivered, 20, "the update of every row to be delivered")
        db.executemany("INSERT INTO items VALUES (?, 'late', 0, 0, NULL)", [(50_000 + i,) for i in range(20)])
        live = sorted(r[0] for r in db.execute("SELECT id FROM items"))
        wait_for(delivered, 20, "the last changes to be delivered")

        def keys() -> list[int]:
            import json

            return sorted(json.loads(k)["id"] for _p, _o, k, _h in topic_records(c.layout.root, "items", 2))

        hw = sum(c.partition("items", p).high_watermark or 0 for p in range(2))
        assert hw > 2 * len(live)  # many changes per row went into the topic...
        wait_for(lambda: keys() == live, 25, "one record per live row")  # ...and compaction leaves one
    finally:
        stop.set()
        thread.join(30)
        db.close()
    assert not thread.is_alive()
    # the compacted topic replayed into an empty database is the table
    from kctl.connect.sqlite_sink import SqliteSink

    replica = str(tmp_path / "replay.db")
    sink = SqliteSink(c.layout.root, "items", replica, "items", name="replay")
    deadline = time.monotonic() + 20
    sink.run(lambda: sum(sink.stats.positions.values()) >= hw_now(c) or time.monotonic() > deadline)
    assert table_rows(replica) == table_rows(src_db)


def hw_now(c) -> int:  # type: ignore[no-untyped-def]
    return sum(c.partition("items", p).high_watermark or 0 for p in range(2))


def test_a_schema_change_stops_the_source_and_a_resnapshot_carries_on(make_cluster, tmp_path):
    from kctl.connect.sqlite_sink import SqliteSink
    from kctl.connect.status import connector_status
    from kctl.errors import ConnectorError

    c = make_cluster(brokers=1)
    src_db, dst_db = str(tmp_path / "src.db"), str(tmp_path / "dst.db")
    db = make_source_db(src_db, 50)
    errors: list[ConnectorError] = []
    stop = threading.Event()

    def start(connector: object) -> threading.Thread:
        def run() -> None:
            try:
                connector.run(stop.is_set)  # type: ignore[attr-defined]
            except ConnectorError as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def everything(path: str) -> list[tuple]:
        conn = sqlite3.connect(path, timeout=30)
        try:
            return conn.execute("SELECT * FROM items ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    threads = [start(SqliteSource(c.layout.root, src_db, "items", poll_interval=0.05)),
               start(SqliteSink(c.layout.root, "items", dst_db, "items"))]
    try:
        wait_for(lambda: everything(dst_db) == everything(src_db), 20, "the first copy")
        db.execute("ALTER TABLE items ADD COLUMN color TEXT")
        db.execute("UPDATE items SET color = 'red' WHERE id < 5")
        wait_for(lambda: errors, 10, "the source to stop")
        assert "column 'color' added" in str(errors[0]) and "--resnapshot" in str(errors[0])
        status = {r["name"]: r for r in connector_status(c.layout.root)}["sqlite-source-items"]
        assert status["state"] == "failed" and "color" in status["last_error"]
        threads.append(start(SqliteSource(c.layout.root, src_db, "items", poll_interval=0.05, resnapshot=True)))
        db.execute("UPDATE items SET color = 'blue' WHERE id = 7")
        wait_for(lambda: everything(dst_db) == everything(src_db), 20, "the copy with the new column")
        assert len(errors) == 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        db.close()
