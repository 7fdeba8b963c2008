"""What every connector shares: its directory, its liveness lock, its status, its events, and the
exactly-once bookkeeping of sources.

A connector named N keeps its files under ``<data>/connect/N/``::

    connector.json      what it is: type, source or sink, topic, database/table or file
    connector.lock      held (flock) by the connector process while it runs: "is it running?"
                        is a non-blocking probe, and a second copy of N refuses to start
    status.json         state (running, stopped, failed), pid, position, counters, last error
    source-offset.json  (sources) the position of the last change known delivered
    sink-state.json     (the file sink) how far the output file is known good

Exactly-once delivery of a source into its topic. Every record a source produces carries its
position in a header (``kctl.source.position``). After a crash the source cannot know which of
the records it was sending reached the log, so it asks the log: it waits until each partition's
high watermark reaches its log end (what the dead process wrote is then either committed or
gone), and reads the last position of each partition. Changes are produced in position order and
each key always goes to the same partition, so a change is in the topic exactly when its position
is at or below the last position of its partition. ``source-offset.json`` (written after each
acknowledged flush, crash-atomically) covers what the topic can no longer tell: positions whose
records compaction or retention removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kctl.cluster.groups import validate_group_name
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import is_held
from kctl.cluster.metadata import MetadataStore
from kctl.errors import ConnectorError, KctlError
from kctl.storage.checkpoint import atomic_write

CONNECTOR_FILE = "connector.json"
LOCK_FILE = "connector.lock"
STATUS_FILE = "status.json"
SOURCE_OFFSET_FILE = "source-offset.json"
POSITION_HEADER = "kctl.source.position"
OP_HEADER = "kctl.source.op"

RUNNING = "running"
STOPPED = "stopped"
FAILED = "failed"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def validate_connector_name(name: str) -> str:
    return validate_group_name(name, "connector")


def safe_name(text: str) -> str:
    """``text`` with every character a connector name does not allow replaced by '_'."""
    out = "".join(ch if (ch.isalnum() and ch.isascii()) or ch in "._-" else "_" for ch in text)
    return out[:200] or "_"


def sink_group(name: str) -> str:
    """Kafka Connect's convention: a sink connector N consumes as group ``connect-N``."""
    return f"connect-{name}"


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class StopFlag:
    """Set by SIGTERM or SIGINT (Ctrl-C): the connector finishes its current step and exits 0."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self, *_args: object) -> None:
        self._event.set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[StopFlag]:
        """Route SIGTERM and SIGINT to this flag while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        saved = {sig: signal.signal(sig, self.set) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)


