"""Choosing a partition for a record, exactly as Kafka's Java producer does.

Keyed records must land where a Java client would put them, so that kctl and real Kafka tools
agree on which partition holds a key: ``toPositive(murmur2(key)) % numPartitions``. Records
without a key use a sticky partitioner (KIP-480, KIP-794): filling one partition's batch before
moving on makes bigger batches and fewer appends than spreading records one by one.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

from kctl.errors import InvalidArgumentError, InvalidPartitionsError

__all__ = ["DEFAULT_BATCH_SIZE", "StickyPartitioner", "murmur2", "partition_for_key", "to_positive"]

DEFAULT_BATCH_SIZE = 16384
"""Kafka's ``batch.size`` default: the bytes a sticky partition takes before switching."""

_SEED = 0x9747B28C
_M = 0x5BD1E995
_R = 24
_MASK = 0xFFFFFFFF
_WORD = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """Java's ``Utils.murmur2``: 32-bit MurmurHash2 as a signed int32.

    Arithmetic is done on unsigned 32-bit values and converted to Java's signed view at the end,
    so the result matches the Java client bit for bit.
    """
    length = len(data)
    h = (_SEED ^ length) & _MASK
    body = length & ~3
    for (k,) in _WORD.iter_unpack(data[:body]):
        k = (k * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[body + 2] << 16
        if tail >= 2:
            h ^= data[body + 1] << 8
        h ^= data[body]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Java's ``Utils.toPositive``: clear the sign bit (not ``abs``, which overflows on MIN_VALUE)."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key, counting all partitions."""
    if num_partitions <= 0:
        raise InvalidPartitionsError(f"a topic needs at least 1 partition, got {num_partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class StickyPartitioner:
    """Partition choice for null-key records: stick to one partition per topic for a batch.

    A topic stays on its partition until ``batch_size`` bytes were sent to it or the producer
    reports a completed batch (:meth:`on_batch_complete`); the next record then goes to a
    partition chosen at random among the others. The record that crosses ``batch_size`` still
    goes to the current partition (KIP-794), so a batch is filled before the switch.

    Not thread-safe: one instance per producer, used from one thread. Pass ``rng`` (a seeded
    ``random.Random``) for reproducible choices.
    """

    __slots__ = ("_rng", "_state", "batch_size")

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE, rng: random.Random | None = None) -> None:
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch size must be a positive number of bytes, got {batch_size}")
        self.batch_size = batch_size
        self._rng = rng if rng is not None else random.Random()
        # topic -> [sticky partition, bytes sent to it, switch requested]
        self._state: dict[str, list] = {}

    def partition(
        self,
        topic: str,
        num_partitions: int,
        record_size: int,
        available: Sequence[int] | None = None,
    ) -> int:
        """The partition for the next null-key record of ``topic`` whose size is ``record_size``.

        ``available`` optionally lists the partitions worth writing to (those with a live leader,
        as Java's partitioner prefers); when it is empty or None every partition is a candidate.
        """
        if num_partitions <= 0:
            raise InvalidPartitionsError(f"a topic needs at least 1 partition, got {num_partitions}")
        state = self._state.get(topic)
        if state is None:
            state = [self._choose(num_partitions, None, available), 0, False]
            self._state[topic] = state
        else:
            current = state[0]
            if (
                state[2]
                or state[1] >= self.batch_size
                or current >= num_partitions
                or (available and current not in available)
            ):
                state[0] = self._choose(num_partitions, current, available)
                state[1] = 0
                state[2] = False
        state[1] += record_size
        return state[0]

    def on_batch_complete(self, topic: str, partition: int | None = None) -> None:
        """A batch for ``topic`` was sealed: move to another partition for the next record.

        With ``partition`` given, only switch if it is still the sticky one (KIP-480's
        ``onNewBatch`` guard against switching twice for the same batch).
        """
        state = self._state.get(topic)
        if state is not None and (partition is None or partition == state[0]):
            state[2] = True

    def current(self, topic: str) -> int | None:
        """The sticky partition of ``topic``, or None before its first record."""
        state = self._state.get(topic)
        return None if state is None else state[0]

    def _choose(self, num_partitions: int, previous: int | None, available: Sequence[int] | None) -> int:
        candidates: Sequence[int]
        if available:
            candidates = [p for p in available if 0 <= p < num_partitions]
            if not candidates:
                candidates = range(num_partitions)
        else:
            candidates = range(num_partitions)
        if previous is not None and len(candidates) > 1:
            others = [p for p in candidates if p != previous]
            if others:
                candidates = others
        return candidates[self._rng.randrange(len(candidates))]
