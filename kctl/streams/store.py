"""The local state of a stateful processor: one SQLite file per input partition, backed by a
compacted changelog topic.

``<state dir>/<group>/<input>-<p>/state.db`` holds ``key -> JSON state`` and three facts about
itself: the changelog's topic id, the changelog offset it reflects (the next offset after the last
update it contains) and the highest input offset applied. It is written only after the changelog
records it contains were acknowledged (acks=all), so it is never ahead of the changelog: it is a
snapshot of a prefix of the changelog partition.

Restoring (on assignment, after a crash, on another instance with another state directory) means:
open the store, then replay changelog partition p from the store's changelog offset to the high
watermark (from the log start when the store is missing, belongs to another incarnation of the
changelog topic, or claims more than the changelog has). The last value per key wins and a
tombstone deletes the key, which is also exactly what compaction keeps, so a compacted and an
uncompacted changelog restore the same state.
"""

from __future__ import annotations

import json
import os
from typing import Any

STATE_FILE = "state.db"


class StateStore:
    """One input partition's state. Not thread-safe; only the partition's owner opens it."""

    def __init__(self, directory: str) -> None:
        import sqlite3

        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, STATE_FILE)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS state (k BLOB PRIMARY KEY, v TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, v TEXT NOT NULL)")

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, v FROM meta").fetchall())

    def load(self) -> dict[bytes, Any]:
        return {bytes(k): json.loads(v) for k, v in self.db.execute("SELECT k, v FROM state")}

    def save(self, changes: dict[bytes, Any], meta: dict[str, Any]) -> None:
        """Apply changed keys (None deletes) and the new position in one transaction."""
        db = self.db
        db.execute("BEGIN")
        try:
            for k, v in changes.items():
                if v is None:
                    db.execute("DELETE FROM state WHERE k = ?", (k,))
                else:
                    db.execute("INSERT OR REPLACE INTO state (k, v) VALUES (?, ?)",
                               (k, json.dumps(v, separators=(",", ":"))))
            db.executemany("INSERT OR REPLACE INTO meta (name, v) VALUES (?, ?)",
                           [(n, str(v)) for n, v in meta.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def replace(self, state: dict[bytes, Any], meta: dict[str, Any]) -> None:
        """Replace everything (after a restore from the changelog's beginning)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM state")
            db.execute("DELETE FROM meta")
            db.executemany("INSERT INTO state (k, v) VALUES (?, ?)",
                           [(k, json.dumps(v, separators=(",", ":"))) for k, v in state.items()])
            db.executemany("INSERT INTO meta (name, v) VALUES (?, ?)", [(n, str(v)) for n, v in meta.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()
