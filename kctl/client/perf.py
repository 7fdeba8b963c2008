"""Load generators like Kafka's producer and consumer perf-test tools.

``produce_perf`` sends N records of B bytes and measures, per batch, the time from the batch's
first record being queued to its acknowledgement (per ``acks``); ``consume_perf`` reads N
records (or to the end) and measures throughput and, for records produced while it runs, the
end-to-end latency from the record's timestamp to its delivery.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from kctl.client.consumer import Consumer
from kctl.client.offsetspec import OffsetSpec
from kctl.client.producer import DeliveryReport, Producer


@dataclass
class PerfResult:
    records: int
    bytes: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    weights: list[int] = field(default_factory=list)
    failed: int = 0

    @property
    def records_per_sec(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_sec(self) -> float:
        return self.bytes / self.seconds / (1024 * 1024) if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Record-weighted latency percentile (each batch's latency counts once per record)."""
        if not self.latencies_ms:
            return 0.0
        pairs = sorted(zip(self.latencies_ms, self.weights, strict=True))
        total = sum(self.weights)
        target = q / 100.0 * total
        acc = 0
        for lat, w in pairs:
            acc += w
            if acc >= target:
                return lat
        return pairs[-1][0]

    @property
    def avg_ms(self) -> float:
        total = sum(self.weights)
        if not total:
            return 0.0
        return sum(lat * w for lat, w in zip(self.latencies_ms, self.weights, strict=True)) / total

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms, default=0.0)

    def to_json(self) -> dict[str, float | int]:
        return {"records": self.records, "bytes": self.bytes, "seconds": round(self.seconds, 4),
                "records_per_sec": round(self.records_per_sec, 1), "mb_per_sec": round(self.mb_per_sec, 2),
                "latency_avg_ms": round(self.avg_ms, 2), "latency_p50_ms": round(self.percentile(50), 2),
                "latency_p95_ms": round(self.percentile(95), 2), "latency_p99_ms": round(self.percentile(99), 2),
                "latency_max_ms": round(self.max_ms, 2), "failed": self.failed}


def produce_perf(data_dir: str, topic: str, num_records: int, record_size: int, *, acks: str = "all",
                 compression: str = "none", batch_bytes: int = 256 * 1024, throughput: float = -1,
                 chunk: int = 10_000) -> PerfResult:
    """Send ``num_records`` records of ``record_size`` random-ish bytes; ``throughput`` caps the
    rate in records/s (-1: as fast as possible)."""
    payload = (os.urandom(record_size // 2 + 1).hex().encode() * 2)[:record_size]
    result = PerfResult(0, 0, 0.0)

    def on_delivery(rep: DeliveryReport) -> None:
        if rep.error is not None:
            result.failed += rep.count
            return
        now = time.time() * 1000.0
        result.latencies_ms.append(max(0.0, now - rep.timestamp))
        result.weights.append(rep.count)

    start = time.monotonic()
    with Producer(data_dir, acks=acks, compression=compression, batch_bytes=batch_bytes,
                  on_delivery=on_delivery) as p:
        sent = 0
        values = [payload] * min(chunk, num_records)
        while sent < num_records:
            n = min(chunk, num_records - sent)
            p.send_values(topic, values[:n])
            sent += n
            if throughput > 0:
                ahead = sent / throughput - (time.monotonic() - start)
                if ahead > 0:
                    p.seal_all()
                    time.sleep(ahead)
        p.flush()
    result.seconds = time.monotonic() - start
    result.records = num_records - result.failed
    result.bytes = result.records * record_size
    return result


def consume_perf(data_dir: str, topic: str, num_records: int | None, *, timeout: float = 30.0) -> PerfResult:
    """Read from the beginning until ``num_records`` (or the end, if None) were read."""
    result = PerfResult(0, 0, 0.0)
    start = time.monotonic()
    last_progress = start
    with Consumer(data_dir) as c:
        c.assign({tp: OffsetSpec("beginning") for tp in c.partitions_of(topic)})
        while num_records is None or result.records < num_records:
            batches = c.poll(0.2)
            if not batches:
                if num_records is None and c.at_end():
                    break
                if time.monotonic() - last_progress > timeout:
                    break
                continue
            last_progress = time.monotonic()
            now = time.time() * 1000.0
            for b in batches:
                recs = b.records or []
                if num_records is not None:
                    recs = recs[: num_records - result.records]
                result.records += len(recs)
                result.bytes += sum(len(r.value) for r in recs if r.value is not None)
                if recs:
                    result.latencies_ms.append(max(0.0, now - recs[-1].timestamp))
                    result.weights.append(len(recs))
                if num_records is not None and result.records >= num_records:
                    break
    result.seconds = time.monotonic() - start
    return result
