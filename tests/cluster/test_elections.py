"""Leader election and ISR rules (kctl.cluster.elections) as pure functions over metadata."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from kctl.cluster import elections
from kctl.cluster.metadata import BROKER_UP, BrokerState, ClusterMetadata, PartitionState, TopicState


def md_with(*parts: PartitionState, unclean: bool = False, brokers: int = 3) -> ClusterMetadata:
    config = {"unclean.leader.election.enable": True} if unclean else {}
    md = ClusterMetadata("c", brokers={b: BrokerState(b, BROKER_UP, 1) for b in range(brokers)})
    md.topics["t"] = TopicState("t", "id", list(parts), config)
    return md


def part(replicas: list[int], leader: int | None, isr: list[int], epoch: int = 0) -> PartitionState:
    return PartitionState(list(replicas), leader, epoch, list(isr), 0)


# -- reconcile (what the controller does when brokers die or return) ---------------------------------
def test_dead_leader_is_replaced_by_first_live_isr_member_in_assignment_order():
    md = md_with(part([0, 1, 2], 0, [2, 1, 0], epoch=4))
    events = elections.reconcile(md, live={1, 2}, reason="broker_failure")
    p = md.topics["t"].partitions[0]
    assert p.leader == 1 and p.leader_epoch == 5
    assert p.isr == [2, 1] and p.partition_epoch == 1
    [ev] = events
    assert ev["type"] == "leader_changed" and ev["old_leader"] == 0 and ev["new_leader"] == 1
    assert ev["leader_epoch"] == 5 and ev["reason"] == "broker_failure"


def test_dead_follower_only_shrinks_the_isr():
    md = md_with(part([0, 1, 2], 0, [0, 1, 2], epoch=2))
    [ev] = elections.reconcile(md, live={0, 1}, reason="broker_failure")
    p = md.topics["t"].partitions[0]
    assert (p.leader, p.leader_epoch, p.isr) == (0, 2, [0, 1])
    assert ev["type"] == "isr_shrink" and ev["old_isr"] == [0, 1, 2] and ev["isr"] == [0, 1]


def test_out_of_sync_replica_never_leads_cleanly_and_isr_keeps_its_last_member():
    md = md_with(part([0, 1, 2], 0, [0]))
    [ev] = elections.reconcile(md, live={1, 2}, reason="broker_failure")
    p = md.topics["t"].partitions[0]
    assert p.leader is None and p.isr == [0] and p.leader_epoch == 1
    assert ev["new_leader"] is None
    # nothing more happens until the last in-sync replica returns, and then it leads
    assert elections.reconcile(md, live={1, 2}, reason="x") == []
    elections.reconcile(md, live={0, 1, 2}, reason="broker_up")
    assert p.leader == 0 and p.leader_epoch == 2


def test_unclean_topic_elects_any_live_replica_and_resets_the_isr():
    md = md_with(part([0, 1, 2], 0, [0]), unclean=True)
    [ev] = elections.reconcile(md, live={2, 1}, reason="broker_failure")
    p = md.topics["t"].partitions[0]
    assert p.leader == 1 and p.isr == [1] and p.leader_epoch == 1
    assert ev["reason"] == "unclean"


def test_reconcile_is_idempotent():
    md = md_with(part([0, 1, 2], 0, [0, 1, 2]), part([1, 2, 0], 1, [1, 2, 0]))
    assert elections.reconcile(md, live={0, 1, 2}, reason="x") == []
    elections.reconcile(md, live={0, 2}, reason="x")
    snapshot = md.to_json()
    assert elections.reconcile(md, live={0, 2}, reason="x") == []
    assert md.to_json() == snapshot


def test_everything_dead_leaves_partitions_offline_with_one_isr_member():
    md = md_with(part([0, 1, 2], 1, [0, 1, 2]))
    elections.reconcile(md, live=set(), reason="x")
    p = md.topics["t"].partitions[0]
    assert p.leader is None and p.isr == [1]


# -- controlled shutdown ------------------------------------------------------------------------------
def test_controlled_shutdown_hands_leadership_to_an_in_sync_replica():
    md = md_with(part([0, 1, 2], 0, [0, 2], epoch=3), part([1, 0, 2], 1, [1, 0, 2]), part([2, 1], 2, [2]))
    events = elections.move_leadership_off(md, 0, live={0, 1, 2})
    p0, p1, p2 = md.topics["t"].partitions
    assert (p0.leader, p0.leader_epoch, p0.isr) == (2, 4, [2])  # 1 is not in sync: skipped
    assert (p1.leader, p1.isr) == (1, [1, 2])
    assert (p2.leader, p2.isr) == (2, [2])
    assert [e["type"] for e in events] == ["leader_changed", "isr_shrink"]
    assert events[0]["reason"] == "controlled_shutdown"


def test_controlled_shutdown_keeps_a_sole_in_sync_leader():
    md = md_with(part([0, 1], 0, [0]))
    assert elections.move_leadership_off(md, 0, live={0, 1}) == []
    assert md.topics["t"].partitions[0].leader == 0


# -- preferred and unclean elections on demand -------------------------------------------------------------
def test_preferred_election_restores_first_replica_when_live_and_in_sync():
    md = md_with(part([0, 1, 2], 1, [1, 2, 0], epoch=1), part([1, 2, 0], 2, [2, 0]), part([2, 0, 1], 2, [2]))
    events = elections.preferred_election(md, live={0, 1, 2})
    p0, p1, p2 = md.topics["t"].partitions
    assert (p0.leader, p0.leader_epoch) == (0, 2)
    assert p1.leader == 2  # preferred replica 1 is not in sync
    assert p2.leader == 2
    assert [(e["partition"], e["reason"]) for e in events] == [(0, "preferred")]


def test_preferred_election_respects_targets_and_liveness():
    md = md_with(part([0, 1], 1, [0, 1]), part([0, 1], 1, [0, 1]))
    assert elections.preferred_election(md, live={1}) == []
    events = elections.preferred_election(md, live={0, 1}, targets={("t", 1)})
    assert [e["partition"] for e in events] == [1]
    assert [p.leader for p in md.topics["t"].partitions] == [1, 0]


def test_unclean_election_only_touches_partitions_without_a_live_leader():
    md = md_with(part([0, 1], None, [0]), part([0, 1], 1, [1]), part([0, 1], None, [0]))
    events = elections.unclean_election(md, live={1}, targets={("t", 0), ("t", 1)})
    p0, p1, p2 = md.topics["t"].partitions
    assert (p0.leader, p0.isr, p0.leader_epoch) == (1, [1], 1)
    assert p1.leader == 1 and p1.leader_epoch == 0
    assert p2.leader is None
    assert [e["reason"] for e in events] == ["unclean"]


def test_clean_candidate_follows_assignment_order():
    p = part([2, 0, 1], None, [1, 0])
    assert elections.clean_candidate(p, {0, 1, 2}) == 0
    assert elections.clean_candidate(p, {0, 1, 2}, exclude=[0]) == 1
    assert elections.clean_candidate(p, {2}) is None


def test_leader_imbalance_counts_partitions_not_on_an_available_preferred_replica():
    md = md_with(part([0, 1], 1, [0, 1]), part([1, 0], 1, [1, 0]), part([2, 0], 0, [0]), part([0, 2], 2, [0, 2]))
    assert elections.leader_imbalance(md, {0, 1, 2}) == 0.5
    assert elections.leader_imbalance(md, {1, 2}) == 0.0
    assert elections.leader_imbalance(ClusterMetadata("c"), {0}) == 0.0


# -- replica placement -------------------------------------------------------------------------------------
def test_assignment_matches_kafkas_rack_unaware_layout():
    assert elections.assign_replicas([0, 1, 2], 3, 3, 0) == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert elections.assign_replicas([0, 1, 2], 4, 2, 1) == [[1, 2], [2, 0], [0, 1], [1, 0]]


@given(
    brokers=st.integers(1, 8),
    partitions=st.integers(1, 40),
    data=st.data(),
)
def test_assignment_properties(brokers, partitions, data):
    rf = data.draw(st.integers(1, brokers))
    start = data.draw(st.integers(0, brokers - 1))
    first = data.draw(st.integers(0, 30))
    ids = list(range(10, 10 + brokers))
    out = elections.assign_replicas(ids, partitions, rf, start, first_partition=first)
    assert len(out) == partitions
    for replicas in out:
        assert len(replicas) == rf and len(set(replicas)) == rf and set(replicas) <= set(ids)
    leaders = Counter(r[0] for r in out)
    assert max(leaders.values()) - min(leaders.get(b, 0) for b in ids) <= 1 or partitions < brokers
    replica_load = Counter(b for r in out for b in r)
    if partitions % brokers == 0 and first == 0:
        assert len(set(replica_load.values())) == 1  # every broker carries the same number
