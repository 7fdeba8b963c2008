"""Consumer group coordination through files: membership, generations, assignment, ownership and
offsets. These run without broker processes: a cluster directory with topics is enough, since
groups never talk to brokers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.client.admin import Cluster
from kctl.client.group import GroupConsumer
from kctl.cluster.assignors import assign_range, assign_roundrobin
from kctl.cluster.groups import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    GroupAdmin,
    GroupCoordinator,
    MemberInfo,
    MemberLock,
    OwnershipLock,
    validate_group_name,
)
from kctl.errors import GroupError, GroupNotEmptyError, InvalidArgumentError, UnknownGroupError
from tests.conftest import FAST_SETTINGS

TP = tuple[str, int]


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    c = Cluster.init(str(tmp_path / "cluster"), brokers=3, settings=FAST_SETTINGS)
    c.create_topic("t", 6)
    c.create_topic("u", 3)
    return c


class Members:
    """Members registered through the coordinator API directly (one coordinator each, as if each
    were its own process)."""

    def __init__(self, cluster: Cluster, group: str = "g") -> None:
        self.cluster = cluster
        self.group = group
        self.locks: dict[str, MemberLock] = {}
        self.coords: dict[str, GroupCoordinator] = {}

    def coord(self, name: str = "admin") -> GroupCoordinator:
        if name not in self.coords:
            self.coords[name] = GroupCoordinator(self.cluster.layout, self.group)
        return self.coords[name]

    def join(self, name: str, topics: tuple[str, ...] = ("t",), assignor: str = "range",
             instance_id: str | None = None) -> MemberInfo:
        info = MemberInfo.new(name, topics, instance_id)
        self.locks[info.member_id] = self.coord(name).register(info)
        self.coord(name).join(info, assignor, self.cluster.metadata())
        return info

    def crash(self, info: MemberInfo) -> None:
        """What the kernel does when the member's process dies: the lock is freed."""
        self.locks.pop(info.member_id).release()

    def close(self) -> None:
        for lock in self.locks.values():
            lock.release()
        for c in self.coords.values():
            c.close()


@pytest.fixture
def members(cluster: Cluster) -> Iterator[Members]:
    m = Members(cluster)
    yield m
    m.close()


def owners(assignment: dict[str, list[TP]]) -> dict[TP, str]:
    out: dict[TP, str] = {}
    for member, parts in assignment.items():
        for tp in parts:
            assert tp not in out, f"{tp} assigned to {out[tp]} and {member}"
            out[tp] = member
    return out


def events(cluster: Cluster, kind: str) -> list[dict]:
    return [e for e in cluster.events() if e["type"] == kind]


# -- names and locks -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["billing", "a.b_c-1", "x" * 249])
def test_valid_group_names(name: str) -> None:
    assert validate_group_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "with space", "x" * 250, "é"])
def test_invalid_group_names(name: str) -> None:
    with pytest.raises(InvalidArgumentError):
        validate_group_name(name)


def test_ownership_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    path = str(tmp_path / "t-0.lock")
    first, second = OwnershipLock(path, ("t", 0)), OwnershipLock(path, ("t", 0))
    assert first.try_acquire("m1")
    assert not second.try_acquire("m2")
    assert Path(path).read_text().split()[0] == "m1"
    first.release()
    assert second.try_acquire("m2")
    assert Path(path).read_text().split()[0] == "m2"
    second.release()


# -- membership and generations ------------------------------------------------------------------


def test_join_and_leave_bump_the_generation_and_record_events(cluster: Cluster, members: Members) -> None:
    a = members.join("a")
    state = members.coord().load_state()
    assert state.generation == 1
    assert state.assignment == {a.member_id: [("t", p) for p in range(6)]}
    b = members.join("b")
    state = members.coord().load_state()
    assert state.generation == 2
    assert set(owners(state.assignment)) == {("t", p) for p in range(6)}
    assert sorted(len(v) for v in state.assignment.values()) == [3, 3]

    members.coord("a").leave(a.member_id, cluster.metadata())
    state = members.coord().load_state()
    assert state.generation == 3
    assert state.assignment == {b.member_id: [("t", p) for p in range(6)]}

    joined = events(cluster, "group_member_joined")
    assert [e["member_id"] for e in joined] == [a.member_id, b.member_id]
    assert joined[0]["client_id"] == "a" and joined[0]["pid"] == os.getpid() and joined[0]["host"]
    rebalances = events(cluster, "group_rebalance")
    assert [e["generation"] for e in rebalances] == [1, 2, 3]
    assert rebalances[1]["members"] == sorted([a.member_id, b.member_id])
    assert rebalances[1]["assignor"] == "range"
    left = events(cluster, "group_member_left")
    assert [e["member_id"] for e in left] == [a.member_id]


