"""The producer: batches records per partition and appends them to the leader's log.

There is no broker round trip: the producer process appends to the leader replica's files itself,
under that replica's append lock, after checking (under the lock) that the metadata still names
that broker as leader with the leader epoch it expects and that the broker is alive (fencing).

Delivery follows Kafka's ``acks``:

* ``0``: appended, not waited for, errors not reported;
* ``1``: acknowledged once the leader's log has the batch;
* ``all``: refused up front if the ISR is smaller than ``min.insync.replicas``; acknowledged when
  the leader's high watermark passes the batch. Batches are pipelined: many may wait at once.

Idempotence: every batch carries this producer's id, epoch and per-partition sequence. When the
leader changes before a batch was acknowledged, the batch is retried on the new leader, and a
batch that already reached it through replication (same offset, same producer and sequence) is
recognised and not written again, so a retry never duplicates.
"""

from __future__ import annotations

import os
import random
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add
from typing import Any

from kctl.cluster.config import effective_config
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import AppendLock, LockProbe
from kctl.cluster.metadata import BROKER_UP, ClusterMetadata, MetadataStore
from kctl.cluster.watch import IN_MODIFY, IN_MOVED_TO, ChangeWatcher
from kctl.errors import (
    CorruptRecordError,
    DeliveryError,
    InvalidArgumentError,
    InvalidRecordError,
    KctlError,
    KctlTimeoutError,
    NotEnoughReplicasError,
    PartitionOfflineError,
    RecordTooLargeError,
    UnknownPartitionError,
)
from kctl.storage.log import Log, LogConfig, ReplicaStateFile
from kctl.storage.records import HEADER_SIZE, Compression, encode_batch

RECORD_OVERHEAD = 41  # an upper bound on one record's framing (length, attributes, deltas, lengths)
DEFAULT_BATCH_BYTES = 256 * 1024
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024

Headers = Sequence[tuple[str, bytes | None]]


@dataclass
class DeliveryReport:
    """What happened to one batch of records (``error`` is None on success)."""

    topic: str
    partition: int
    base_offset: int
    count: int
    timestamp: int
    error: KctlError | None = None


@dataclass
class _Batch:
    topic: str
    partition: int
    values: list[bytes | None]
    keys: list[bytes | None] | None
    headers: list[Headers] | None
    timestamp: int
    base_sequence: int = -1
    encoded: bytes = b""
    # where it was appended: (leader, leader epoch, base offset, last offset)
    placed: tuple[int, int, int, int] | None = None


@dataclass
class _Pending:
    values: list[bytes | None] = field(default_factory=list)
    keys: list[bytes | None] | None = None  # created on the first keyed record
    headers: list[Headers] | None = None  # created on the first record with headers
    size: int = HEADER_SIZE
    timestamp: int = 0
    timestamps: list[int] | None = None  # only when records carry their own timestamps


class _LeaderHandle:
    """An attached view of one leader replica: its Log, append lock, state file and liveness."""

    def __init__(self, layout: ClusterLayout, broker: int, topic: str, partition: int, config: LogConfig) -> None:
        self.broker = broker
        self.directory = layout.replica_dir(broker, topic, partition)
        self.log = Log(self.directory, config)
        self.lock = AppendLock(layout.append_lock(broker, topic, partition))
        self.probe = LockProbe(layout.broker_lock(broker))
        self._state: ReplicaStateFile | None = None

    @property
    def state(self) -> ReplicaStateFile:
        if self._state is None:
            self._state = ReplicaStateFile(self.directory)
        return self._state

    def close(self) -> None:
        self.log.close()
        self.lock.close()
        self.probe.close()
        if self._state is not None:
            self._state.close()


