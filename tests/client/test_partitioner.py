from __future__ import annotations

import itertools
import random
import warnings
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.client.partitioner import (
    DEFAULT_BATCH_SIZE,
    StickyPartitioner,
    murmur2,
    partition_for_key,
    to_positive,
)
from kctl.errors import InvalidArgumentError, InvalidPartitionsError

with warnings.catch_warnings():
    # Importing kafka-python loads its protocol schemas through a deprecated importlib API.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

# The vectors of the reference (Java's Utils.murmur2, signed int32).
VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"", 275646681),
]


@pytest.mark.parametrize(("key", "expected"), VECTORS)
def test_murmur2_matches_java_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize("length", range(0, 9))
def test_murmur2_every_tail_length_is_a_signed_int32(length: int) -> None:
    h = murmur2(bytes(range(200, 200 + length)))
    assert -(2**31) <= h < 2**31
    assert (h & 0xFFFFFFFF) == kafka_python_murmur2(bytes(range(200, 200 + length)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_murmur2_agrees_with_kafka_python(data: bytes) -> None:
    # kafka-python returns the same 32 bits as an unsigned number.
    assert murmur2(data) & 0xFFFFFFFF == kafka_python_murmur2(data)
    assert -(2**31) <= murmur2(data) < 2**31


def test_murmur2_accepts_bytearray() -> None:
    assert murmur2(bytearray(b"foobar")) == -790332482


def test_to_positive_clears_only_the_sign_bit() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


@pytest.mark.parametrize(("key", "expected"), VECTORS)
@pytest.mark.parametrize("partitions", [1, 3, 7, 100])
def test_partition_for_key_is_java_formula(key: bytes, expected: int, partitions: int) -> None:
    assert partition_for_key(key, partitions) == (expected & 0x7FFFFFFF) % partitions


def test_partition_for_key_known_values() -> None:
    # (-790332482 & 0x7fffffff) = 1357151166; 1357151166 % 3 = 0, % 10 = 6.
    assert partition_for_key(b"foobar", 3) == 0
    assert partition_for_key(b"foobar", 10) == 6


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=1, max_value=1000))
def test_partition_for_key_in_range_and_matches_kafka_python(key: bytes, partitions: int) -> None:
    p = partition_for_key(key, partitions)
    assert 0 <= p < partitions
    assert p == (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions


def test_partition_for_key_rejects_no_partitions() -> None:
    with pytest.raises(InvalidPartitionsError):
        partition_for_key(b"k", 0)


# -- sticky partitioner --------------------------------------------------------------------------


def test_sticky_stays_until_batch_size_then_switches() -> None:
    sp = StickyPartitioner(batch_size=100, rng=random.Random(1))
    first = sp.partition("t", 5, 30)
    # 30 + 30 + 30 = 90 < 100: still the same; the 4th (120 >= 100) crosses and stays too.
    assert [sp.partition("t", 5, 30) for _ in range(3)] == [first] * 3
    second = sp.partition("t", 5, 30)
    assert second != first
    assert sp.current("t") == second


def test_sticky_record_larger_than_batch_goes_alone() -> None:
    sp = StickyPartitioner(batch_size=10, rng=random.Random(2))
    seen = [sp.partition("t", 4, 50) for _ in range(20)]
    assert all(a != b for a, b in itertools.pairwise(seen))


def test_sticky_on_batch_complete_switches() -> None:
    sp = StickyPartitioner(rng=random.Random(3))
    first = sp.partition("t", 8, 10)
    assert sp.partition("t", 8, 10) == first
    sp.on_batch_complete("t")
    second = sp.partition("t", 8, 10)
    assert second != first
    assert sp.partition("t", 8, 10) == second


def test_sticky_on_batch_complete_for_an_old_partition_is_ignored() -> None:
    sp = StickyPartitioner(rng=random.Random(4))
    first = sp.partition("t", 8, 10)
    sp.on_batch_complete("t", partition=(first + 1) % 8)
    assert sp.partition("t", 8, 10) == first
    sp.on_batch_complete("t", partition=first)
    assert sp.partition("t", 8, 10) != first


def test_sticky_on_batch_complete_for_unknown_topic_is_harmless() -> None:
    sp = StickyPartitioner(rng=random.Random(5))
    sp.on_batch_complete("nothing-sent-yet")
    assert sp.current("nothing-sent-yet") is None
    assert 0 <= sp.partition("nothing-sent-yet", 3, 1) < 3


def test_sticky_topics_are_independent() -> None:
    sp = StickyPartitioner(batch_size=100, rng=random.Random(6))
    a = sp.partition("a", 10, 60)
    b = sp.partition("b", 10, 60)
    sp.partition("a", 10, 60)  # a reaches 120
    assert sp.partition("b", 10, 30) == b  # b only at 90 before this record
    assert sp.partition("a", 10, 1) != a


def test_sticky_single_partition_always_zero() -> None:
    sp = StickyPartitioner(batch_size=1, rng=random.Random(7))
    assert {sp.partition("t", 1, 100) for _ in range(10)} == {0}


def test_sticky_covers_every_partition_and_is_roughly_uniform() -> None:
    sp = StickyPartitioner(batch_size=DEFAULT_BATCH_SIZE, rng=random.Random(8))
    counts: Counter[int] = Counter()
    for _ in range(6000):
        counts[sp.partition("t", 6, 1024)] += 1  # 16 records per batch -> 375 batches
    assert set(counts) == set(range(6))
    assert min(counts.values()) > 6000 / 6 / 2


def test_sticky_is_deterministic_with_a_seeded_rng() -> None:
    def run(seed: int) -> list[int]:
        sp = StickyPartitioner(batch_size=50, rng=random.Random(seed))
        return [sp.partition("t", 9, 20) for _ in range(200)]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_sticky_moves_off_a_partition_beyond_the_count() -> None:
    checked = 0
    for seed in range(30):
        sp = StickyPartitioner(rng=random.Random(seed))
        first = sp.partition("t", 10, 1)
        if first > 0:
            assert sp.partition("t", first, 1) < first
            checked += 1
    assert checked > 0


def test_sticky_prefers_available_partitions() -> None:
    sp = StickyPartitioner(batch_size=100, rng=random.Random(10))
    seen = {sp.partition("t", 10, 500, available=[2, 7]) for _ in range(50)}
    assert seen == {2, 7}
    # The sticky partition lost its leader: move even though the batch is not full.
    sp.on_batch_complete("t")
    current = sp.partition("t", 10, 1, available=[2, 7])
    other = 7 if current == 2 else 2
    assert sp.partition("t", 10, 1, available=[other]) == other
    # Only one candidate: it is chosen even when a switch away from it is due.
    sp.on_batch_complete("t")
    assert sp.partition("t", 10, 1, available=[other]) == other


def test_sticky_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError):
        StickyPartitioner(batch_size=0)
    with pytest.raises(InvalidPartitionsError):
        StickyPartitioner().partition("t", 0, 1)
