"""Helpers shared by the replication and failover end-to-end tests (no tests of its own).

They observe a running cluster only through what users and clients see: the metadata, the
published replica state and the segment files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kctl.client.admin import Cluster
from kctl.cluster.metadata import PartitionState
from kctl.storage.log import ReplicaStateFile
from kctl.storage.segment import list_segment_bases

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.01) -> T:
    """Poll ``pred`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def partition_state(cluster: Cluster, topic: str, p: int = 0) -> PartitionState:
    return cluster.metadata().topic(topic).partitions[p]


def replica_offsets(cluster: Cluster, broker: int, topic: str, p: int = 0) -> tuple[int, int, int]:
    """(log end offset, high watermark, leader epoch of that high watermark) of one replica."""
    sf = ReplicaStateFile(cluster.layout.replica_dir(broker, topic, p))
    try:
        le = sf.read_log_end()
        hw = sf.read_high_watermark()
    finally:
        sf.close()
    assert le is not None and hw is not None
    return le.log_end_offset, hw.high_watermark, hw.leader_epoch


def replica_log_bytes(cluster: Cluster, broker: int, topic: str, p: int = 0) -> bytes:
    """Every published byte of a replica's segments, in offset order."""
    directory = cluster.layout.replica_dir(broker, topic, p)
    sf = ReplicaStateFile(directory)
    try:
        state = sf.read_log_end()
    finally:
        sf.close()
    assert state is not None
    out = bytearray()
    for base in list_segment_bases(directory):
        with open(os.path.join(directory, f"{base:020d}.log"), "rb") as f:
            data = f.read()
        if base == state.active_base_offset:
            data = data[: state.active_size]
        out += data
    return bytes(out)


def wait_converged(cluster: Cluster, topic: str, p: int = 0, timeout: float = 15.0) -> PartitionState:
    """Wait until every replica is in the ISR, has the leader's log end offset and high watermark."""

    def done() -> PartitionState | None:
        part = partition_state(cluster, topic, p)
        if part.leader is None or sorted(part.isr) != sorted(part.replicas):
            return None
        offsets = [replica_offsets(cluster, b, topic, p) for b in part.replicas]
        leo = offsets[0][0]
        if any(o[0] != leo or o[1] != leo or o[2] != part.leader_epoch for o in offsets):
            return None
        return part

    return wait_until(done, timeout, f"{topic}-{p} to converge on every replica")


def read_partition(cluster: Cluster, topic: str, p: int = 0) -> list[tuple[int, bytes | None]]:
    """Every committed (offset, value) of a partition, read through the consumer from its leader."""
    from kctl.client.consumer import Consumer

    out: list[tuple[int, bytes | None]] = []
    with Consumer(cluster.layout.root) as c:
        c.assign({(topic, p): 0})
        deadline = time.monotonic() + 15
        while not c.at_end():
            for fb in c.poll(0.2):
                assert fb.records is not None
                out.extend((r.offset, r.value) for r in fb.records)
            assert time.monotonic() < deadline, "consumer did not reach the high watermark"
    return out


class BackgroundProducer(threading.Thread):
    """Produce numbered values to one partition in chunks (one batch each, up to ``window``
    batches in flight) until stopped.

    ``acked`` holds (base offset, values) of every chunk the producer acknowledged; ``failed``
    counts records it reported as failed; ``errors`` keeps the first few error messages.
    """

    def __init__(self, data_dir: str, topic: str, partition: int = 0, *, acks: str = "all",
                 chunk: int = 10, window: int = 4, timeout: float = 15.0, pause: float = 0.01,
                 limit: int = 100_000, prefix: str = "v") -> None:
        super().__init__(daemon=True, name="background-producer")
        self.data_dir, self.topic, self.partition = data_dir, topic, partition
        self.acks, self.chunk, self.window, self.timeout = acks, chunk, window, timeout
        self.pause, self.limit = pause, limit
        self.prefix = prefix
        self.stop_event = threading.Event()
        self.acked: list[tuple[int, list[bytes]]] = []
        self.failed = 0
        self.sent = 0
        self.errors: list[str] = []
        self.crash: BaseException | None = None

    @property
    def acked_count(self) -> int:
        return sum(len(v) for _b, v in self.acked)

    def acked_values(self) -> list[bytes]:
        return [v for _b, vals in self.acked for v in vals]

    def run(self) -> None:
        from collections import deque

        from kctl.client.producer import DeliveryReport, Producer

        reports: list[DeliveryReport] = []
        pending: deque[list[bytes]] = deque()

        def settle() -> None:
            # one partition: batches complete in the order they were sealed
            for r in reports:
                values = pending.popleft()
                assert r.count == len(values), (r.count, len(values))
                if r.error is None:
                    self.acked.append((r.base_offset, values))
                else:
                    self.failed += r.count
                    if len(self.errors) < 5:
                        self.errors.append(str(r.error))
            reports.clear()

        try:
            with Producer(self.data_dir, acks=self.acks, timeout=self.timeout, on_delivery=reports.append) as prod:
                n = 0
                while not self.stop_event.is_set() and n < self.limit:
                    values = [f"{self.prefix}{n + i}".encode() for i in range(self.chunk)]
                    n += self.chunk
                    for v in values:
                        prod.send(self.topic, v, partition=self.partition)
                    pending.append(values)
                    prod.seal_all()
                    self.sent += len(values)
                    if len(pending) >= self.window:
                        prod.flush()
                    settle()
                    if self.pause:
                        time.sleep(self.pause)
                prod.flush()
                settle()
        except BaseException as exc:  # surfaced by stop()
            self.crash = exc

    def wait_acked(self, count: int, timeout: float = 10.0) -> None:
        wait_until(lambda: self.acked_count >= count or self.crash is not None, timeout,
                   f"{count} acknowledged records")
        if self.crash is not None:
            raise self.crash

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), "the producer thread did not finish"
        if self.crash is not None:
            raise self.crash


def assert_acked_once_in_order(log: list[tuple[int, bytes | None]], producer: BackgroundProducer) -> None:
    """Every acknowledged value is in the log exactly once, at the offsets reported, in order;
    no value at all appears twice (the producer is idempotent)."""
    values = [v for _o, v in log]
    assert len(values) == len(set(values)), "a record was written twice"
    by_offset: dict[int, Any] = dict(log)
    for base, vals in producer.acked:
        got = [by_offset.get(base + i) for i in range(len(vals))]
        assert got == vals, f"acknowledged chunk at offset {base} is {got}, expected {vals}"
    positions = {v: i for i, v in enumerate(values)}
    acked = producer.acked_values()
    order = [positions[v] for v in acked]
    assert order == sorted(order), "acknowledged records are out of order"
