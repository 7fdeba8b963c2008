from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.cluster.assignors import (
    ASSIGNORS,
    Subscription,
    TopicPartition,
    assign,
    assign_cooperative_sticky,
    assign_range,
    assign_roundrobin,
    cooperative_adjust,
    resolve_owned,
    revoked_partitions,
)
from kctl.errors import InvalidArgumentError

TWO_BY_THREE = {"t0": 3, "t1": 3}
BOTH = {"C0": ["t0", "t1"], "C1": ["t0", "t1"]}


def all_partitions(partitions_per_topic: Mapping[str, int], topics: set[str]) -> set[TopicPartition]:
    return {(t, p) for t in topics for p in range(partitions_per_topic.get(t, 0))}


def moved(
    before: Mapping[str, Sequence[TopicPartition]], after: Mapping[str, Sequence[TopicPartition]]
) -> int:
    """Partitions owned before that now belong to another member."""
    owner = {tp: m for m, parts in after.items() for tp in parts}
    return sum(1 for m, parts in before.items() for tp in parts if owner.get(tp) not in (m, None))


# -- Kafka's worked examples ---------------------------------------------------------------------


def test_range_reference_example() -> None:
    assert assign_range(BOTH, TWO_BY_THREE) == {
        "C0": [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)],
        "C1": [("t0", 2), ("t1", 2)],
    }


def test_roundrobin_reference_example() -> None:
    assert assign_roundrobin(BOTH, TWO_BY_THREE) == {
        "C0": [("t0", 0), ("t0", 2), ("t1", 1)],
        "C1": [("t0", 1), ("t1", 0), ("t1", 2)],
    }


