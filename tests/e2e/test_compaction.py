"""Compaction through the real cluster: brokers clean every replica of a compacted topic on the
``log.retention.check.interval.ms`` schedule until one record per live key is left."""

from __future__ import annotations

import time

import pytest

from kctl.client.consumer import Consumer
from kctl.client.offsetspec import OffsetSpec
from kctl.client.producer import DeliveryReport, Producer
from kctl.errors import InvalidRecordError
from kctl.storage.verify import verify_replica
from tests.storage.log_helpers import read_all

pytestmark = pytest.mark.e2e

KEYS = 40
ROUNDS = 15


def _leader_records(data_dir: str, topic: str, partitions: int) -> list[tuple[bytes | None, bytes | None]]:
    out = []
    with Consumer(data_dir) as c:
        c.assign({(topic, p): OffsetSpec("beginning") for p in range(partitions)})
        deadline = time.monotonic() + 10
        while not c.at_end() and time.monotonic() < deadline:
            for b in c.poll(0.2):
                out.extend((r.key, r.value) for r in b.records or [])
    return out


def test_a_compacted_topic_ends_with_one_record_per_live_key_on_every_replica(make_cluster):
    c = make_cluster(brokers=3, log_retention_check_interval_ms="500")
    c.create_topic("state", partitions=2, replication_factor=3,
                   config={"cleanup.policy": "compact", "segment.bytes": 1024, "delete.retention.ms": 0,
                           "min.cleanable.dirty.ratio": 0.01})
    final: dict[bytes, bytes | None] = {}
    with Producer(c.layout.root, acks="all", batch_bytes=400) as p:
        for r in range(ROUNDS):
            for k in range(KEYS):
                key, value = f"key-{k}".encode(), f"value-{k}-round-{r}".encode()
                p.send("state", value, key=key)
                final[key] = value
            p.flush()
        for k in range(0, KEYS, 4):  # delete every fourth key
            p.send("state", None, key=f"key-{k}".encode())
            final[f"key-{k}".encode()] = None
        p.flush()
        # distinct keys, more than a segment's worth per partition: they push every update out
        # of the active segment, which is never cleaned
        for k in range(KEYS):
            p.send("state", b"f" * 200, key=f"filler-{k}".encode())
            final[f"filler-{k}".encode()] = b"f" * 200
    live = sorted((k, v) for k, v in final.items() if v is not None)
    by_key = lambda kv: (kv[0] or b"", kv[1] or b"")  # noqa: E731
    written = KEYS * ROUNDS + KEYS // 4 + KEYS

    deadline = time.monotonic() + 25
    while True:
        got = sorted(_leader_records(c.layout.root, "state", 2), key=by_key)
        if got == live or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert got == live  # exactly one record per live key, the latest; deleted keys gone
    # offsets never move: the partitions still end where the writes ended
    assert sum(c.partition("state", p).high_watermark for p in range(2)) == written

    # followers clean their own copies too; every replica is valid and equal
    md = c.metadata()
    for p, part in enumerate(md.topic("state").partitions):
        copies = []
        for b in part.replicas:
            directory = c.layout.replica_dir(b, "state", p)
            wait_until = time.monotonic() + 15
            while True:
                recs = [(r.offset, r.key, r.value) for r in read_all(directory)]
                if len({k for _o, k, _v in recs}) == len(recs) or time.monotonic() > wait_until:
                    break
                time.sleep(0.3)
            assert verify_replica(directory) == []
            copies.append(recs)
        assert all(copy == copies[0] for copy in copies)


def test_a_record_without_a_key_is_refused_on_a_compacted_topic(make_cluster):
    c = make_cluster(brokers=1)
    c.create_topic("keyed", partitions=1, replication_factor=1, config={"cleanup.policy": "compact"})
    reports: list[DeliveryReport] = []
    with Producer(c.layout.root, acks="1", on_delivery=reports.append) as p:
        p.send("keyed", b"no key")
        p.send("keyed", b"with a key", key=b"k")
    refused = [r.error for r in reports if r.error is not None]
    assert len(refused) == 1 and isinstance(refused[0], InvalidRecordError) and "needs a key" in str(refused[0])
    assert [r.count for r in reports if r.error is None] == [1]
