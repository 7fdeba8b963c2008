"""Shared fixtures. End-to-end tests start real broker processes in a temporary directory and
always stop every one of them (a leaked broker is a bug)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import pids_naming

# Fast failure detection for tests; every other setting keeps Kafka's default.
FAST_SETTINGS = {
    "broker.session.timeout.ms": "2000",
    "broker.heartbeat.interval.ms": "250",
    "replica.lag.time.max.ms": "3000",
    "group.session.timeout.ms": "3000",
    "group.heartbeat.interval.ms": "250",
}

KCTL = [sys.executable, "-m", "kctl"]


def _pids_using(data_dir: str) -> list[int]:
    """Every kctl process whose command line names ``data_dir`` (brokers, consumers, connectors)."""
    return pids_naming(data_dir, b"kctl")


def kill_everything(data_dir: str) -> list[int]:
    """SIGKILL every kctl process started on ``data_dir``; returns the PIDs that were running."""
    pids = _pids_using(data_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pids_using(data_dir):
        time.sleep(0.02)
    return pids


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "cluster")
    yield path
    kill_everything(path)


@pytest.fixture
def make_cluster(data_dir: str) -> Iterator[Callable[..., object]]:
    """``make_cluster(brokers=3, start=True, **settings)`` -> a started :class:`kctl.Cluster`."""
    from kctl.client.admin import Cluster

    made: list[Cluster] = []

    def factory(brokers: int = 3, start: bool = True, **settings: str) -> Cluster:
        cfg = dict(FAST_SETTINGS)
        cfg.update({k.replace("_", "."): v for k, v in settings.items()})
        c = Cluster.init(data_dir, brokers=brokers, settings=cfg)
        made.append(c)
        if start:
            c.start(timeout=30)
        return c

    yield factory
    for c in made:
        try:
            c.stop(timeout=10)
        except Exception:
            pass
    leaked = kill_everything(data_dir)
    assert not leaked, f"processes still running after the test: {leaked}"


def run_kctl(data_dir: str | None, *args: str, input: bytes | None = None, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run the real CLI as a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("KCTL_DEBUG", None)
    if env:
        full_env.update(env)
    cmd = [*KCTL] + (["--data-dir", data_dir] if data_dir else []) + list(args)
    return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, env=full_env)


@pytest.fixture
def kctl(data_dir: str) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    def call(*args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return run_kctl(data_dir, *args, **kw)  # type: ignore[arg-type]

    return call
