"""Fixtures for CLI tests: the real command run in this process, and one shared read-only cluster."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import FAST_SETTINGS, kill_everything


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Ran]:
    """``cli(*args)`` runs ``kctl ARGS`` in this process (stdout is not a terminal) and captures it."""
    from kctl.cli import run

    monkeypatch.setenv("COLUMNS", "200")  # wide tables: cells are asserted, not wrapping
    monkeypatch.delenv("KCTL_DEBUG", raising=False)
    monkeypatch.delenv("KCTL_DATA_DIR", raising=False)

    def call(*args: str) -> Ran:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return call


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One started 3-broker cluster per test module, for tests that only read it.

    Topics: ``orders`` (3 partitions, RF 3, min.insync.replicas=2) holding 5, 3 and 0 records in
    partitions 0, 1, 2; ``audit`` (1 partition, RF 2) holding 2 records; ``clicks`` (2 partitions)
    holding 7 and 2 records, of which the group ``billing`` (no live member) has read and committed
    4 and 2: its lag is 3.
    """
    from kctl.client.admin import Cluster
    from kctl.client.producer import Producer

    data_dir = str(tmp_path_factory.mktemp("cli") / "cluster")
    c = Cluster.init(data_dir, brokers=3, settings=dict(FAST_SETTINGS))
    try:
        c.start(timeout=30)
        c.create_topic("orders", 3, 3, {"min.insync.replicas": 2})
        c.create_topic("audit", 1, 2)
        with Producer(data_dir, acks="all") as p:
            for i in range(5):
                p.send("orders", f"p0-{i}".encode(), partition=0)
            for i in range(3):
                p.send("orders", f"p1-{i}".encode(), partition=1)
            for i in range(2):
                p.send("audit", f"a-{i}".encode(), partition=0)
        c.create_topic("clicks", 2, 3)
        with Producer(data_dir, acks="all") as p:
            for i, part in enumerate([0, 0, 0, 0, 1, 1]):
                p.send("clicks", f"c-{i}".encode(), partition=part)
        _consume_all_and_commit(data_dir, "billing", "clicks")
        with Producer(data_dir, acks="all") as p:
            for i in range(3):
                p.send("clicks", f"late-{i}".encode(), partition=0)
        yield c
    finally:
        try:
            c.stop(timeout=10)
        except Exception:
            pass
        leaked = kill_everything(data_dir)
        assert not leaked, f"processes still running after the tests: {leaked}"


def _consume_all_and_commit(data_dir: str, group: str, topic: str) -> None:
    """A group member that reads the topic to its end, commits and leaves the group."""
    import time

    from kctl.client.group import GroupConsumer

    deadline = time.monotonic() + 30
    with GroupConsumer(data_dir, group, [topic], client_id="fixture") as member:
        while time.monotonic() < deadline:
            batches = member.poll(0.2)
            member.delivered({(b.topic, b.partition): b.next_offset for b in batches})
            if not batches and member.assignment() and member.at_end():
                return
    raise AssertionError("the fixture's group member did not reach the end of the topic")
