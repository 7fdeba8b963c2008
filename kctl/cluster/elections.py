"""Leader election and ISR rules, as pure functions over the metadata.

The controller, a broker in controlled shutdown and ``kctl elect`` all change leadership through
these functions inside :meth:`MetadataStore.update`, so the rules live in one place:

* clean election: the first replica in assignment order that is in the ISR and alive;
* unclean election (``unclean.leader.election.enable``): any live replica, and the ISR becomes it;
* the ISR never becomes empty: when its last member dies it stays as that member, with no
  leader (the partition is offline until that replica returns, as in Kafka);
* every leader change bumps the leader epoch; every ISR change bumps the partition epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

from kctl.cluster.config import effective_config
from kctl.cluster.metadata import ClusterMetadata, Event, PartitionState, TopicState


def _unclean_allowed(topic: TopicState) -> bool:
    return bool(effective_config(topic.config)["unclean.leader.election.enable"])


def _leader_event(topic: str, p: int, old: int | None, part: PartitionState, reason: str) -> Event:
    return {
        "type": "leader_changed",
        "topic": topic,
        "partition": p,
        "old_leader": old,
        "new_leader": part.leader,
        "leader_epoch": part.leader_epoch,
        "isr": list(part.isr),
        "reason": reason,
    }


def _isr_event(topic: str, p: int, old: list[int], part: PartitionState, reason: str) -> Event:
    kind = "isr_shrink" if len(part.isr) < len(old) else "isr_expand"
    return {
        "type": kind,
        "topic": topic,
        "partition": p,
        "old_isr": old,
        "isr": list(part.isr),
        "leader": part.leader,
        "partition_epoch": part.partition_epoch,
        "reason": reason,
    }


def clean_candidate(part: PartitionState, live: set[int], exclude: Iterable[int] = ()) -> int | None:
    skip = set(exclude)
    for r in part.replicas:
        if r in part.isr and r in live and r not in skip:
            return r
    return None


def reconcile(md: ClusterMetadata, live: set[int], reason: str) -> list[Event]:
    """Make every partition consistent with the set of live brokers.

    Dead brokers leave every ISR (never emptying it); partitions whose leader is dead, or that
    are offline, get a new leader if one can be had cleanly (or uncleanly where allowed).
    """
    events: list[Event] = []
    for name, topic in sorted(md.topics.items()):
        unclean = _unclean_allowed(topic)
        for p, part in enumerate(topic.partitions):
            old_isr = list(part.isr)
            old_leader = part.leader
            dead_in_isr = [r for r in part.isr if r not in live]
            if dead_in_isr:
                remaining = [r for r in part.isr if r in live]
                if not remaining:
                    # keep the last in-sync replica on record so a clean election can wait for it
                    keep = part.leader if part.leader in part.isr else part.isr[0]
                    remaining = [keep]
                if remaining != part.isr:
                    part.isr = remaining
                    part.partition_epoch += 1
            if part.leader is not None and part.leader in live and part.leader in part.isr:
                if part.isr != old_isr:
                    events.append(_isr_event(name, p, old_isr, part, reason))
                continue
            new_leader = clean_candidate(part, live)
            why = reason
            if new_leader is None and unclean:
                alive = [r for r in part.replicas if r in live]
                if alive:
                    new_leader = alive[0]
                    part.isr = [new_leader]
                    part.partition_epoch += 1
                    why = "unclean"
            if new_leader != part.leader:
                part.leader = new_leader
                part.leader_epoch += 1
                events.append(_leader_event(name, p, old_leader, part, why))
            elif part.isr != old_isr:
                events.append(_isr_event(name, p, old_isr, part, reason))
    return events


def move_leadership_off(md: ClusterMetadata, broker: int, live: set[int]) -> list[Event]:
    """Controlled shutdown: hand every partition ``broker`` leads to another in-sync replica and
    take ``broker`` out of every ISR (it will stop fetching)."""
    events: list[Event] = []
    others = live - {broker}
    for name, topic in sorted(md.topics.items()):
        for p, part in enumerate(topic.partitions):
            if part.leader == broker:
                successor = clean_candidate(part, others)
                if successor is None:
                    continue  # the only in-sync replica: it stays leader until it is gone
                old_isr = list(part.isr)
                part.leader = successor
                part.leader_epoch += 1
                part.isr = [r for r in part.isr if r != broker]
                part.partition_epoch += 1
                ev = _leader_event(name, p, broker, part, "controlled_shutdown")
                ev["old_isr"] = old_isr
                events.append(ev)
            elif broker in part.isr and len(part.isr) > 1:
                old_isr = list(part.isr)
                part.isr = [r for r in part.isr if r != broker]
                part.partition_epoch += 1
                events.append(_isr_event(name, p, old_isr, part, "controlled_shutdown"))
    return events


def preferred_election(
    md: ClusterMetadata, live: set[int], targets: set[tuple[str, int]] | None = None
) -> list[Event]:
    """Move leadership back to the first replica of each partition where it is live and in sync."""
    events: list[Event] = []
    for name, topic in sorted(md.topics.items()):
        for p, part in enumerate(topic.partitions):
            if targets is not None and (name, p) not in targets:
                continue
            preferred = part.replicas[0]
            if part.leader == preferred or preferred not in live or preferred not in part.isr:
                continue
            old = part.leader
            part.leader = preferred
            part.leader_epoch += 1
            events.append(_leader_event(name, p, old, part, "preferred"))
    return events


def unclean_election(
    md: ClusterMetadata, live: set[int], targets: set[tuple[str, int]] | None = None
) -> list[Event]:
    """Elect any live replica for offline partitions, accepting the loss of unreplicated data."""
    events: list[Event] = []
    for name, topic in sorted(md.topics.items()):
        for p, part in enumerate(topic.partitions):
            if targets is not None and (name, p) not in targets:
                continue
            if part.leader is not None and part.leader in live:
                continue
            alive = [r for r in part.replicas if r in live]
            if not alive:
                continue
            old = part.leader
            part.leader = alive[0]
            part.leader_epoch += 1
            part.isr = [alive[0]]
            part.partition_epoch += 1
            events.append(_leader_event(name, p, old, part, "unclean"))
    return events


def leader_imbalance(md: ClusterMetadata, live: set[int]) -> float:
    """Share of partitions not led by their (live, in-sync) preferred replica."""
    total = bad = 0
    for topic in md.topics.values():
        for part in topic.partitions:
            total += 1
            pref = part.replicas[0]
            if pref in live and pref in part.isr and part.leader != pref:
                bad += 1
    return bad / total if total else 0.0


def assign_replicas(
    brokers: list[int], partitions: int, replication_factor: int, start: int, first_partition: int = 0
) -> list[list[int]]:
    """Kafka's rack-unaware placement: leaders round-robin from ``start``, followers shifted so
    that no two replicas of a partition share a broker and load spreads evenly."""
    n = len(brokers)
    out = []
    for i in range(first_partition, first_partition + partitions):
        first = (start + i) % n
        shift = (i // n) % max(1, n - 1)
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            idx = (first + 1 + (shift + j) % (n - 1)) % n
            replicas.append(brokers[idx])
        out.append(replicas)
    return out
