"""Kafka's consumer group partition assignors, as pure functions.

The group leader turns the members' subscriptions into an assignment. Every assignor here has the
uniform shape ``(members, partitions_per_topic, owned) -> assignment`` where ``members`` maps a
member id to the topics it subscribes to, ``partitions_per_topic`` gives each topic's partition
count and ``owned`` what each member held before the rebalance (used by cooperative-sticky only).
Results list every member (possibly with nothing) and each member's partitions sorted by
(topic, partition); topics missing from ``partitions_per_topic`` are skipped.

``range`` and ``roundrobin`` follow Kafka's RangeAssignor and RoundRobinAssignor exactly;
``cooperative-sticky`` keeps Kafka's promises (balanced counts, as few moves as possible, KIP-429's
revoke-then-reassign) with a simpler deterministic algorithm.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from kctl.errors import InvalidArgumentError

__all__ = [
    "ASSIGNORS",
    "Assignment",
    "Assignor",
    "Subscription",
    "TopicPartition",
    "assign",
    "assign_cooperative_sticky",
    "assign_range",
    "assign_roundrobin",
    "cooperative_adjust",
    "resolve_owned",
    "revoked_partitions",
]

TopicPartition = tuple[str, int]
Assignment = dict[str, list[TopicPartition]]
Members = Mapping[str, Sequence[str]]
Owned = Mapping[str, Sequence[TopicPartition]]
Assignor = Callable[[Members, Mapping[str, int], "Owned | None"], Assignment]


class Subscription(NamedTuple):
    """What a member tells the group leader when it joins."""

    member_id: str
    topics: tuple[str, ...]
    """Subscribed topics, sorted."""
    owned: Sequence[TopicPartition] = ()
    """Partitions the member held in ``generation`` (cooperative protocol)."""
    generation: int = -1
    """The generation in which the member last held ``owned``; -1 if it never joined."""


def assign_range(
    members: Members, partitions_per_topic: Mapping[str, int], owned: Owned | None = None
) -> Assignment:
    """Kafka's RangeAssignor: per topic, consecutive ranges to members sorted by id.

    With P partitions and C subscribers, the first ``P % C`` members get ``P // C + 1``
    partitions and the others ``P // C``. ``owned`` is ignored (eager protocol).
    """
    order = sorted(members)
    result: Assignment = {m: [] for m in order}
    subscribers: dict[str, list[str]] = {}
    for m in order:
        for topic in dict.fromkeys(members[m]):
            subscribers.setdefault(topic, []).append(m)
    for topic in sorted(subscribers):
        count = partitions_per_topic.get(topic, 0)
        consumers = subscribers[topic]
        quota, extra = divmod(count, len(consumers))
        start = 0
        for i, m in enumerate(consumers):
            n = quota + 1 if i < extra else quota
            result[m].extend((topic, p) for p in range(start, start + n))
            start += n
    return result


def assign_roundrobin(
    members: Members, partitions_per_topic: Mapping[str, int], owned: Owned | None = None
) -> Assignment:
    """Kafka's RoundRobinAssignor: all partitions sorted by (topic, partition), dealt in member order.

    The dealer goes round the members sorted by id and skips those not subscribed to the
    partition's topic. ``owned`` is ignored (eager protocol).
    """
    order = sorted(members)
    result: Assignment = {m: [] for m in order}
    if not order:
        return result
    subs = [frozenset(members[m]) for m in order]
    topics = sorted(set().union(*subs))
    i = 0
    for topic in topics:
        for p in range(partitions_per_topic.get(topic, 0)):
            while topic not in subs[i]:
                i = (i + 1) % len(order)
            result[order[i]].append((topic, p))
            i = (i + 1) % len(order)
    return result


def assign_cooperative_sticky(
    members: Members, partitions_per_topic: Mapping[str, int], owned: Owned | None = None
) -> Assignment:
    """Balanced and sticky: keep what members own, move only what balance requires.

    1. Each member keeps the partitions it owned that still exist and that it still subscribes
       to; a partition claimed by two members is kept by neither (Kafka does the same).
    2. Unowned partitions go, scarcest topic first, to the least-loaded eligible member.
    3. While some member has at least two more partitions than an eligible member, one moves
       from the most to the least loaded (preferring partitions the donor did not own before).

    Members subscribed to the same topics end with counts that differ by at most one; with
    identical subscriptions the number of moved partitions is the minimum balance allows.
    Ties are broken by member id and (topic, partition), so the result is deterministic.
    """
    order = sorted(members)
    if not order:
        return {}
    subs = {m: frozenset(t for t in members[m] if partitions_per_topic.get(t, 0) > 0) for m in order}
    subscribers: dict[str, list[str]] = {}
    for m in order:
        for topic in sorted(subs[m]):
            subscribers.setdefault(topic, []).append(m)

    # 1. Keep valid, uncontested previous ownership.
    claims: dict[TopicPartition, list[str]] = {}
    for m in order:
        for topic, p in dict.fromkeys((owned or {}).get(m, ())):
            if topic in subs[m] and 0 <= p < partitions_per_topic[topic]:
                claims.setdefault((topic, p), []).append(m)
    # Each member's partitions in two lists: ``kept`` it owned before (moving one is a real move
    # for KIP-429's revocation) and ``fresh`` it gains in this round (cheap to hand on).
    kept: Assignment = {m: [] for m in order}
    fresh: Assignment = {m: [] for m in order}
    for tp in sorted(claims):
        claimants = claims[tp]
        if len(claimants) == 1:
            kept[claimants[0]].append(tp)
    count = {m: len(kept[m]) for m in order}

    # 2. Hand out the rest, partitions with the fewest possible consumers first.
    unassigned = [
        (topic, p)
        for topic in subscribers
        for p in range(partitions_per_topic[topic])
        if len(claims.get((topic, p), ())) != 1
    ]
    unassigned.sort(key=lambda tp: (len(subscribers[tp[0]]), tp))
    for tp in unassigned:
        target = min(subscribers[tp[0]], key=lambda m: (count[m], m))
        fresh[target].append(tp)
        count[target] += 1

    # 3. Balance: each move lowers the sum of squared counts, so the loop ends.
    while _move_one(order, subs, kept, fresh, count):
        pass

    return {m: sorted(kept[m] + fresh[m]) for m in order}


def _move_one(
    order: list[str],
    subs: Mapping[str, frozenset[str]],
    kept: Assignment,
    fresh: Assignment,
    count: dict[str, int],
) -> bool:
    """Move one partition from the most to the least loaded eligible member; False if none can."""
    ranked = sorted(order, key=lambda m: (count[m], m))
    for donor in reversed(ranked):
        for receiver in ranked:
            if count[donor] - count[receiver] < 2:
                break
            wanted = subs[receiver]
            for source in (fresh[donor], kept[donor]):
                for idx in range(len(source) - 1, -1, -1):
                    if source[idx][0] in wanted:
                        fresh[receiver].append(source.pop(idx))
                        count[donor] -= 1
                        count[receiver] += 1
                        return True
    return False


def resolve_owned(subscriptions: Iterable[Subscription]) -> dict[str, list[TopicPartition]]:
    """Which previous ownership claims to trust, from the members' generations.

    A partition goes to the claimant with the highest generation (a member that missed a
    rebalance still reports what it held in an older one); claimants tied at the highest
    generation cancel out. Members with no trusted claim map to an empty list.
    """
    best: dict[TopicPartition, tuple[int, list[str]]] = {}
    members: list[str] = []
    for sub in subscriptions:
        members.append(sub.member_id)
        for tp in dict.fromkeys(sub.owned):
            current = best.get(tp)
            if current is None or sub.generation > current[0]:
                best[tp] = (sub.generation, [sub.member_id])
            elif sub.generation == current[0]:
                current[1].append(sub.member_id)
    owned: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for tp in sorted(best):
        claimants = best[tp][1]
        if len(claimants) == 1:
            owned[claimants[0]].append(tp)
    return owned


def assign(
    name: str, subscriptions: Iterable[Subscription], partitions_per_topic: Mapping[str, int]
) -> Assignment:
    """Run the assignor called ``name`` (``range``, ``roundrobin``, ``cooperative-sticky``)."""
    assignor = ASSIGNORS.get(name)
    if assignor is None:
        raise InvalidArgumentError(f"unknown assignor {name!r} (choose from: {', '.join(ASSIGNORS)})")
    subs = list(subscriptions)
    members = {s.member_id: s.topics for s in subs}
    return assignor(members, partitions_per_topic, resolve_owned(subs))


def cooperative_adjust(assignment: Mapping[str, Sequence[TopicPartition]], owned: Owned) -> Assignment:
    """KIP-429's first round: withhold partitions that another member still owns.

    A partition moving from A to B is left out of B's assignment until A has revoked it; the
    follow-up rebalance (A no longer claims it) then hands it to B. Partitions nobody else
    claims are assigned at once.
    """
    owners: dict[TopicPartition, set[str]] = {}
    for m, parts in owned.items():
        for tp in parts:
            owners.setdefault(tp, set()).add(m)
    return {m: [tp for tp in parts if not (owners.get(tp, set()) - {m})] for m, parts in assignment.items()}


def revoked_partitions(assignment: Mapping[str, Sequence[TopicPartition]], owned: Owned) -> Assignment:
    """What each member of ``assignment`` must give up: owned partitions not assigned to it now."""
    return {m: sorted(set(owned.get(m, ())) - set(parts)) for m, parts in assignment.items()}


ASSIGNORS: dict[str, Assignor] = {
    "range": assign_range,
    "roundrobin": assign_roundrobin,
    "cooperative-sticky": assign_cooperative_sticky,
}