def test_member_ids_look_like_kafkas() -> None:
    info = MemberInfo.new("my-client", ["t"])
    assert info.member_id.startswith("my-client-")
    assert len(info.member_id) == len("my-client-") + 36
    assert info.pid == os.getpid() and info.host


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
@pytest.mark.parametrize(("count", "partitions"), [(2, 4), (3, 6), (4, 3)])
def test_assignments_are_disjoint_and_cover_every_partition(tmp_path: Path, assignor: str, count: int,
                                                             partitions: int) -> None:
    c = Cluster.init(str(tmp_path / "c"), brokers=1, settings=FAST_SETTINGS)
    c.create_topic("t", partitions)
    m = Members(c)
    try:
        infos = [m.join(f"c{i}", assignor=assignor) for i in range(count)]
        state = m.coord().load_state()
        assert state.generation == count
        assert set(owners(state.assignment)) == {("t", p) for p in range(partitions)}
        assert set(state.assignment) == {i.member_id for i in infos}
        sizes = sorted(len(v) for v in state.assignment.values())
        assert sizes[-1] - sizes[0] <= 1
        if count > partitions:
            assert sizes.count(0) == count - partitions  # the extra members stay idle
        if assignor in ("range", "roundrobin"):
            fn = assign_range if assignor == "range" else assign_roundrobin
            assert state.assignment == fn({i.member_id: ["t"] for i in infos}, {"t": partitions})
    finally:
        m.close()


def test_crashed_member_is_noticed_at_once(cluster: Cluster, members: Members) -> None:
    a = members.join("a")
    b = members.join("b")
    coord_a = members.coord("a")
    md = cluster.metadata()
    assert coord_a.pending_changes(coord_a.load_state(), md, a.member_id) == []
    members.crash(b)
    assert coord_a.pending_changes(coord_a.load_state(), md, a.member_id) == [f"member {b.member_id} dead"]
    assert coord_a.group_state_name(coord_a.load_state(), md) == PREPARING_REBALANCE
    state = coord_a.maybe_rebalance(md, a.member_id)
    assert state.generation == 3
    assert state.assignment == {a.member_id: [("t", p) for p in range(6)]}
    died = events(cluster, "group_member_died")
    assert [(e["member_id"], e["reason"]) for e in died] == [(b.member_id, "process exited")]
    assert not os.path.exists(coord_a.member_lock_path(b.member_id))
    # a second look finds nothing to do
    assert coord_a.maybe_rebalance(md, a.member_id).generation == 3


def test_a_group_whose_last_member_crashed_reads_as_empty(cluster: Cluster, members: Members) -> None:
    a = members.join("a")
    members.crash(a)
    admin = GroupAdmin(cluster.layout.root)
    doc = admin.describe_group("g")
    assert (doc["state"], doc["members"], doc["generation"]) == (EMPTY, [], 2)
    assert events(cluster, "group_member_died")[-1]["member_id"] == a.member_id
    assert admin.list_groups()[0]["state"] == EMPTY


def test_hung_member_is_expelled_after_the_session_timeout(cluster: Cluster, members: Members) -> None:
    a = members.join("a")
    b = members.join("b")
    coord = members.coord("a")
    md = cluster.metadata()
    path = coord.member_lock_path(b.member_id)
    old = time.time() - 2.0  # within the 3 s session timeout: still a member
    os.utime(path, (old, old))
    assert coord.pending_changes(coord.load_state(), md, a.member_id) == []
    old = time.time() - 3.5
    os.utime(path, (old, old))
    assert coord.pending_changes(coord.load_state(), md, a.member_id) == [f"member {b.member_id} expired"]
    state = coord.maybe_rebalance(md, a.member_id)
    assert list(state.members) == [a.member_id]
    died = events(cluster, "group_member_died")
    assert died[-1]["member_id"] == b.member_id and "session timeout" in died[-1]["reason"]
    assert os.path.exists(path), "the hung member still holds its lock file; it removes it itself"