def test_roundrobin_skips_members_not_subscribed() -> None:
    # Kafka's RoundRobinAssignor documentation: C0 on t0, C1 on t0,t1, C2 on t0,t1,t2.
    members = {"C0": ["t0"], "C1": ["t0", "t1"], "C2": ["t0", "t1", "t2"]}
    assert assign_roundrobin(members, {"t0": 1, "t1": 2, "t2": 3}) == {
        "C0": [("t0", 0)],
        "C1": [("t1", 0)],
        "C2": [("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)],
    }


def test_range_per_topic_subscribers_and_remainders() -> None:
    members = {"b": ["t0", "t1"], "a": ["t0"], "c": ["t1"]}
    assert assign_range(members, {"t0": 5, "t1": 2}) == {
        "a": [("t0", 0), ("t0", 1), ("t0", 2)],
        "b": [("t0", 3), ("t0", 4), ("t1", 0)],
        "c": [("t1", 1)],
    }


def test_range_more_members_than_partitions() -> None:
    result = assign_range({"m1": ["t"], "m2": ["t"], "m3": ["t"]}, {"t": 2})
    assert result == {"m1": [("t", 0)], "m2": [("t", 1)], "m3": []}


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
def test_every_member_appears_even_without_partitions(name: str) -> None:
    members = {"a": ["t"], "b": ["missing-topic"], "c": []}
    result = ASSIGNORS[name](members, {"t": 1}, {})
    assert set(result) == {"a", "b", "c"}
    assert result["a"] == [("t", 0)]
    assert result["b"] == result["c"] == []


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
def test_no_members(name: str) -> None:
    assert ASSIGNORS[name]({}, {"t": 3}, {}) == {}


def test_assignor_names() -> None:
    assert list(ASSIGNORS) == ["range", "roundrobin", "cooperative-sticky"]


# -- cooperative-sticky --------------------------------------------------------------------------


def test_sticky_fresh_group_is_balanced() -> None:
    members = {f"m{i}": ["a", "b"] for i in range(3)}
    result = assign_cooperative_sticky(members, {"a": 4, "b": 3}, {})
    assert sorted(len(v) for v in result.values()) == [2, 2, 3]
    assert set().union(*map(set, result.values())) == all_partitions({"a": 4, "b": 3}, {"a", "b"})


def test_sticky_keeps_everything_when_already_balanced() -> None:
    owned = {"x": [("t", 0), ("t", 3)], "y": [("t", 1), ("t", 2)]}
    assert assign_cooperative_sticky({"x": ["t"], "y": ["t"]}, {"t": 4}, owned) == owned


def test_sticky_new_member_takes_only_its_share() -> None:
    members = {"a": ["t"], "b": ["t"]}
    before = assign_cooperative_sticky(members, {"t": 12}, {})
    after = assign_cooperative_sticky({**members, "c": ["t"]}, {"t": 12}, before)
    assert [len(after[m]) for m in "abc"] == [4, 4, 4]
    assert set(after["a"]) <= set(before["a"])
    assert set(after["b"]) <= set(before["b"])
    assert moved(before, after) == 4


def test_sticky_leaving_member_only_its_partitions_move() -> None:
    members = {m: ["t", "u"] for m in "abcd"}
    before = assign_cooperative_sticky(members, {"t": 7, "u": 6}, {})
    del members["c"]
    after = assign_cooperative_sticky(members, {"t": 7, "u": 6}, before)
    for m in "abd":
        assert set(before[m]) <= set(after[m])
    assert sorted(len(v) for v in after.values()) == [4, 4, 5]
    assert set().union(*map(set, after.values())) == all_partitions({"t": 7, "u": 6}, {"t", "u"})


def test_sticky_ignores_stale_and_contested_claims() -> None:
    owned = {
        "a": [("t", 0), ("t", 1), ("gone", 0), ("t", 99), ("other", 0)],
        "b": [("t", 1), ("t", 2)],
    }
    result = assign_cooperative_sticky({"a": ["t"], "b": ["t"]}, {"t": 4, "other": 1}, owned)
    assert ("t", 0) in result["a"]
    assert ("t", 2) in result["b"]
    assert sorted(result["a"] + result["b"]) == [("t", p) for p in range(4)]
    assert sorted(len(v) for v in result.values()) == [2, 2]


def test_sticky_unsubscribed_topic_is_released() -> None:
    owned = {"a": [("t", 0), ("u", 0)], "b": [("t", 1)]}
    result = assign_cooperative_sticky({"a": ["t"], "b": ["t", "u"]}, {"t": 2, "u": 1}, owned)
    assert result == {"a": [("t", 0)], "b": [("t", 1), ("u", 0)]}


def test_sticky_does_not_depend_on_input_order() -> None:
    members = {"b": ["t", "u"], "a": ["u", "t"], "c": ["t"]}
    owned = {"c": [("t", 2), ("t", 0)], "a": [("u", 1)]}
    reordered_members = dict(reversed(list(members.items())))
    reordered_owned = {m: list(reversed(v)) for m, v in reversed(list(owned.items()))}
    counts = {"t": 5, "u": 3}
    assert assign_cooperative_sticky(members, counts, owned) == assign_cooperative_sticky(
        reordered_members, counts, reordered_owned
    )


# -- properties of every assignor ----------------------------------------------------------------

TOPICS = ["t0", "t1", "t2", "t3"]


@st.composite
def groups(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, int], dict[str, list[TopicPartition]]]:
    counts = {t: draw(st.integers(min_value=0, max_value=9)) for t in TOPICS}
    if draw(st.booleans()):
        del counts["t3"]  # a subscribed topic that does not exist
    n = draw(st.integers(min_value=1, max_value=6))
    members = {
        f"member-{i}": draw(st.lists(st.sampled_from(TOPICS), unique=True, max_size=4)) for i in range(n)
    }
    universe = [(t, p) for t in TOPICS for p in range(10)]
    owned = {m: draw(st.lists(st.sampled_from(universe), max_size=8)) for m in [*members, "departed"]}
    return members, counts, owned


@pytest.mark.parametrize("name", sorted(ASSIGNORS))
@settings(max_examples=150, deadline=None)
@given(group=groups())
def test_assignment_is_disjoint_complete_and_respects_subscriptions(
    name: str, group: tuple[dict[str, list[str]], dict[str, int], dict[str, list[TopicPartition]]]
) -> None:
    members, counts, owned = group
    result = ASSIGNORS[name](members, counts, owned)
    assert set(result) == set(members)
    flat = [tp for parts in result.values() for tp in parts]
    assert len(flat) == len(set(flat)), "a partition was assigned twice"
    subscribed = set().union(*(set(t) for t in members.values()))
    assert set(flat) == all_partitions(counts, subscribed)
    for m, parts in result.items():
        assert all(t in members[m] for t, _ in parts)
        assert parts == sorted(parts)
    assert ASSIGNORS[name](members, counts, owned) == result  # deterministic


@settings(max_examples=200, deadline=None)
@given(group=groups())
def test_sticky_members_with_equal_subscriptions_are_balanced(
    group: tuple[dict[str, list[str]], dict[str, int], dict[str, list[TopicPartition]]],
) -> None:
    members, counts, owned = group
    result = assign_cooperative_sticky(members, counts, owned)
    by_subscription: dict[frozenset[str], list[int]] = {}
    for m, topics in members.items():
        by_subscription.setdefault(frozenset(topics), []).append(len(result[m]))
    for sizes in by_subscription.values():
        assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(
    n_members=st.integers(min_value=1, max_value=7),
    counts=st.fixed_dictionaries({t: st.integers(min_value=0, max_value=12) for t in TOPICS[:3]}),
    data=st.data(),
)
def test_sticky_moves_the_minimum_with_identical_subscriptions(
    n_members: int, counts: dict[str, int], data: st.DataObject
) -> None:
    members = {f"m{i}": TOPICS[:3] for i in range(n_members)}
    partitions = sorted(all_partitions(counts, set(TOPICS[:3])))
    # Any disjoint previous ownership, possibly unbalanced and incomplete.
    owners = data.draw(
        st.lists(st.sampled_from([None, *members]), min_size=len(partitions), max_size=len(partitions))
    )
    owned: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for tp, m in zip(partitions, owners, strict=True):
        if m is not None:
            owned[m].append(tp)
    result = assign_cooperative_sticky(members, counts, owned)

    sizes = [len(v) for v in result.values()]
    assert max(sizes) - min(sizes) <= 1
    # The fewest moves balance allows: the P % C members owning most keep up to the ceiling.
    floor, extra = divmod(len(partitions), n_members)
    held = sorted((len(v) for v in owned.values()), reverse=True)
    minimum = sum(max(0, h - (floor + 1 if i < extra else floor)) for i, h in enumerate(held))
    assert moved(owned, result) == minimum
    for m in members:  # every member only gives up or only gains owned partitions
        assert set(owned[m]) <= set(result[m]) or set(result[m]) <= set(owned[m])


@settings(max_examples=100, deadline=None)
@given(
    n_members=st.integers(min_value=1, max_value=8),
    partitions=st.integers(min_value=0, max_value=40),
    leaving=st.integers(min_value=0, max_value=7),
)
def test_sticky_join_and_leave_move_only_what_they_must(
    n_members: int, partitions: int, leaving: int
) -> None:
    counts = {"t": partitions}
    members = {f"m{i}": ["t"] for i in range(n_members)}
    before = assign_cooperative_sticky(members, counts, {})

    joined = assign_cooperative_sticky({**members, "new": ["t"]}, counts, before)
    assert moved(before, joined) == len(joined["new"])
    assert len(joined["new"]) in (partitions // (n_members + 1), -(-partitions // (n_members + 1)))

    gone = f"m{leaving % n_members}"
    remaining = {m: t for m, t in members.items() if m != gone}
    left = assign_cooperative_sticky(remaining, counts, before)
    # The survivors keep everything; only the departed member's partitions find a new owner.
    assert moved({m: before[m] for m in remaining}, left) == 0
    for m in remaining:
        assert set(before[m]) <= set(left[m])


# -- protocol helpers ----------------------------------------------------------------------------


def test_resolve_owned_prefers_the_newest_generation() -> None:
    subs = [
        Subscription("a", ("t",), [("t", 0), ("t", 1)], generation=5),
        Subscription("b", ("t",), [("t", 1), ("t", 2)], generation=6),  # newer claim on t-1
        Subscription("c", ("t",), [("t", 2), ("t", 3)], generation=6),  # tie on t-2: nobody keeps it
        Subscription("d", ("t",)),
    ]
    assert resolve_owned(subs) == {
        "a": [("t", 0)],
        "b": [("t", 1)],
        "c": [("t", 3)],
        "d": [],
    }


def test_assign_by_name_uses_subscriptions() -> None:
    subs = [Subscription("C0", ("t0", "t1")), Subscription("C1", ("t0", "t1"))]
    assert assign("range", subs, TWO_BY_THREE) == assign_range(BOTH, TWO_BY_THREE)
    assert assign("roundrobin", subs, TWO_BY_THREE) == assign_roundrobin(BOTH, TWO_BY_THREE)
    sticky = [Subscription("C0", ("t",), [("t", 0), ("t", 1)], 3), Subscription("C1", ("t",), [], 3)]
    assert assign("cooperative-sticky", sticky, {"t": 2}) == {"C0": [("t", 0)], "C1": [("t", 1)]}


def test_assign_unknown_name() -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown assignor 'sticky'.*cooperative-sticky"):
        assign("sticky", [], {})


def test_cooperative_adjust_withholds_partitions_still_owned_elsewhere() -> None:
    owned = {"a": [("t", 0), ("t", 1), ("t", 2)], "b": []}
    target = {"a": [("t", 0), ("t", 1)], "b": [("t", 2), ("t", 3)]}
    # t-2 moves from a to b: b gets it only after a revoked it; t-3 was free.
    assert cooperative_adjust(target, owned) == {"a": [("t", 0), ("t", 1)], "b": [("t", 3)]}
    assert revoked_partitions(target, owned) == {"a": [("t", 2)], "b": []}
    # Second round: a no longer claims t-2.
    owned_after = {"a": [("t", 0), ("t", 1)], "b": [("t", 3)]}
    assert cooperative_adjust(target, owned_after) == target
    assert revoked_partitions(target, owned_after) == {"a": [], "b": []}
