"""The file sink (Kafka's FileStreamSink): a topic's record values appended to a file, one line
each, as a member of a consumer group.

Kafka's file sink delivers at least once; this one writes every record exactly once, even when
killed. After each poll it appends the lines, fsyncs the file, then records in
``sink-state.json`` (crash-atomically) the file's inode and size and the next offset of each
partition, and only then lets the group commit. On a restart a file that grew past the recorded
size (lines written before a crash, not yet recorded) is cut back to it, and records below the
recorded offsets are skipped: the file ends up as if the sink had never stopped. A tombstone
writes nothing. When the file is moved away (log rotation), the sink starts a new one at the path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.metadata import require_live_cluster
from kctl.connect.runtime import ConnectorRun, StopFlag, read_json, safe_name, sink_group
from kctl.errors import ConnectorError
from kctl.storage.checkpoint import atomic_write

SINK_STATE_FILE = "sink-state.json"


@dataclass
class FileSinkStats:
    written: int = 0
    skipped: int = 0
    truncated_bytes: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)


class FileSink:
    """``kctl connect file-sink``: one topic into one file."""

    def __init__(self, data_dir: str, topic: str, path: str, *, group: str | None = None, name: str | None = None,
                 on_info: Callable[[str], None] | None = None) -> None:
        from kctl.cluster.config import validate_topic_name

        self.data_dir = data_dir
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.topic = validate_topic_name(topic)
        self.path = os.path.abspath(path)
        self.name = name or f"file-sink-{safe_name(os.path.basename(path))}"
        self.group = group or sink_group(self.name)
        self.on_info = on_info
        self.stats = FileSinkStats()
        self._fd = -1
        self._inode = 0
        self._size = 0
        self._offsets: dict[tuple[str, int], int] = {}

    def _info(self, message: str) -> None:
        if self.on_info is not None:
            self.on_info(message)

    # -- the file and its state ---------------------------------------------------------------
    def _state_path(self, run: ConnectorRun) -> str:
        return run.dir.file(SINK_STATE_FILE)

    def _open(self, state: dict[str, Any] | None) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConnectorError(f"cannot write {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        self._fd, self._inode, self._size = fd, st.st_ino, st.st_size
        if state and state.get("inode") == st.st_ino and isinstance(state.get("size"), int) \
                and st.st_size > state["size"]:
            # lines written before a crash but never recorded: they are written again below
            os.ftruncate(fd, state["size"])
            self.stats.truncated_bytes += st.st_size - state["size"]
            self._info(f"cut {self.path} back to {state['size']} bytes, where the last run left it known good")
            self._size = state["size"]

    def _save_state(self, run: ConnectorRun) -> None:
        doc = {"file": self.path, "inode": self._inode, "size": self._size,
               "offsets": {f"{t}:{p}": o for (t, p), o in sorted(self._offsets.items())}}
        atomic_write(self._state_path(run), json.dumps(doc) + "\n")

    def _reopen_if_moved(self, run: ConnectorRun) -> None:
        try:
            moved = os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            moved = True
        if moved:
            os.close(self._fd)
            self._fd = -1
            self._open(None)
            self._save_state(run)
            self._info(f"{self.path} was moved away: writing a new file")

    def write(self, run: ConnectorRun, batches: list[Any]) -> dict[tuple[str, int], int]:
        """Append the lines of ``batches``; returns the next offsets now recorded."""
        out: list[bytes] = []
        positions: dict[tuple[str, int], int] = {}
        for batch in batches:
            tp = (batch.topic, batch.partition)
            floor = self._offsets.get(tp, 0)
            for record in batch.records or ():
                if record.offset < floor:
                    self.stats.skipped += 1
                elif record.value is not None:
                    out.append(record.value)
            if batch.next_offset > floor:
                positions[tp] = batch.next_offset
        if out:
            data = memoryview(b"\n".join(out) + b"\n")
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
            self._size = os.fstat(self._fd).st_size
            self.stats.written += len(out)
        if positions:
            self._offsets.update(positions)
            self._save_state(run)
            self.stats.positions.update(positions)
        return positions

    # -- running ------------------------------------------------------------------------------
    def run(self, stop: Callable[[], bool] | None = None) -> FileSinkStats:
        """Consume and write until ``stop()`` is true (or SIGTERM/SIGINT when ``stop`` is None)."""
        if stop is None:
            flag = StopFlag()
            with flag.on_signals():
                return self._run(flag)
        return self._run(stop)

    def _run(self, stop: Callable[[], bool]) -> FileSinkStats:
        from kctl.client.group import GroupConsumer

        require_live_cluster(self.layout)
        config = {"connector_type": "file-sink", "kind": "sink", "file": self.path, "topic": self.topic,
                  "group": self.group}
        with ConnectorRun(self.layout, self.name, config, on_info=self.on_info) as run:
            state = read_json(self._state_path(run))
            if state is not None and state.get("file") == self.path:
                for key, offset in (state.get("offsets") or {}).items():
                    topic, _, p = key.rpartition(":")
                    self._offsets[(topic, int(p))] = int(offset)
            else:
                state = None
            self._open(state)
            try:
                consumer = GroupConsumer(self.data_dir, self.group, [self.topic], client_id=self.name,
                                         on_event=self._info)
                try:
                    while not stop():
                        batches = consumer.poll(0.25)
                        self._reopen_if_moved(run)
                        if batches:
                            consumer.delivered(self.write(run, batches))
                        run.save_status(written=self.stats.written,
                                        position={f"{t}-{p}": o for (t, p), o in sorted(self._offsets.items())})
                finally:
                    consumer.close()
            finally:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
        return self.stats