def test_static_instance_id_in_use_is_refused(members: Members) -> None:
    members.join("a", instance_id="a-1")
    with pytest.raises(GroupError, match="instance id 'a-1' is in use"):
        members.join("a", instance_id="a-1")


def test_static_member_rejoin_moves_nobody(cluster: Cluster, members: Members) -> None:
    a = members.join("a", instance_id="a-1")
    b = members.join("b", instance_id="b-1")
    coord = members.coord()
    before = coord.load_state()
    members.crash(a)
    # while it is away nothing is due: nobody else takes its partitions
    assert coord.pending_changes(coord.load_state(), cluster.metadata(), b.member_id) == []
    a2 = members.join("a", instance_id="a-1")
    after = coord.load_state()
    assert after.generation == before.generation
    assert after.assignment == {a2.member_id: before.assignment[a.member_id],
                                b.member_id: before.assignment[b.member_id]}
    assert len(events(cluster, "group_rebalance")) == 2
    joined = events(cluster, "group_member_joined")[-1]
    assert joined["replaces"] == a.member_id and joined["instance_id"] == "a-1"


def test_static_member_back_with_another_subscription_rebalances(cluster: Cluster, members: Members) -> None:
    a = members.join("a", topics=("t",), instance_id="a-1")
    members.join("b", topics=("t",))
    before = members.coord().load_state()
    members.crash(a)
    a2 = members.join("a", topics=("t", "u"), instance_id="a-1")
    after = members.coord().load_state()
    assert after.generation == before.generation + 1
    assert after.reason == "subscription changed"
    assert {tp[0] for tp in after.assignment[a2.member_id]} == {"t", "u"}
    assert after.partitions == {"t": 6, "u": 3}


def test_static_member_gone_past_the_session_timeout_is_removed(cluster: Cluster, members: Members) -> None:
    a = members.join("a", instance_id="a-1")
    b = members.join("b")
    coord = members.coord("b")
    members.crash(a)
    old = time.time() - 4
    os.utime(coord.member_lock_path(a.member_id), (old, old))
    md = cluster.metadata()
    assert coord.pending_changes(coord.load_state(), md, b.member_id) == [f"member {a.member_id} expired"]
    state = coord.maybe_rebalance(md, b.member_id)
    assert list(state.members) == [b.member_id]
    assert not os.path.exists(coord.member_lock_path(a.member_id))


def test_cooperative_sticky_moves_only_what_must_move(cluster: Cluster, members: Members) -> None:
    for name in ("a", "b"):
        members.join(name, assignor="cooperative-sticky")
    before = owners(members.coord().load_state().assignment)
    members.join("c", assignor="cooperative-sticky")
    after = owners(members.coord().load_state().assignment)
    moved = [tp for tp in before if after[tp] != before[tp]]
    assert len(moved) == 2  # 6 partitions over 3 members: each old member gives up exactly one
    assert sorted(list(after.values()).count(m) for m in set(after.values())) == [2, 2, 2]


def test_assignor_must_match_the_group(members: Members) -> None:
    members.join("a", assignor="roundrobin")
    with pytest.raises(GroupError, match="roundrobin"):
        members.join("b", assignor="range")


def test_partition_growth_triggers_a_rebalance(cluster: Cluster, members: Members) -> None:
    a = members.join("a", topics=("t", "u"))
    coord = members.coord("a")
    cluster.alter_topic("u", partitions=5)
    md = cluster.metadata()
    assert coord.pending_changes(coord.load_state(), md, a.member_id) == ["partitions changed"]
    state = coord.maybe_rebalance(md, a.member_id)
    assert ("u", 4) in state.assignment[a.member_id]
    assert state.partitions == {"t": 6, "u": 5}
    assert events(cluster, "group_rebalance")[-1]["reason"] == "partitions changed"


def test_subscriptions_to_different_topics(cluster: Cluster, members: Members) -> None:
    a = members.join("a", topics=("t",))
    b = members.join("b", topics=("t", "u"))
    state = members.coord().load_state()
    assert {tp for tp in state.assignment[a.member_id]} <= {("t", p) for p in range(6)}
    assert {tp for tp in state.assignment[b.member_id] if tp[0] == "u"} == {("u", 0), ("u", 1), ("u", 2)}


