"""Regression tests for the ``topic create`` race the chaos suite found.

``create_topic`` used to read the metadata, lay out the replica directories (removing any
directory already there as "stale") and only then take the metadata lock to add the topic. A
second ``kctl topic create NAME --if-not-exists`` that had read the metadata just before the
first one committed deleted the replicas of the live topic, acknowledged records included, and
returned "already exists"; two concurrent creates made one of them die of FileNotFoundError.
Since 0be3a46 the checks, the directories and the commit are one step under the metadata lock.
"""

from __future__ import annotations

import os
import threading

import pytest

pytestmark = pytest.mark.e2e


def test_create_if_not_exists_from_a_stale_view_keeps_the_existing_topic(make_cluster, data_dir) -> None:
    """B read the metadata before A created the topic; A's records were acknowledged since.
    The store models that window: its view stays stale until it is invalidated (a fresh read
    under the lock), which is what the fix does."""
    from kctl.client.consumer import Consumer
    from kctl.client.producer import produce
    from kctl.cluster.metadata import ClusterMetadata, MetadataStore
    from kctl.cluster.topics import create_topic

    c = make_cluster(brokers=3)
    before_a = MetadataStore(c.layout).load()  # B's view: no topic yet
    c.create_topic("orders", 1, 3, {"min.insync.replicas": 2})  # A creates the topic
    reports = produce(data_dir, "orders", [f"v{i}".encode() for i in range(100)])
    assert sum(r.count for r in reports if r.error is None) == 100

    class StaleView(MetadataStore):
        stale: ClusterMetadata | None = before_a

        def invalidate(self) -> None:
            self.stale = None
            super().invalidate()

        def load(self) -> ClusterMetadata:
            return self.stale if self.stale is not None else super().load()

    assert create_topic(StaleView(c.layout), "orders", 1, 3, {"min.insync.replicas": 2},
                        if_not_exists=True) is None  # B: "already exists", nothing to do
    got: list[bytes | None] = []
    with Consumer(data_dir) as cons:
        cons.assign({("orders", 0): 0})
        for _ in range(30):
            for b in cons.poll(0.1, values_only=True):
                got.extend(b.values or ())
            if cons.at_end() and got:
                break
    assert got == [f"v{i}".encode() for i in range(100)]


def test_concurrent_creates_of_one_topic(make_cluster) -> None:
    """Two creators at once: one creates, the other is told it exists; no exception; every
    replica directory names the topic id the metadata holds."""
    from kctl.cluster.metadata import MetadataStore
    from kctl.cluster.topics import create_topic
    from kctl.storage.checkpoint import read_partition_metadata

    c = make_cluster(brokers=3, start=False)
    for attempt in range(3):
        name = f"race{attempt}"
        barrier = threading.Barrier(2)
        results: list[object] = []

        def create(name: str = name, barrier: threading.Barrier = barrier, results: list[object] = results) -> None:
            barrier.wait()
            try:
                results.append(create_topic(MetadataStore(c.layout), name, 40, 3, {}, if_not_exists=True))
            except Exception as exc:  # the old race died here of FileNotFoundError
                results.append(exc)

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(type(r).__name__ for r in results) == ["NoneType", "TopicState"], results
        topic = MetadataStore(c.layout).load().topic(name)
        for p, part in enumerate(topic.partitions):
            for b in part.replicas:
                path = os.path.join(c.layout.replica_dir(b, name, p), "partition.metadata")
                assert read_partition_metadata(path) == topic.topic_id, path