class Producer:
    """Produce records to a cluster directory. Not thread-safe: one producer per thread."""

    def __init__(self, data_dir: str | os.PathLike[str], *, acks: str | int = "all",
                 compression: str | Compression = Compression.NONE, timeout: float = 30.0,
                 batch_bytes: int = DEFAULT_BATCH_BYTES, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 on_delivery: Callable[[DeliveryReport], None] | None = None,
                 producer_id: int | None = None) -> None:
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.store = MetadataStore(self.layout)
        acks_s = str(acks)
        if acks_s not in ("0", "1", "all", "-1"):
            raise InvalidArgumentError(f"--acks must be 0, 1 or all (got {acks!r})")
        self.acks = "all" if acks_s == "-1" else acks_s
        self.compression = compression if isinstance(compression, Compression) else Compression.parse(compression)
        self.timeout = timeout
        self.batch_bytes = batch_bytes
        self.buffer_bytes = buffer_bytes
        self.on_delivery = on_delivery
        self.producer_id = producer_id if producer_id is not None else random.getrandbits(62) + 1
        self.producer_epoch = 0
        self._sequences: dict[tuple[str, int], int] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._inflight: dict[tuple[str, int], deque[_Batch]] = {}
        self._inflight_bytes = 0
        self._handles: dict[tuple[str, int], _LeaderHandle] = {}
        self._sticky: dict[str, int] = {}
        self._sticky_bytes: dict[str, int] = {}
        self._watcher: ChangeWatcher | None = None
        self._topic_info: dict[str, tuple[ClusterMetadata, Any, int, dict[str, Any]]] = {}
        self.failed = 0
        self.delivered = 0
        self.first_error: KctlError | None = None

    # -- metadata -------------------------------------------------------------------------------
    def _md(self) -> ClusterMetadata:
        return self.store.load()

    def partitions_for(self, topic: str) -> int:
        return len(self._md().topic(topic).partitions)

    def _topic_config(self, topic: str) -> dict:
        return effective_config(self._md().topic(topic).config)

    # -- sending --------------------------------------------------------------------------------
    def send(self, topic: str, value: bytes | None, key: bytes | None = None, headers: Headers | None = None,
             partition: int | None = None, timestamp: int | None = None) -> None:
        """Queue one record; it is written when its batch fills or on :meth:`flush`."""
        md = self._md()
        info = self._topic_info.get(topic)
        if info is None or info[0] is not md:
            t = md.topic(topic)
            info = self._topic_info[topic] = (md, t, len(t.partitions), effective_config(t.config))
        _md, t, n, cfg = info
        if partition is None:
            if key is not None:
                from kctl.client.partitioner import partition_for_key

                partition = partition_for_key(key, n)
            else:
                partition = self._sticky_partition(topic, n)
        elif not 0 <= partition < n:
            raise UnknownPartitionError(f"topic '{topic}' has no partition {partition} (it has {n})")
        size = RECORD_OVERHEAD + (len(value) if value else 0) + (len(key) if key else 0)
        if headers:
            size += sum(10 + len(h.encode()) + (len(v) if v else 0) for h, v in headers)
        max_bytes = int(cfg["max.message.bytes"])
        if key is None and "compact" in cfg["cleanup.policy"]:
            self._report_failure(topic, partition, 1, InvalidRecordError(
                f"topic '{topic}' is compacted (cleanup.policy={cfg['cleanup.policy']}): every record needs a key"))
            return
        if size + HEADER_SIZE > max_bytes:
            self._report_failure(topic, partition, 1, RecordTooLargeError(
                f"a record of about {size} bytes exceeds max.message.bytes={max_bytes} of topic '{topic}'"))
            return
        tp = (topic, partition)
        pend = self._pending.get(tp)
        if pend is not None and pend.size + size > min(self.batch_bytes, max_bytes):
            self._seal(tp)
            pend = None
        if pend is None:
            pend = self._pending[tp] = _Pending(timestamp=timestamp or _now_ms())
        if key is not None and pend.keys is None:
            pend.keys = [None] * len(pend.values)
        if headers and pend.headers is None:
            pend.headers = [()] * len(pend.values)
        pend.values.append(value)
        if pend.keys is not None:
            pend.keys.append(key)
        if pend.headers is not None:
            pend.headers.append(tuple(headers) if headers else ())
        pend.size += size
        ts = timestamp if timestamp is not None else pend.timestamp
        if pend.timestamps is not None:
            pend.timestamps.append(ts)
        elif ts != pend.timestamp:
            pend.timestamps = [pend.timestamp] * (len(pend.values) - 1) + [ts]
        if key is None and partition == self._sticky.get(topic):
            self._sticky_bytes[topic] = self._sticky_bytes.get(topic, 0) + size
            if self._sticky_bytes[topic] >= self.batch_bytes:
                self._sticky.pop(topic, None)

    def send_values(self, topic: str, values: list[bytes | None], partition: int | None = None,
                    key: bytes | None = None, headers: Headers | None = None) -> None:
        """Queue many records with one key (or none) and the same headers: the CLI's fast path."""
        if key is not None or headers or partition is not None:
            for v in values:
                self.send(topic, v, key, headers, partition)
            return
        md = self._md()
        t = md.topic(topic)
        n = len(t.partitions)
        cfg = effective_config(t.config)
        max_bytes = int(cfg["max.message.bytes"])
        limit = min(self.batch_bytes, max_bytes)
        if "compact" in cfg["cleanup.policy"]:
            for v in values:
                self.send(topic, v)  # refuses each keyless record with a clear error
            return
        try:
            lens = list(map(len, values))  # type: ignore[arg-type]
        except TypeError:  # a None (tombstone) among them: the general path
            for v in values:
                self.send(topic, v)
            return
        if lens and max(lens) + RECORD_OVERHEAD + HEADER_SIZE > max_bytes:
            for v in values:
                self.send(topic, v)  # reports the oversized ones, sends the rest
            return
        # cumulative framed sizes: a batch boundary is one bisect away, no per-record Python loop
        cum = list(accumulate(map(add, lens, repeat(RECORD_OVERHEAD)), initial=0))
        i = 0
        total = len(values)
        while i < total:
            p = self._sticky_partition(topic, n)
            tp = (topic, p)
            pend = self._pending.get(tp)
            if pend is None or pend.timestamps is not None or pend.keys is not None or pend.headers is not None:
                if pend is not None:
                    self._seal(tp)
                pend = self._pending[tp] = _Pending(timestamp=_now_ms())
            room = limit - pend.size
            j = bisect_right(cum, cum[i] + room) - 1
            if j <= i and len(pend.values) == 0:
                j = i + 1  # a batch always takes at least one record
            if j > i:
                pend.values.extend(values[i:j])
                pend.size += cum[j] - cum[i]
                i = j
            if i < total:
                self._seal(tp)
                self._sticky.pop(topic, None)

    def _sticky_partition(self, topic: str, n: int) -> int:
        p = self._sticky.get(topic)
        if p is None or p >= n:
            old = p
            choices = [i for i in range(n) if i != old] or [0]
            p = random.choice(choices)
            self._sticky[topic] = p
            self._sticky_bytes[topic] = 0
        return p

    # -- batches --------------------------------------------------------------------------------
    def _seal(self, tp: tuple[str, int]) -> None:
        pend = self._pending.pop(tp, None)
        if pend is None or not pend.values:
            return
        seq = self._sequences.get(tp, 0)
        self._sequences[tp] = (seq + len(pend.values)) & 0x7FFFFFFF
        tss = pend.timestamps
        batch = _Batch(tp[0], tp[1], pend.values, pend.keys, pend.headers, pend.timestamp, seq)
        batch.encoded = encode_batch(
            batch.values, keys=batch.keys, headers=batch.headers,  # type: ignore[arg-type]
            timestamps=tss, timestamp=None if tss else pend.timestamp,
            producer_id=self.producer_id, producer_epoch=self.producer_epoch, base_sequence=seq,
            compression=self.compression)
        if tss:
            batch.timestamp = tss[0]
        try:
            self._write(batch)
        except KctlError as exc:
            self._report_failure(batch.topic, batch.partition, len(batch.values), exc)
            return
        if self.acks == "all":
            self._inflight.setdefault(tp, deque()).append(batch)
            self._inflight_bytes += len(batch.encoded)
            self._poll_inflight()
            while self._inflight_bytes > self.buffer_bytes:
                self._wait_some()
        else:
            assert batch.placed is not None or self.acks == "0"
            self._complete(batch)
        if tp[0] in self._sticky and self._sticky.get(tp[0]) == tp[1]:
            self._sticky.pop(tp[0], None)

    def _handle(self, tp: tuple[str, int], leader: int, config: LogConfig) -> _LeaderHandle:
        h = self._handles.get(tp)
        if h is None or h.broker != leader:
            if h is not None:
                h.close()
            h = self._handles[tp] = _LeaderHandle(self.layout, leader, tp[0], tp[1], config)
            if self.acks == "all":
                # watch before the first append, so a high watermark published right after it
                # wakes us instead of being missed until a timeout
                self._watch(h)
        h.log.config = config
        return h

    def _watch(self, h: _LeaderHandle) -> ChangeWatcher:
        w = self._watcher
        if w is None:
            w = self._watcher = ChangeWatcher()
            w.watch(self.layout.metadata_dir, IN_MOVED_TO)
        if not w.is_watching(h.state.path):
            w.watch(h.state.path, IN_MODIFY)
        return w

    def _write(self, batch: _Batch, deadline: float | None = None) -> None:
        """Append ``batch`` to the current leader (retrying through leader changes)."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        tp = (batch.topic, batch.partition)
        last_error: KctlError | None = None
        while True:
            try:
                self._try_write(batch, tp)
                return
            except _InflightMoved:
                # earlier batches of this partition still sit on a previous leader: re-place them
                # first, so the log keeps the order the records were sent in
                self._retry_inflight(tp, self._inflight[tp])
                continue
            except (PartitionOfflineError, NotEnoughReplicasError, _Retry, CorruptRecordError,
                    KctlTimeoutError, FileNotFoundError) as exc:
                if isinstance(exc, KctlError):
                    last_error = exc
            if time.monotonic() >= deadline:
                if isinstance(last_error, (NotEnoughReplicasError, PartitionOfflineError)):
                    raise last_error
                raise KctlTimeoutError(
                    f"could not write to {tp[0]}-{tp[1]} within {self.timeout:g}s"
                    + (f": {last_error}" if last_error else " (no live leader)"))
            self._wait_change(tp, 0.05)

    def _try_write(self, batch: _Batch, tp: tuple[str, int]) -> None:
        md = self.store.load()
        t = md.topic(tp[0])
        part = t.partitions[tp[1]]
        if part.leader is None:
            raise PartitionOfflineError(f"partition {tp[0]}-{tp[1]} has no leader (all in-sync replicas are down)")
        leader_state = md.brokers.get(part.leader)
        if leader_state is None or leader_state.state != BROKER_UP:
            raise _Retry()
        cfg = effective_config(t.config)
        if self.acks == "all" and len(part.isr) < int(cfg["min.insync.replicas"]):
            raise NotEnoughReplicasError(
                f"NOT_ENOUGH_REPLICAS for {tp[0]}-{tp[1]}: the ISR {part.isr} is smaller than "
                f"min.insync.replicas={cfg['min.insync.replicas']}")
        from kctl.cluster.config import log_config

        h = self._handle(tp, part.leader, log_config(t.config))
        with h.lock.hold(timeout=max(0.1, min(self.timeout, 5.0))):
            # fencing, under the lock: the metadata we acted on is still current and the
            # leader is alive, so no new leader can have taken over since we looked
            if self.store.changed():
                raise _Retry()
            if not h.probe.held():
                raise _Retry()
            h.log.refresh()
            if batch.placed is not None:
                _leader, _epoch, base, last = batch.placed
                found = h.log.batch_header_at(base)
                if found is not None and found.base_offset == base and found.producer_id == self.producer_id \
                        and found.base_sequence == batch.base_sequence and found.last_offset == last:
                    batch.placed = (part.leader, part.leader_epoch, base, last)
                    return
            before = self._predecessor(tp, batch)
            if before is not None and before.placed is not None \
                    and before.placed[:2] != (part.leader, part.leader_epoch):
                raise _InflightMoved()
            info = h.log.append(batch.encoded, leader_epoch=part.leader_epoch)
            batch.placed = (part.leader, part.leader_epoch, info.base_offset, info.last_offset)

    def _predecessor(self, tp: tuple[str, int], batch: _Batch) -> _Batch | None:
        """The unacknowledged batch sent just before ``batch`` to the same partition."""
        q = self._inflight.get(tp)
        if not q:
            return None
        if batch.placed is None:
            return q[-1]
        for i, b in enumerate(q):
            if b is batch:
                return q[i - 1] if i else None
        return None

    def _wait_change(self, tp: tuple[str, int], timeout: float) -> None:
        h = self._handles.get(tp)
        if h is not None:
            w = self._watch(h)
        else:
            w = self._watcher or ChangeWatcher()
            if self._watcher is None:
                self._watcher = w
                w.watch(self.layout.metadata_dir, IN_MOVED_TO)
        w.wait(timeout)

    # -- acknowledgement ------------------------------------------------------------------------
    def _poll_inflight(self) -> bool:
        """Complete every in-flight batch the high watermark has passed; retry those whose
        leader changed. True if anything completed."""
        progressed = False
        if not self._inflight:
            return False
        md = self.store.load()
        for tp, q in list(self._inflight.items()):
            if not q:
                continue
            t = md.topics.get(tp[0])
            if t is None:
                while q:
                    b = q.popleft()
                    self._inflight_bytes -= len(b.encoded)
                    self._report_failure(b.topic, b.partition, len(b.values),
                                         KctlError(f"topic '{tp[0]}' was deleted"))
                continue
            part = t.partitions[tp[1]]
            h = self._handles.get(tp)
            first = q[0]
            assert first.placed is not None
            leader, epoch, _base, _last = first.placed
            if part.leader != leader or part.leader_epoch != epoch or h is None:
                self._retry_inflight(tp, q)
                progressed = True
                continue
            hw = h.state.read_high_watermark(attempts=5)
            if hw is None or hw.leader_epoch != epoch:
                continue
            while q and q[0].placed is not None and q[0].placed[3] < hw.high_watermark:
                b = q.popleft()
                self._inflight_bytes -= len(b.encoded)
                self._complete(b)
                progressed = True
        return progressed

    def _retry_inflight(self, tp: tuple[str, int], q: deque[_Batch]) -> None:
        deadline = time.monotonic() + self.timeout
        for b in list(q):
            try:
                self._write(b, deadline)
            except KctlError as exc:
                q.remove(b)
                self._inflight_bytes -= len(b.encoded)
                self._report_failure(b.topic, b.partition, len(b.values), exc)

    def _wait_some(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        started = {tp: (q[0].placed, time.monotonic()) for tp, q in self._inflight.items() if q}
        while True:
            if self._poll_inflight():
                return
            if not any(self._inflight.values()):
                return
            now = time.monotonic()
            if now >= deadline:
                for tp, q in self._inflight.items():
                    if q and started.get(tp, (None, now))[0] == q[0].placed:
                        while q:
                            b = q.popleft()
                            self._inflight_bytes -= len(b.encoded)
                            self._report_failure(b.topic, b.partition, len(b.values), KctlTimeoutError(
                                f"not acknowledged by the in-sync replicas of {tp[0]}-{tp[1]} within "
                                f"{self.timeout:g}s (outcome unknown)"))
                return
            tp = next(tp for tp, q in self._inflight.items() if q)
            self._wait_change(tp, min(0.05, deadline - now))

    def _complete(self, batch: _Batch) -> None:
        self.delivered += len(batch.values)
        if self.on_delivery is not None and batch.placed is not None:
            self.on_delivery(DeliveryReport(batch.topic, batch.partition, batch.placed[2], len(batch.values),
                                            batch.timestamp))

    def _report_failure(self, topic: str, partition: int, count: int, error: KctlError) -> None:
        self.failed += count
        if self.first_error is None:
            self.first_error = error
        if self.on_delivery is not None:
            self.on_delivery(DeliveryReport(topic, partition, -1, count, -1, error))

    # -- flushing -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every queued record and wait for acknowledgements per ``acks``."""
        for tp in list(self._pending):
            self._seal(tp)
        while any(self._inflight.values()):
            self._wait_some()

    def seal_all(self) -> None:
        """Write every queued record now (without waiting for acknowledgements)."""
        for tp in list(self._pending):
            self._seal(tp)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for h in self._handles.values():
                h.close()
            self._handles.clear()
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def raise_if_failed(self) -> None:
        if self.failed:
            raise DeliveryError(f"{self.failed} record(s) could not be delivered: {self.first_error}")


class _Retry(Exception):
    """Internal: the metadata moved under us; look again."""


class _InflightMoved(Exception):
    """Internal: a new batch would overtake unacknowledged ones left on a previous leader."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def produce(data_dir: str, topic: str, values: Iterable[bytes | None], **kwargs: object) -> list[DeliveryReport]:
    """Produce ``values`` and wait for them; returns the delivery reports (a convenience)."""
    reports: list[DeliveryReport] = []
    with Producer(data_dir, on_delivery=reports.append, **kwargs) as p:  # type: ignore[arg-type]
        for v in values:
            p.send(topic, v)
    return reports