@settings(max_examples=50, deadline=None)
@given(
    generation=st.integers(0, 2**31),
    members=st.dictionaries(
        st.from_regex(r"[a-z]{1,8}-[0-9a-f]{8}", fullmatch=True),
        st.tuples(st.text(max_size=10), st.lists(st.sampled_from(["t", "u", "v.w"]), min_size=1, max_size=3),
                  st.none() | st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)),
        max_size=4),
    partitions=st.lists(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 99)), max_size=8),
)
def test_group_state_round_trips_through_json(generation, members, partitions) -> None:
    import json

    from kctl.cluster.groups import GroupState

    infos = {m: MemberInfo(m, c, "host", 42, tuple(sorted(set(t))), i, 7) for m, (c, t, i) in members.items()}
    assignment = {m: sorted(set(partitions)) for m in infos}
    state = GroupState("g", generation, "roundrobin", infos, assignment, {"t": 3}, min(infos, default=None),
                       "member joined", 123)
    assert GroupState.from_json(json.loads(json.dumps(state.to_json()))) == state


# -- offsets ------------------------------------------------------------------------------------


def test_commits_are_stored_in_kafkas_checkpoint_format(members: Members) -> None:
    coord = members.coord()
    coord.ensure_dirs()
    coord.commit({("t", 1): 7, ("t", 0): 5})
    coord.commit({("t", 1): 9})
    assert coord.committed() == {("t", 0): 5, ("t", 1): 9}
    with open(coord.offsets_path) as f:
        assert f.read() == "0\n2\nt 0 5\nt 1 9\n"


# -- members in one process (GroupConsumer, no brokers needed) ------------------------------------


def test_a_partition_moves_only_after_its_owner_committed_and_released(cluster: Cluster) -> None:
    data = cluster.layout.root
    a = GroupConsumer(data, "g", ["t"])
    b = None
    try:
        a.poll(0)
        assert a.owned() == [("t", p) for p in range(6)]
        delivered = {("t", p): 10 + p for p in range(6)}
        a.delivered(delivered)
        starts: dict[TP, int] = {}
        # the logs are empty, so the consumer resets these offsets, and reports where it started
        b = GroupConsumer(data, "g", ["t"], on_reset=lambda tp, old, new, why: starts.setdefault(tp, old))
        # b's share is assigned, but a has not released it yet: b must not read it
        assert len(b.assignment()) == 3 and b.owned() == []
        coord = GroupCoordinator(cluster.layout, "g")
        assert coord.group_state_name(coord.load_state()) == COMPLETING_REBALANCE
        a.poll(0)  # a notices the new generation: commits, releases
        b.poll(0)
        assert sorted(a.owned() + b.owned()) == [("t", p) for p in range(6)]
        assert not set(a.owned()) & set(b.owned())
        assert coord.group_state_name(coord.load_state()) == STABLE
        committed = coord.committed()
        for tp in b.owned():  # b starts exactly where a stopped: a committed before releasing
            assert committed[tp] == delivered[tp]
            assert starts[tp] == delivered[tp]
        coord.close()
    finally:
        a.close()
        if b is not None:
            b.close()


def test_expelled_member_commits_releases_and_rejoins(cluster: Cluster) -> None:
    data = cluster.layout.root
    a = GroupConsumer(data, "g", ["t"])
    b = GroupConsumer(data, "g", ["t"])
    try:
        a.poll(0)
        b.poll(0)
        first_a = a.member_id
        a_parts = a.owned()
        a.delivered({a_parts[0]: 4})
        coord = GroupCoordinator(cluster.layout, "g")
        old = time.time() - 5
        os.utime(coord.member_lock_path(first_a), (old, old))
        b.poll(0)  # b notices a's stale heartbeat and expels it; a still holds its partitions
        assert list(coord.load_state().members) == [b.member_id]
        assert b.owned() != [("t", p) for p in range(6)]
        a.poll(0)  # a notices, commits, releases and rejoins under a new member id
        assert a.member_id != first_a
        b.poll(0)
        a.poll(0)
        assert sorted(a.owned() + b.owned()) == [("t", p) for p in range(6)]
        assert coord.committed()[a_parts[0]] == 4
        assert not os.path.exists(coord.member_lock_path(first_a))
        coord.close()
    finally:
        a.close()
        b.close()