@dataclass
class ConnectorDir:
    """The files of one connector under ``<data>/connect/<name>/``."""

    layout: ClusterLayout
    name: str

    @property
    def path(self) -> str:
        return os.path.join(self.layout.connect_dir, self.name)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def config(self) -> dict[str, Any] | None:
        return read_json(self.file(CONNECTOR_FILE))

    def status(self) -> dict[str, Any]:
        return read_json(self.file(STATUS_FILE)) or {}

    def running(self) -> bool:
        return is_held(self.file(LOCK_FILE))

    def holder_pid(self) -> int | None:
        try:
            with open(self.file(LOCK_FILE), encoding="ascii", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def source_offset(self) -> dict[str, Any] | None:
        return read_json(self.file(SOURCE_OFFSET_FILE))

    def write_source_offset(self, position: Any) -> None:
        atomic_write(self.file(SOURCE_OFFSET_FILE),
                     json.dumps({"position": position, "updated_ms": now_ms()}) + "\n")


def list_connectors(layout: ClusterLayout) -> list[ConnectorDir]:
    try:
        names = sorted(os.listdir(layout.connect_dir))
    except FileNotFoundError:
        return []
    return [ConnectorDir(layout, n) for n in names
            if os.path.isfile(os.path.join(layout.connect_dir, n, CONNECTOR_FILE))]


@dataclass
class ConnectorRun:
    """One run of a connector: holds its liveness lock, keeps its status file and records its
    start, stop and failure in the cluster's change history. Use as a context manager."""

    layout: ClusterLayout
    name: str
    config: dict[str, Any]
    on_info: Callable[[str], None] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    _fd: int = -1
    _last_status: float = 0.0

    def __post_init__(self) -> None:
        validate_connector_name(self.name)
        self.dir = ConnectorDir(self.layout, self.name)
        self.store = MetadataStore(self.layout)

    # -- start --------------------------------------------------------------------------------
    def __enter__(self) -> ConnectorRun:
        os.makedirs(self.dir.path, exist_ok=True)
        fd = os.open(self.dir.file(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.dir.holder_pid()
            raise ConnectorError(f"connector '{self.name}' is already running"
                                 + (f" (pid {pid})" if pid else "") + "; stop it first") from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._check_config()
            self.status = {"state": RUNNING, "pid": os.getpid(), "started_ms": now_ms(),
                           "last_error": self.dir.status().get("last_error")}
            self.save_status(force=True)
            self._event("connector_started", pid=os.getpid(),
                        **{k: v for k, v in self.config.items() if k in ("connector_type", "topic")})
        except BaseException:
            self._release()
            raise
        return self

    def _check_config(self) -> None:
        """The same name must keep meaning the same connector (its offsets depend on it)."""
        old = self.dir.config()
        fixed = ("connector_type", "topic", "db", "table", "file")
        if old is not None:
            changed = [k for k in fixed if k in old and k in self.config and old[k] != self.config[k]]
            if changed:
                what = ", ".join(f"{k} {old[k]!r}" for k in changed)
                raise ConnectorError(
                    f"connector '{self.name}' already exists with {what}; choose another --name "
                    f"(or remove {self.dir.path} to start it over)")
        doc = dict(old or {})
        doc.update(self.config)
        doc.setdefault("created_ms", now_ms())
        doc["name"] = self.name
        atomic_write(self.dir.file(CONNECTOR_FILE), json.dumps(doc, indent=1) + "\n")

    # -- while running ------------------------------------------------------------------------
    def info(self, message: str) -> None:
        if self.on_info is not None:
            self.on_info(message)

    def save_status(self, force: bool = False, **fields: Any) -> None:
        """Merge ``fields`` into the status file; written at most twice a second unless forced."""
        self.status.update(fields)
        mono = time.monotonic()
        if not force and mono - self._last_status < 0.5:
            return
        self._last_status = mono
        self.status["updated_ms"] = now_ms()
        atomic_write(self.dir.file(STATUS_FILE), json.dumps(self.status) + "\n", fsync=False)

    def _event(self, kind: str, **fields: Any) -> None:
        try:
            self.store.record_events([{"type": kind, "connector": self.name, **fields}])
        except (KctlError, OSError):
            pass  # the history is informative; a connector does not stop for it

    # -- the end ------------------------------------------------------------------------------
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is None or isinstance(exc, KeyboardInterrupt):
                self.save_status(force=True, state=STOPPED, stopped_ms=now_ms())
                self._event("connector_stopped", reason="stopped")
            else:
                message = str(exc) if isinstance(exc, KctlError) else f"{type(exc).__name__}: {exc}"
                self.save_status(force=True, state=FAILED, stopped_ms=now_ms(), last_error=message)
                self._event("connector_error", error=message)
        finally:
            self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = -1


# -- exactly-once: where a source left off ------------------------------------------------------
def settled_partitions(data_dir: str, topic: str, timeout: float) -> list[tuple[int, int, int]]:
    """(partition, log start, high watermark) of every partition, once each leader's high
    watermark has reached its log end: records a dead producer left are committed or gone."""
    from kctl.client.admin import Cluster

    cluster = Cluster(data_dir)
    deadline = time.monotonic() + timeout
    while True:
        parts = cluster.describe([topic])[0]["partitions"]
        pending = [p for p in parts if p.leader is None or p.high_watermark is None or p.log_end is None
                   or p.high_watermark < p.log_end]
        if not pending:
            return [(p.partition, p.log_start or 0, p.high_watermark or 0) for p in parts]
        if time.monotonic() > deadline:
            names = ", ".join(f"{topic}-{p.partition}" for p in pending)
            raise ConnectorError(
                f"partitions {names} still have records above their high watermark after {timeout:g}s "
                "(or no leader), so what was delivered cannot be told yet; retry when the cluster is healthy")
        time.sleep(0.1)


def last_positions(data_dir: str, topic: str, timeout: float = 30.0) -> dict[int, bytes]:
    """Per partition, the ``kctl.source.position`` header of its last record that has one.

    Reads backwards from the high watermark in growing windows, so it costs a few batches unless
    the end of a partition holds records of another writer.
    """
    from kctl.client.consumer import Consumer

    found: dict[int, bytes] = {}
    todo = {p: (start, hw) for p, start, hw in settled_partitions(data_dir, topic, timeout) if hw > start}
    window = 16
    with Consumer(data_dir) as consumer:
        while todo:
            consumer.unassign(consumer.assignment())
            consumer.assign({(topic, p): max(start, hw - window) for p, (start, hw) in todo.items()})
            last: dict[int, bytes] = {}
            deadline = time.monotonic() + timeout
            while not consumer.at_end():
                if time.monotonic() > deadline:
                    raise ConnectorError(f"could not read the end of topic '{topic}' within {timeout:g}s")
                for batch in consumer.poll(0.2):
                    for record in batch.records or ():
                        if record.offset >= todo[batch.partition][1]:
                            continue
                        for name, value in record.headers:
                            if name == POSITION_HEADER and value is not None:
                                last[batch.partition] = value
            for p, (start, hw) in list(todo.items()):
                if p in last:
                    found[p] = last[p]
                if p in last or hw - window <= start:
                    del todo[p]
            window *= 16
    return found


def ensure_topic(data_dir: str, topic: str, *, partitions: int = 1, config: dict[str, Any] | None = None) -> bool:
    """Create ``topic`` if it does not exist (replication factor min(3, brokers)); True if created."""
    from kctl.client.admin import Cluster
    from kctl.cluster.config import validate_topic_name

    validate_topic_name(topic)
    cluster = Cluster(data_dir)
    if topic in cluster.metadata().topics:
        return False
    return cluster.create_topic(topic, partitions, None, config or {}, if_not_exists=True)
