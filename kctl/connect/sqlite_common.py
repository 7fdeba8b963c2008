"""What the SQLite source and sink share: opening a database with clear errors, table columns,
quoting, and the JSON shape of keys and rows.

A row travels as a JSON object of its columns in table order; a key as a JSON object of the
primary-key columns in key order (so equal keys are equal bytes, which compaction relies on).
Integers, reals, text and null map to JSON directly; a BLOB becomes ``{"base64": "..."}``, the
convention of kctl's JSON record envelope.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from kctl.errors import ConnectorError


def quote(identifier: str) -> str:
    """An SQL identifier, double-quoted (any name is safe, even one with quotes in it)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    pk: int  # position in the primary key, from 1; 0 when not part of it


def table_columns(conn: sqlite3.Connection, table: str) -> list[Column]:
    """The table's columns in order; [] if there is no such table."""
    rows = conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()
    return [Column(r[1], r[2] or "", int(r[5])) for r in rows]


def primary_key(columns: list[Column]) -> list[str]:
    return [c.name for c in sorted((c for c in columns if c.pk), key=lambda c: c.pk)]


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                        "AND name NOT LIKE '\\_kctl\\_%' ESCAPE '\\' ORDER BY name").fetchall()
    return [r[0] for r in rows]


def open_database(path: str, *, lock_timeout: float, must_exist: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits up to
    ``lock_timeout`` seconds for a lock held by another connection."""
    if must_exist and not os.path.isfile(path):
        raise ConnectorError(f"database file {path} does not exist")
    try:
        conn = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise database_error(path, exc, lock_timeout) from None
    return conn


def database_error(path: str, exc: sqlite3.Error, lock_timeout: float) -> ConnectorError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return ConnectorError(f"database {path} is locked: another connection kept it locked for more than "
                              f"{lock_timeout:g}s (retry when it is free, or raise --lock-timeout)")
    return ConnectorError(f"database {path}: {text}")


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_default)


def encode_json(names: list[str] | tuple[str, ...], values: tuple[Any, ...] | list[Any]) -> bytes:
    """``{"name": value, ...}`` as compact UTF-8 JSON."""
    return _ENCODER.encode(dict(zip(names, values, strict=True))).encode()


def decode_value(value: Any) -> Any:
    """A JSON value back to what SQLite stores: base64 objects to bytes, other objects and
    arrays to their JSON text."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("base64"), str):
            try:
                return base64.b64decode(value["base64"], validate=True)
            except ValueError:
                pass
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def decode_object(data: bytes | None, what: str) -> dict[str, Any] | None:
    """A record's key or value as a JSON object (None for null); ConnectorError otherwise."""
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        raise ConnectorError(f"{what} is not JSON: {data[:60]!r}") from None
    if not isinstance(doc, dict) or not doc:
        raise ConnectorError(f"{what} is not a JSON object of columns: {data[:60]!r}")
    return doc