def test_close_leaves_and_hands_everything_over(cluster: Cluster) -> None:
    data = cluster.layout.root
    messages: list[str] = []
    a = GroupConsumer(data, "g", ["t"], on_event=messages.append)
    b = GroupConsumer(data, "g", ["t"])
    try:
        a.poll(0)
        b.poll(0)
        generation = b.generation
        a.close()
        b.poll(0)
        assert b.owned() == [("t", p) for p in range(6)]
        assert b.generation == generation + 1
    finally:
        a.close()
        b.close()
    assert any(m.startswith("joined group g as kctl-") for m in messages)
    assert any("assigned [" in m for m in messages)
    admin = GroupAdmin(data)
    assert admin.list_groups()[0]["state"] == EMPTY


def test_start_offset_overrides_committed_only_on_first_assignment(cluster: Cluster) -> None:
    from kctl.client.offsetspec import OffsetSpec

    data = cluster.layout.root
    coord = GroupCoordinator(cluster.layout, "g")
    coord.ensure_dirs()
    coord.commit({("u", 0): 2, ("u", 1): 0})
    g = GroupConsumer(data, "g", ["u"], start=OffsetSpec("beginning"))
    try:
        g.poll(0)
        assert g._consumer.position(("u", 0)) == 0
    finally:
        g.close()
    # the overridden start was committed like any position
    assert coord.committed() == {("u", 0): 0, ("u", 1): 0, ("u", 2): 0}
    coord.commit({("u", 0): 1})
    g = GroupConsumer(data, "g", ["u"], start=OffsetSpec("stored"))
    try:
        g._tick()
        assert g._consumer.position(("u", 0)) == 1  # stored: the committed offset
    finally:
        g.close()
    coord.close()


# -- admin --------------------------------------------------------------------------------------


def test_describe_json_shape(cluster: Cluster) -> None:
    data = cluster.layout.root
    a = GroupConsumer(data, "g", ["u"], client_id="billing")
    try:
        a.poll(0)
        a.commit()  # the start positions (0) become committed offsets
        doc = GroupAdmin(data).describe_group("g")
        assert {"group", "state", "generation", "assignor", "total_lag", "members", "partitions"} <= set(doc)
        assert doc["state"] == STABLE and doc["generation"] == 1 and doc["assignor"] == "range"
        (member,) = doc["members"]
        assert {"member_id", "client_id", "host", "pid", "assignment"} <= set(member)
        assert member["client_id"] == "billing" and member["pid"] == os.getpid()
        assert member["assignment"] == [{"topic": "u", "partition": p} for p in range(3)]
        assert [set(p) >= {"topic", "partition", "current_offset", "log_end_offset", "lag", "member_id"}
                for p in doc["partitions"]] == [True] * 3
        assert {p["member_id"] for p in doc["partitions"]} == {a.member_id}
        lag = GroupAdmin(data).group_lag("g")
        assert lag == doc["partitions"]
        assert [(r["current_offset"], r["log_end_offset"], r["lag"]) for r in lag] == [(0, 0, 0)] * 3
        assert GroupAdmin(data).list_groups() == [
            {"group": "g", "state": STABLE, "members": 1, "generation": 1, "assignor": "range"}]
    finally:
        a.close()


def test_admin_refuses_while_members_live_and_unknown_groups(cluster: Cluster) -> None:
    data = cluster.layout.root
    admin = GroupAdmin(data)
    with pytest.raises(UnknownGroupError):
        admin.describe_group("nope")
    with pytest.raises(UnknownGroupError):
        admin.delete_group("nope")
    a = GroupConsumer(data, "g", ["u"])
    try:
        with pytest.raises(GroupNotEmptyError, match=str(os.getpid())):
            admin.delete_group("g")
        with pytest.raises(GroupNotEmptyError):
            admin.reset_offsets("g", [("u", None)], "to-earliest", execute=True)
    finally:
        a.close()
    admin.delete_group("g")
    assert admin.list_groups() == []
    assert events(cluster, "group_deleted")[-1]["group"] == "g"
