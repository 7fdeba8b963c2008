"""The file source (Kafka's FileStreamSource): the lines of a file into a topic, following appends
the way ``tail -F`` does.

Each complete line (without its line ending) becomes one record with a null key. Lines keep their
order: they all go to partition 0. A line still being written (no newline yet) waits for its
newline. When the file is replaced (log rotation: a new inode at the path), the rest of the old
file is read to its end, including an unfinished last line, and the new file is read from its
start; when it shrinks (truncated in place), it is read again from its start.

The position is the file's inode and the byte offset after the last line produced, carried by
each record in the ``kctl.source.position`` header (``<inode>:<offset>``) and, after each
acknowledged flush, in ``source-offset.json``: after a crash the source resumes exactly after the
last line that reached the topic (see :mod:`kctl.connect.runtime`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.metadata import require_live_cluster
from kctl.connect.runtime import POSITION_HEADER, ConnectorRun, StopFlag, ensure_topic, last_positions, safe_name
from kctl.errors import ConnectorError

if TYPE_CHECKING:
    from kctl.client.producer import Producer

CHUNK = 1 << 20


@dataclass
class FileSourceStats:
    produced: int = 0
    inode: int = 0
    offset: int = 0
    rotations: int = 0


def parse_position(value: object) -> tuple[int, int] | None:
    """``b"<inode>:<offset>"`` (a header) or ``[inode, offset]`` (the offset file)."""
    try:
        if isinstance(value, (bytes, str)):
            text = value.decode() if isinstance(value, bytes) else value
            inode, offset = text.split(":")
            return int(inode), int(offset)
        if isinstance(value, list) and len(value) == 2:
            return int(value[0]), int(value[1])
    except (ValueError, UnicodeDecodeError):
        return None
    return None


class FileSource:
    """``kctl connect file-source``: one file into one topic."""

    def __init__(self, data_dir: str, path: str, topic: str, *, name: str | None = None,
                 poll_interval: float = 0.2, on_info: Callable[[str], None] | None = None) -> None:
        from kctl.cluster.config import validate_topic_name

        self.data_dir = data_dir
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.path = os.path.abspath(path)
        self.topic = validate_topic_name(topic)
        self.name = name or f"file-source-{safe_name(os.path.basename(path))}"
        self.poll_interval = poll_interval
        self.on_info = on_info
        self.stats = FileSourceStats()
        self._fd = -1
        self._pending = b""

    def _info(self, message: str) -> None:
        if self.on_info is not None:
            self.on_info(message)

    def run(self, stop: Callable[[], bool] | None = None) -> FileSourceStats:
        """Follow the file until ``stop()`` is true (or SIGTERM/SIGINT when ``stop`` is None)."""
        if stop is None:
            flag = StopFlag()
            with flag.on_signals():
                return self._run(flag)
        return self._run(stop)

    def _run(self, stop: Callable[[], bool]) -> FileSourceStats:
        from kctl.client.producer import Producer

        require_live_cluster(self.layout)
        config = {"connector_type": "file-source", "kind": "source", "file": self.path, "topic": self.topic}
        with ConnectorRun(self.layout, self.name, config, on_info=self.on_info) as run:
            if ensure_topic(self.data_dir, self.topic):
                self._info(f"created topic {self.topic}")
            resume = self._recover(run)
            try:
                with Producer(self.data_dir, acks="all") as producer:
                    self._follow(run, producer, stop, resume)
            finally:
                self._close()
        return self.stats

    def _recover(self, run: ConnectorRun) -> tuple[int, int] | None:
        tails = last_positions(self.data_dir, self.topic)
        found = parse_position(tails[0]) if 0 in tails else None
        if found is None:
            saved = run.dir.source_offset()
            found = parse_position(saved.get("position")) if saved else None
        return found

    # -- the file -----------------------------------------------------------------------------
    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self, resume: tuple[int, int] | None) -> bool:
        """Open the file at the path; False while it does not exist."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ConnectorError(f"cannot read {self.path}: {exc.strerror}") from None
        st = os.fstat(fd)
        self._fd = fd
        self._pending = b""
        self.stats.inode = st.st_ino
        if resume is not None and resume[0] == st.st_ino and resume[1] <= st.st_size:
            self.stats.offset = resume[1]
            if resume[1]:
                self._info(f"resuming {self.path} at byte {resume[1]}")
        else:
            if resume is not None:
                self._info(f"{self.path} was replaced or truncated since byte {resume[1]}: reading it from the start")
            self.stats.offset = 0
        return True

    def _changed_under_us(self) -> str | None:
        """'rotated' when the path names another file (or none), 'truncated' when it shrank."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "rotated"
        if st.st_ino != self.stats.inode:
            return "rotated"
        if st.st_size < self.stats.offset + len(self._pending):
            return "truncated"
        return None

    def _follow(self, run: ConnectorRun, producer: Producer, stop: Callable[[], bool],
                resume: tuple[int, int] | None) -> None:
        waiting_noted = False
        while not stop():
            if self._fd < 0:
                if not self._open(resume):
                    if not waiting_noted:
                        self._info(f"waiting for {self.path} to appear")
                        waiting_noted = True
                    time.sleep(self.poll_interval)
                    continue
                resume = None
                waiting_noted = False
            chunk = os.pread(self._fd, CHUNK, self.stats.offset + len(self._pending))
            if chunk:
                self._produce_lines(run, producer, self._pending + chunk, final=False)
                continue
            change = self._changed_under_us()
            if change == "rotated":
                # the old file is complete: its unfinished last line is a line too
                self._produce_lines(run, producer, self._pending, final=True)
                self._close()
                self.stats.rotations += 1
                self._info(f"{self.path} was rotated: following the new file from its start")
            elif change == "truncated":
                self._pending = b""
                self.stats.offset = 0
                self._info(f"{self.path} was truncated: reading it from the start")
            else:
                run.save_status(position=[self.stats.inode, self.stats.offset], produced=self.stats.produced)
                time.sleep(self.poll_interval)

    def _produce_lines(self, run: ConnectorRun, producer: Producer, data: bytes, final: bool) -> None:
        """Produce the complete lines of ``data`` (read at the position); with ``final`` an
        unfinished last line counts too. The rest waits in ``_pending`` for its newline."""
        if final:
            lines = data.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            self._pending = b""
        else:
            *lines, self._pending = data.split(b"\n")
        if not lines:
            return
        inode, offset = self.stats.inode, self.stats.offset
        failed = producer.failed
        last = len(lines) - 1
        for i, line in enumerate(lines):
            offset += len(line) + (0 if final and i == last and not data.endswith(b"\n") else 1)
            producer.send(self.topic, line[:-1] if line.endswith(b"\r") else line, partition=0,
                          headers=[(POSITION_HEADER, f"{inode}:{offset}".encode())])
        producer.flush()
        if producer.failed > failed:
            raise ConnectorError(f"lines of {self.path} after byte {self.stats.offset} could not be delivered to "
                                 f"topic '{self.topic}': {producer.first_error}")
        self.stats.offset = offset
        self.stats.produced += len(lines)
        run.dir.write_source_offset([inode, offset])
        run.save_status(position=[inode, offset], produced=self.stats.produced)
