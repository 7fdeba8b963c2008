"""Connector throughput: rows per second from a SQLite table through ``kctl connect sqlite-source``,
a topic and ``kctl connect sqlite-sink`` into another SQLite database, with real processes.

* snapshot: a 100,000-row table, from the source's start until the sink's table has every row;
* change stream: 20,000 single-row updates committed 100 per transaction while both run, from
  the first commit until the sink's table has the last one.

Both figures are end to end (capture, produce with acks=all, replicate, consume, apply).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

KCTL = [sys.executable, "-m", "kctl"]


def kctl(data_dir: str, *args: str) -> None:
    subprocess.run([*KCTL, "--data-dir", data_dir, *args], check=True, capture_output=True)


def start(data_dir: str, log: str, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([*KCTL, "--data-dir", data_dir, "connect", *args], stdout=out, stderr=out)


def scalar(path: str, sql: str) -> int:
    try:
        conn = sqlite3.connect(path, timeout=30)
    except sqlite3.Error:
        return -1
    try:
        row = conn.execute(sql).fetchone()
        return int(row[0] or 0)
    except sqlite3.OperationalError:
        return -1
    finally:
        conn.close()


def wait(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 rows and 5,000 changes")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.changes = 20_000, 5_000
    tmp = tempfile.mkdtemp(prefix="kctl-bench-connect-")
    data = os.path.join(tmp, "cluster")
    src, dst = os.path.join(tmp, "src.db"), os.path.join(tmp, "dst.db")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kctl(data, "cluster", "init", "--brokers", str(args.brokers))
        kctl(data, "cluster", "start")
        rf = min(3, args.brokers)
        kctl(data, "topic", "create", "items", "-p", "3", "-r", str(rf), "-c", "cleanup.policy=compact")
        db = sqlite3.connect(src, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, note TEXT)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                       ((i, f"item-{i}", i % 100, i * 0.25, "x" * 40) for i in range(args.rows)))
        db.execute("COMMIT")

        log = os.path.join(tmp, "connectors.log")
        began = time.monotonic()
        procs.append(start(data, log, "sqlite-source", "--db", src, "--table", "items", "--poll-interval", "0.05"))
        procs.append(start(data, log, "sqlite-sink", "--topic", "items", "--db", dst, "--table", "items"))
        done = wait(lambda: scalar(dst, "SELECT count(*) FROM items") == args.rows, 600, "the snapshot")
        secs = done - began
        print(f"snapshot: {args.rows:,} rows in {secs:.2f} s = {args.rows / secs:,.0f} rows/s end to end "
              f"(source and sink processes started cold, {args.brokers} broker(s), RF={rf}, acks=all)")

        target = sum(range(args.changes))  # the updates below add 0, 1, 2, ... to qty
        before = scalar(src, "SELECT sum(qty) FROM items")
        began = time.monotonic()
        for first in range(0, args.changes, 100):
            db.execute("BEGIN")
            db.executemany("UPDATE items SET qty = qty + ? WHERE id = ?",
                           ((n, (n * 7919) % args.rows) for n in range(first, min(first + 100, args.changes))))
            db.execute("COMMIT")
        written = time.monotonic()
        done = wait(lambda: scalar(dst, "SELECT sum(qty) FROM items") == before + target, 600, "the changes")
        print(f"change stream: {args.changes:,} updates (100 per transaction) written in {written - began:.2f} s, "
              f"in the sink after {done - began:.2f} s = {args.changes / (done - began):,.0f} changes/s end to end")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run([*KCTL, "--data-dir", data, "cluster", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
