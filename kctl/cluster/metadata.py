"""Cluster metadata: brokers, topics, partitions, leaders, ISR and epochs, plus the change history.

One JSON document (``metadata/cluster-metadata.json``) is the source of truth, replaced
crash-atomically (write a temporary file, fsync, rename, fsync the directory) under
``metadata/metadata.lock``. Readers never lock: a rename is atomic, so they see the old or the
new document, never a mix, and they notice a change by the file's identity (inode, mtime, size).

Every change appends its events to ``metadata/events.jsonl`` under the same lock, so the history
is in the same order as the changes. Epochs fence stale actors: a broker epoch per registration,
a leader epoch per leader change, a partition epoch per ISR change, a controller epoch per
controller.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import CriticalSection, is_held
from kctl.errors import NoLiveBrokerError, NotInitializedError, UnknownTopicError
from kctl.storage.checkpoint import atomic_write

BROKER_UP = "up"
BROKER_DOWN = "down"
BROKER_FENCED = "fenced"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class PartitionState:
    replicas: list[int]
    leader: int | None
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)
    partition_epoch: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "leader": self.leader,
            "leader_epoch": self.leader_epoch,
            "isr": self.isr,
            "partition_epoch": self.partition_epoch,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PartitionState:
        return cls(
            list(d["replicas"]),
            d.get("leader"),
            int(d.get("leader_epoch", 0)),
            list(d.get("isr", [])),
            int(d.get("partition_epoch", 0)),
        )


@dataclass
class TopicState:
    name: str
    topic_id: str
    partitions: list[PartitionState]
    config: dict[str, Any] = field(default_factory=dict)
    created_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "topic_id": self.topic_id,
            "config": self.config,
            "created_ms": self.created_ms,
            "partitions": [p.to_json() for p in self.partitions],
        }

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> TopicState:
        return cls(
            name,
            d["topic_id"],
            [PartitionState.from_json(p) for p in d["partitions"]],
            dict(d.get("config", {})),
            int(d.get("created_ms", 0)),
        )

    @property
    def replication_factor(self) -> int:
        return len(self.partitions[0].replicas) if self.partitions else 0


@dataclass
class BrokerState:
    broker_id: int
    state: str = BROKER_DOWN
    epoch: int = 0
    pid: int | None = None
    since_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "epoch": self.epoch, "pid": self.pid, "since_ms": self.since_ms}

    @classmethod
    def from_json(cls, broker_id: int, d: dict[str, Any]) -> BrokerState:
        return cls(
            broker_id,
            d.get("state", BROKER_DOWN),
            int(d.get("epoch", 0)),
            d.get("pid"),
            int(d.get("since_ms", 0)),
        )


@dataclass
class ClusterMetadata:
    cluster_id: str
    version: int = 0
    controller_id: int | None = None
    controller_epoch: int = 0
    brokers: dict[int, BrokerState] = field(default_factory=dict)
    topics: dict[str, TopicState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "version": self.version,
            "controller": {"broker": self.controller_id, "epoch": self.controller_epoch},
            "brokers": {str(b): s.to_json() for b, s in sorted(self.brokers.items())},
            "topics": {n: t.to_json() for n, t in sorted(self.topics.items())},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClusterMetadata:
        ctrl = d.get("controller") or {}
        return cls(
            cluster_id=d["cluster_id"],
            version=int(d.get("version", 0)),
            controller_id=ctrl.get("broker"),
            controller_epoch=int(ctrl.get("epoch", 0)),
            brokers={int(b): BrokerState.from_json(int(b), s) for b, s in d.get("brokers", {}).items()},
            topics={n: TopicState.from_json(n, t) for n, t in d.get("topics", {}).items()},
        )

    def topic(self, name: str) -> TopicState:
        t = self.topics.get(name)
        if t is None:
            raise UnknownTopicError(f"topic '{name}' does not exist (see: kctl topic list)")
        return t

    def live_brokers(self) -> set[int]:
        return {b for b, s in self.brokers.items() if s.state == BROKER_UP}


Event = dict[str, Any]


class MetadataStore:
    """Read (cached, lock-free) and update (locked, crash-atomic) the cluster metadata."""

    def __init__(self, layout: ClusterLayout) -> None:
        self.layout = layout
        self._cache: ClusterMetadata | None = None
        self._cache_key: tuple[int, int, int] | None = None
        self._lock: CriticalSection | None = None

    # -- reading --------------------------------------------------------------------------------
    def _file_key(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.layout.metadata_file)
        except (FileNotFoundError, NotADirectoryError):
            self.layout.read_cluster_file()  # a clear error for a missing or foreign directory
            raise NotInitializedError(
                f"{self.layout.root} has no metadata (re-run: kctl cluster init)"
            ) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        """True if the metadata on disk is not the one last loaded."""
        try:
            return self._file_key() != self._cache_key
        except NotInitializedError:
            return True

    def invalidate(self) -> None:
        """Forget the cached copy: the next load reads the file."""
        self._cache_key = None

    def load(self) -> ClusterMetadata:
        """The current metadata; re-parsed only when the file changed."""
        key = self._file_key()
        if self._cache is not None and key == self._cache_key:
            return self._cache
        for _ in range(5):
            try:
                with open(self.layout.metadata_file, encoding="utf-8") as f:
                    st = os.fstat(f.fileno())
                    data = json.load(f)
                self._cache = ClusterMetadata.from_json(data)
                self._cache_key = (st.st_ino, st.st_mtime_ns, st.st_size)
                return self._cache
            except FileNotFoundError:
                time.sleep(0.001)
            except (ValueError, KeyError, TypeError, IsADirectoryError, PermissionError) as exc:
                raise NotInitializedError(f"{self.layout.metadata_file} is damaged: {exc}") from None
        raise NotInitializedError(f"{self.layout.metadata_file} could not be read")

    # -- writing --------------------------------------------------------------------------------
    @property
    def lock(self) -> CriticalSection:
        if self._lock is None:
            self._lock = CriticalSection(self.layout.metadata_lock, "metadata")
        return self._lock

    def write_initial(self, md: ClusterMetadata) -> None:
        os.makedirs(self.layout.metadata_dir, exist_ok=True)
        atomic_write(self.layout.metadata_file, json.dumps(md.to_json(), indent=1).encode())

    def update(
        self, change: Callable[[ClusterMetadata], list[Event] | None], timeout: float = 30.0
    ) -> ClusterMetadata:
        """Apply ``change`` to a fresh copy under the lock; write it if it returned events.

        ``change`` mutates the metadata in place and returns the events describing what it did
        (an empty list or None means "nothing changed": nothing is written).
        """
        with self.lock.hold(timeout):
            self._cache_key = None
            md = self.load()
            md = ClusterMetadata.from_json(md.to_json())  # never mutate the shared cache
            events = change(md)
            if not events:
                return md
            md.version += 1
            atomic_write(self.layout.metadata_file, json.dumps(md.to_json(), indent=1).encode())
            self._append_events(events, md.version)
            self._cache_key = None
            return md

    def _append_events(self, events: list[Event], version: int) -> None:
        stamp = time.time()
        lines = []
        for ev in events:
            rec = {"time": _iso(stamp), "ts_ms": int(stamp * 1000), "metadata_version": version}
            rec.update(ev)
            lines.append(json.dumps(rec, separators=(",", ":")) + "\n")
        fd = os.open(self.layout.events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, "".join(lines).encode())
        finally:
            os.close(fd)

    def record_events(self, events: list[Event]) -> None:
        """Append events that change no metadata (group rebalances, connector progress)."""
        with self.lock.hold():
            md = self.load()
            self._append_events(events, md.version)

    # -- history --------------------------------------------------------------------------------
    def read_events(self, last: int | None = None) -> list[Event]:
        try:
            with open(self.layout.events_file, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return []
        if last is not None:
            lines = lines[-last:] if last > 0 else []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn final line after a crash
        return out

    def follow_events(
        self, start_at_end: bool = True, poll: float = 0.5, stop: Callable[[], bool] | None = None
    ) -> Iterator[Event]:
        from kctl.cluster.watch import ChangeWatcher

        watcher = ChangeWatcher()
        path = self.layout.events_file
        if not os.path.exists(path):
            open(path, "a").close()
        watcher.watch(path)
        with open(path, encoding="utf-8") as f:
            if start_at_end:
                f.seek(0, os.SEEK_END)
            buf = ""
            while stop is None or not stop():
                chunk = f.read()
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split("\n")
                    for line in lines:
                        if line.strip():
                            try:
                                yield json.loads(line)
                            except ValueError:
                                continue
                else:
                    watcher.wait(poll)
        watcher.close()


def require_live_cluster(layout: ClusterLayout) -> ClusterMetadata:
    """The metadata of a cluster with at least one running broker (clear errors otherwise)."""
    md = MetadataStore(layout).load()
    if not any(is_held(layout.broker_lock(b)) for b in md.brokers):
        raise NoLiveBrokerError(f"no broker is running in {layout.root} (start them with: kctl cluster start)")
    return md


def _iso(ts: float) -> str:
    import datetime as _dt

    return (
        _dt.datetime.fromtimestamp(ts, tz=_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
