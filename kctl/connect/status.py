"""``kctl connect status`` and ``kctl connect delete``: connectors as their files describe them.

Running or not comes from the connector's liveness lock (a probe, never a timeout); a connector
whose status file says it runs while nobody holds its lock was killed (``dead``). Lag: a SQLite
source's changes captured but not yet delivered, a file source's unread bytes, a sink's group lag.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from typing import Any

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.metadata import MetadataStore
from kctl.connect.runtime import LOCK_FILE, RUNNING, ConnectorDir, list_connectors
from kctl.errors import ConnectorError, KctlError

DEAD = "dead"
NEVER = "never run"


def _source_lag(cdir: ConnectorDir, cfg: dict[str, Any], position: Any) -> int | None:
    kind = cfg.get("connector_type")
    if kind == "sqlite-source":
        from kctl.connect.sqlite_source import pending_changes

        return pending_changes(str(cfg.get("db")), cdir.name, int(position or 0))
    if kind == "file-source":
        try:
            st = os.stat(str(cfg.get("file")))
        except OSError:
            return None
        if isinstance(position, list) and len(position) == 2 and position[0] == st.st_ino:
            return max(0, st.st_size - int(position[1]))
        return st.st_size
    return None


def _sink_lag(data_dir: str, group: str) -> tuple[int | None, dict[str, int]]:
    from kctl.cluster.groups import GroupAdmin

    try:
        rows = GroupAdmin(data_dir).group_lag(group)
    except KctlError:
        return None, {}
    lags = [r["lag"] for r in rows if r["lag"] is not None]
    committed = {f"{r['topic']}-{r['partition']}": r["current_offset"] for r in rows
                 if r["current_offset"] is not None}
    return (sum(lags) if lags else None), committed


def connector_status(data_dir: str, name: str | None = None) -> list[dict[str, Any]]:
    """One dict per connector (JSON field names; a missing value is None)."""
    layout = ClusterLayout.at(data_dir)
    layout.read_cluster_file()
    dirs = list_connectors(layout)
    if name is not None:
        dirs = [d for d in dirs if d.name == name]
        if not dirs:
            raise ConnectorError(f"connector '{name}' does not exist (see: kctl connect status)")
    out = []
    for cdir in dirs:
        cfg = cdir.config() or {}
        status = cdir.status()
        running = cdir.running()
        state = RUNNING if running else status.get("state") or NEVER
        if state == RUNNING and not running:
            state = DEAD
        kind = cfg.get("kind")
        if kind == "source":
            saved = cdir.source_offset()
            position = saved.get("position") if saved else None
            lag = _source_lag(cdir, cfg, position)
        else:
            lag, committed = _sink_lag(data_dir, str(cfg.get("group")))
            position = committed or status.get("position")
        target = f"{cfg.get('db')}:{cfg.get('table')}" if cfg.get("db") else cfg.get("file")
        out.append({
            "name": cdir.name, "type": cfg.get("connector_type"), "kind": kind, "topic": cfg.get("topic"),
            "target": target, "group": cfg.get("group"), "state": state,
            "pid": status.get("pid") if running else None, "position": position, "lag": lag,
            "last_error": status.get("last_error"), "updated_ms": status.get("updated_ms"),
        })
    return out


def delete_connector(data_dir: str, name: str) -> dict[str, Any]:
    """Forget a stopped connector: its directory, and for a SQLite source its triggers, change
    table and registration in the database (so the table's columns can be dropped again). A
    sink's consumer group and its table are left alone."""
    layout = ClusterLayout.at(data_dir)
    layout.read_cluster_file()
    cdir = ConnectorDir(layout, name)
    cfg = cdir.config()
    if cfg is None:
        raise ConnectorError(f"connector '{name}' does not exist (see: kctl connect status)")
    fd = os.open(cdir.file(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = cdir.holder_pid()
            raise ConnectorError(f"connector '{name}' is running" + (f" (pid {pid})" if pid else "")
                                 + "; stop it first") from None
        removed = False
        db = cfg.get("db")
        if cfg.get("connector_type") == "sqlite-source" and isinstance(db, str) and os.path.isfile(db):
            from kctl.connect.sqlite_source import uninstall_capture

            removed = uninstall_capture(db, name)
        try:
            MetadataStore(layout).record_events([{"type": "connector_deleted", "connector": name}])
        except (KctlError, OSError):
            pass
        shutil.rmtree(cdir.path, ignore_errors=True)
    finally:
        os.close(fd)
    return {"connector": name, "type": cfg.get("connector_type"), "capture_removed": removed,
            "group": cfg.get("group")}
