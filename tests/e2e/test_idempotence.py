"""The idempotent producer: retries after a leader change never write a record twice."""

from __future__ import annotations

import threading
import time

import pytest

from kctl.client.consumer import Consumer
from kctl.client.offsetspec import OffsetSpec
from kctl.client.producer import DeliveryReport, Producer

pytestmark = pytest.mark.e2e


def read_all(data_dir: str, topic: str, partitions: int) -> list[tuple[int, int, bytes]]:
    out = []
    with Consumer(data_dir) as c:
        c.assign({(topic, p): OffsetSpec("beginning") for p in range(partitions)})
        deadline = time.monotonic() + 20
        while not c.at_end() and time.monotonic() < deadline:
            for b in c.poll(0.2):
                out.extend((b.partition, r.offset, r.value) for r in b.records)
        for b in c.poll(0):
            out.extend((b.partition, r.offset, r.value) for r in b.records)
    return out


def wait_for(pred, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_a_retried_batch_already_on_the_new_leader_is_not_written_again(make_cluster):
    c = make_cluster(brokers=3)
    c.create_topic("idem", partitions=1, replication_factor=3)
    reports: list[DeliveryReport] = []
    p = Producer(c.layout.root, acks="1", on_delivery=reports.append)
    p.send("idem", b"once")
    p.flush()
    assert reports and reports[0].error is None
    batch_offset = reports[0].base_offset
    info = c.partition("idem", 0)
    old_leader = info.leader
    wait_for(lambda: all(c._replica_offsets(b, "idem", 0)[2] == 1 for b in info.replicas))
    # keep the sealed batch as a client would while it waits for an acknowledgement
    from kctl.client.producer import _Batch
    from kctl.storage.records import encode_batch

    batch = _Batch("idem", 0, [b"once"], None, None, 0, base_sequence=0)
    batch.encoded = encode_batch([b"once"], producer_id=p.producer_id, producer_epoch=0, base_sequence=0)
    batch.placed = (old_leader, info.leader_epoch, batch_offset, batch_offset)
    c.kill_broker(old_leader)
    wait_for(lambda: c.partition("idem", 0).leader not in (None, old_leader))
    p._write(batch)  # the retry a leader change causes
    assert batch.placed is not None and batch.placed[2] == batch_offset
    assert batch.placed[0] != old_leader
    p.close()
    assert [v for _p, _o, v in read_all(c.layout.root, "idem", 1)] == [b"once"]


def test_produce_through_a_leader_kill_loses_and_duplicates_nothing(make_cluster):
    c = make_cluster(brokers=3)
    c.create_topic("chaos", partitions=2, replication_factor=3, config={"min.insync.replicas": 2})
    acked: set[bytes] = set()
    failed: list[DeliveryReport] = []
    sent: dict[tuple[int, int], int] = {}

    def on_delivery(rep: DeliveryReport) -> None:
        if rep.error is not None:
            failed.append(rep)
        else:
            sent[(rep.partition, rep.base_offset)] = rep.count

    values = [b"v%06d" % i for i in range(6000)]
    stop = threading.Event()

    def produce() -> None:
        with Producer(c.layout.root, acks="all", on_delivery=on_delivery, batch_bytes=4096, timeout=30) as p:
            for i in range(0, len(values), 100):
                for v in values[i:i + 100]:
                    p.send("chaos", v, key=v[-2:])
                p.flush()
                acked.update(values[i:i + 100])
                if stop.is_set():
                    break

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.5)
    victim = c.partition("chaos", 0).leader
    c.kill_broker(victim)
    t.join(timeout=120)
    assert not t.is_alive()
    assert not failed, failed[:3]
    got = read_all(c.layout.root, "chaos", 2)
    seen = [v for _p, _o, v in got]
    assert len(seen) == len(set(seen)), "a record was written twice"
    assert acked <= set(seen), f"{len(acked - set(seen))} acknowledged records lost"
    c.start_broker(victim)
    wait_for(lambda: all(len(c.partition("chaos", p).isr) == 3 for p in range(2)), timeout=30)
