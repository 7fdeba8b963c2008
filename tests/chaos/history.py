"""The history of a chaos run: one JSON object per line, one file per process.

Every operation is logged as Jepsen logs it: an ``invoke`` line, then ``ok`` (it happened),
``fail`` (it certainly did not happen) or ``info`` (unknown outcome, e.g. a timeout; an invoke
with no completion at all counts as ``info``). Reads are logged as one ``ok`` line per poll.

Lines carry ``t``, ``time.monotonic()``: one clock for every process on the machine, so the
files of all processes (and the group ownership trace) merge into one order. Each line is one
``write`` on an ``O_APPEND`` descriptor, so a SIGKILL leaves at worst a torn last line, which
:func:`read_history` skips.

Shapes (``process`` and ``t`` on every line)::

    {"type": "invoke", "f": "send", "topic", "partition", "values": [...]}
    {"type": "ok",     "f": "send", "topic", "partition", "values": [...], "offset": base}
    {"type": "fail" | "info", "f": "send", "topic", "partition", "values": [...], "error"}
    {"type": "ok", "f": "assign", "positions": [[topic, partition, offset], ...]}
    {"type": "ok", "f": "poll", "mode": "assign" | "group" | "drain",
     "reads": [[topic, partition, first_offset, [values...]], ...], "generation", "member"}
    {"type": "invoke" | "ok", "f": "commit", "offsets": [[topic, partition, offset], ...]}
    {"type": "info", "f": "reset", "topic", "partition", "from", "to", "why"}
    {"type": "info", "f": "start" | "exit" | "crash", "pid", ...}
    {"type": "info", "f": <fault name>, ...}            (the nemesis)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

Op = dict[str, Any]


class HistoryWriter:
    """Append-only writer of one process's history file."""

    def __init__(self, path: str, process: str) -> None:
        self.path = path
        self.process = process
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def log(self, type_: str, f: str, **fields: Any) -> Op:
        op: Op = {"t": time.monotonic(), "process": self.process, "type": type_, "f": f}
        op.update(fields)
        os.write(self._fd, (json.dumps(op, separators=(",", ":")) + "\n").encode())
        return op

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_jsonl(path: str) -> Iterator[Op]:
    """Every whole JSON line of ``path`` (a torn or garbled line is skipped)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            try:
                op = json.loads(raw)
            except ValueError:
                continue
            if isinstance(op, dict):
                yield op


def read_history(paths: Iterable[str]) -> list[Op]:
    """The merged history of every file, in time order (stable within a file)."""
    ops: list[Op] = []
    for p in paths:
        ops.extend(read_jsonl(p))
    ops.sort(key=lambda op: float(op.get("t", 0.0)))
    return ops
