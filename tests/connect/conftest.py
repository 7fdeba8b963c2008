"""Helpers for connector tests: connector processes that are always killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import KCTL


class Proc:
    """A ``kctl connect ...`` process with its stderr in a file."""

    def __init__(self, data_dir: str, args: list[str], log_path: str) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen([*KCTL, "--data-dir", data_dir, *args], stdout=self._log, stderr=self._log,
                                      stdin=subprocess.DEVNULL)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def stop(self) -> None:
        try:
            self.kill()
        finally:
            self._log.close()


@pytest.fixture
def connector(data_dir: str, tmp_path) -> Iterator[Callable[..., Proc]]:  # type: ignore[no-untyped-def]
    """``connector("sqlite-source", "--db", ...)`` starts a connector process; all are killed at the end."""
    started: list[Proc] = []

    def start(*args: str) -> Proc:
        proc = Proc(data_dir, ["connect", *args], str(tmp_path / f"connector-{len(started)}.log"))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def file_lines(path: str) -> list[bytes]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return f.read().splitlines()
