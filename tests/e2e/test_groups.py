"""Consumer groups through the real CLI: several ``kctl consume -g`` processes sharing partitions,
taking over from each other on join, clean exit, crash and hang, and the ``kctl group`` commands.

Members write to files (never pipes: a full pipe would stall a member past its heartbeat) and
are always killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kctl.client.offsetspec import parse_datetime_ms
from kctl.client.producer import Producer
from kctl.cluster.groups import GroupAdmin
from kctl.errors import UnknownGroupError
from tests.conftest import KCTL

pytestmark = pytest.mark.e2e

FORMAT = "%p:%o:%s\\n"


class Member:
    """One ``kctl consume TOPIC -g GROUP`` process, output in files."""

    def __init__(self, data_dir: str, workdir: Path, name: str, args: list[str],
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([*KCTL, "--data-dir", data_dir, "consume", *args, "-f", FORMAT],
                                         stdout=out, stderr=err, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def values(self) -> list[str]:
        return [line.split(":", 2)[2] for line in self.out.read_text().splitlines() if line]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stderr(self) -> str:
        return self.err.read_text()


@pytest.fixture
def members(data_dir: str, tmp_path: Path) -> Iterator[Callable[..., Member]]:
    started: list[Member] = []

    def start(*args: str, name: str | None = None, env: dict[str, str] | None = None) -> Member:
        m = Member(data_dir, tmp_path, name or f"m{len(started)}", list(args), env)
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            if m.proc.poll() is None:
                m.proc.kill()
            m.proc.wait(10)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def produce(data_dir: str, topic: str, values: list[str]) -> None:
    with Producer(data_dir) as p:
        for v in values:
            p.send(topic, v.encode(), key=v.encode())


def describe(data_dir: str, group: str = "g") -> dict[str, Any]:
    return GroupAdmin(data_dir).describe_group(group)


def settled(data_dir: str, count: int, group: str = "g") -> dict[str, Any] | None:
    """The describe document once the group is Stable with ``count`` live members and no lag."""
    try:
        doc = describe(data_dir, group)
    except UnknownGroupError:
        return None
    alive = [m for m in doc["members"] if m["status"] == "alive"]
    if doc["state"] == "Stable" and len(alive) == count and doc["total_lag"] == 0:
        return doc
    return None


def assignment_of(doc: dict[str, Any]) -> dict[str, set[tuple[str, int]]]:
    return {m["member_id"]: {(a["topic"], a["partition"]) for a in m["assignment"]} for m in doc["members"]}


def assert_disjoint_cover(doc: dict[str, Any], topic: str, partitions: int) -> None:
    seen: list[tuple[str, int]] = [tp for parts in assignment_of(doc).values() for tp in parts]
    assert len(seen) == len(set(seen)), f"a partition is assigned twice: {seen}"
    assert set(seen) == {(topic, p) for p in range(partitions)}


def group_events(data_dir: str, kind: str) -> list[dict[str, Any]]:
    from kctl.client.admin import Cluster

    return [e for e in Cluster(data_dir).events() if e["type"] == kind]


# -- sharing, hand-over, exactly once on clean exits ---------------------------------------------


@pytest.mark.parametrize(("count", "partitions"), [(2, 4), (3, 6)])
def test_members_share_partitions_and_clean_exits_deliver_exactly_once(make_cluster, data_dir, members,
                                                                        count, partitions):
    c = make_cluster()
    c.create_topic("t", partitions)
    first = [f"a{i}" for i in range(60)]
    produce(data_dir, "t", first)
    ms = [members("t", "-g", "g") for _ in range(count)]
    doc = wait_for(lambda: settled(data_dir, count), 20, f"{count} stable members")
    assert_disjoint_cover(doc, "t", partitions)
    assert sorted(len(p) for p in assignment_of(doc).values()) == sorted(
        [partitions // count] * count)
    assert {m["pid"] for m in doc["members"]} == {m.pid for m in ms}
    second = [f"b{i}" for i in range(60)]
    produce(data_dir, "t", second)
    wait_for(lambda: settled(data_dir, count), 20, "the second batch consumed")
    # leave one by one (Ctrl-C, then SIGTERM): each exit hands its partitions over, committed
    for m, sig in zip(ms, [signal.SIGINT, *[signal.SIGTERM] * (count - 1)], strict=True):
        assert m.stop(sig) == 0, m.stderr()
    got = Counter(v for m in ms for v in m.values())
    assert set(got) == set(first + second)
    assert [v for v, n in got.items() if n > 1] == [], "a clean hand-over delivered a record twice"
    assert len(group_events(data_dir, "group_member_left")) == count
    assert describe(data_dir)["state"] == "Empty"


def test_sigkilled_member_is_replaced_at_once_and_nothing_is_lost(make_cluster, data_dir, members):
    c = make_cluster()
    c.create_topic("t", 6)
    first = [f"a{i}" for i in range(60)]
    produce(data_dir, "t", first)
    ms = [members("t", "-g", "g") for _ in range(3)]
    before = wait_for(lambda: settled(data_dir, 3), 20, "3 stable members")
    victim = ms[1]
    t0 = time.monotonic()
    victim.kill()
    doc = wait_for(lambda: settled(data_dir, 2), 10, "the survivors to take over")
    took = time.monotonic() - t0
    assert took < 2.5, f"takeover took {took:.2f}s: the crash should be seen through the lock, not a timeout"
    assert doc["generation"] == before["generation"] + 1
    assert_disjoint_cover(doc, "t", 6)
    assert victim.pid not in {m["pid"] for m in doc["members"]}
    died = group_events(data_dir, "group_member_died")
    assert [(e["pid"], e["reason"]) for e in died] == [(victim.pid, "process exited")]
    second = [f"b{i}" for i in range(60)]
    produce(data_dir, "t", second)
    wait_for(lambda: settled(data_dir, 2), 20, "the second batch consumed")
    for m in (ms[0], ms[2]):
        assert m.stop() == 0, m.stderr()
    got = {v for m in ms for v in m.values()}
    assert got == set(first + second), "every record is consumed at least once"


def test_no_two_members_ever_own_a_partition_while_members_join_and_die(make_cluster, data_dir, members,
                                                                        tmp_path):
    c = make_cluster()
    c.create_topic("t", 4)
    trace = tmp_path / "trace.jsonl"
    env = {"KCTL_GROUP_TRACE": str(trace)}
    produced: list[str] = []
    stop = threading.Event()

    def producer() -> None:
        with Producer(data_dir) as p:
            i = 0
            while not stop.is_set():
                v = f"r{i}"
                p.send("t", v.encode(), key=v.encode())
                p.flush()
                produced.append(v)
                i += 1
                time.sleep(0.01)

    def mark_kill(m: Member) -> None:
        # logged before the kill: an acquire after this line may follow the dead member's hold
        with open(trace, "a") as f:
            f.write(json.dumps({"op": "kill", "pid": m.pid, "t": time.monotonic()}) + "\n")
        m.kill()

    rng = random.Random(7)
    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    live: list[Member] = []
    try:
        live = [members("t", "-g", "g", env=env) for _ in range(2)]
        for step in range(8):
            time.sleep(rng.uniform(0.4, 0.8))
            if len(live) < 3:
                live.append(members("t", "-g", "g", env=env))
            if step % 2 == 0:
                victim = live.pop(rng.randrange(len(live)))
                if rng.random() < 0.5:
                    mark_kill(victim)
                else:
                    assert victim.stop() == 0, victim.stderr()
    finally:
        stop.set()
        thread.join(10)
    wait_for(lambda: settled(data_dir, len(live)), 20, "the last members to catch up")
    for m in live:
        assert m.stop() == 0, m.stderr()

    holder: dict[str, tuple[str, int]] = {}
    killed: set[int] = set()
    generations: dict[int, dict[str, list[str]]] = {}
    acquires = 0
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        if rec["op"] == "kill":
            killed.add(rec["pid"])
        elif rec["op"] == "acquire":
            prev = holder.get(rec["tp"])
            assert prev is None or prev[1] in killed, (
                f"{rec['tp']} taken by {rec['member']} while {prev[0]} (pid {prev[1]}) still held it")
            holder[rec["tp"]] = (rec["member"], rec["pid"])
            acquires += 1
        elif rec["op"] == "release":
            assert holder.get(rec["tp"], ("", 0))[0] == rec["member"], f"{rec} released what it did not hold"
            holder.pop(rec["tp"])
        elif rec["op"] == "rebalance":
            owned = [tp for parts in rec["assignment"].values() for tp in parts]
            assert len(owned) == len(set(owned)), f"generation {rec['generation']} assigns a partition twice"
            generations[rec["generation"]] = rec["assignment"]
    assert acquires >= 8 and len(generations) >= 8
    assert sorted(generations) == list(range(1, max(generations) + 1))
    got = set()
    for path in tmp_path.glob("m*.out"):
        got.update(line.split(":", 2)[2] for line in path.read_text().splitlines() if line)
    assert set(produced) <= got, f"{len(set(produced) - got)} records never consumed"


# -- offsets ------------------------------------------------------------------------------------


def test_members_resume_from_committed_offsets(make_cluster, data_dir, kctl, members):
    c = make_cluster()
    c.create_topic("t", 3)
    values = [f"v{i}" for i in range(30)]
    produce(data_dir, "t", values)

    def consume(*args: str) -> list[str]:
        res = kctl("consume", "t", "-g", "g", "-f", FORMAT, *args)
        assert res.returncode == 0, res.stderr
        return [line.split(":", 2)[2] for line in res.stdout.decode().splitlines()]

    head = consume("-n", "10")
    assert len(head) == 10
    rest = consume("-e")
    assert sorted(head + rest) == sorted(values), "the second run starts where the first committed"
    doc = describe(data_dir)
    assert doc["total_lag"] == 0
    assert all(p["current_offset"] == p["log_end_offset"] for p in doc["partitions"])
    assert consume("-e") == []
    assert sorted(consume("-e", "-o", "beginning")) == sorted(values)  # -o overrides the committed offset

    # --reset latest: a new group starts at the end, and commits that position
    assert kctl("consume", "t", "-g", "late", "--reset", "latest", "-e").stdout == b""
    produce(data_dir, "t", ["new1", "new2"])
    res = kctl("consume", "t", "-g", "late", "-e")
    assert sorted(res.stdout.split()) == [b"new1", b"new2"]

    # a member with -e that gets more partitions later still commits and stops at the end
    a = members("t", "-g", "g2", "-e")
    assert a.proc.wait(20) == 0, a.stderr()
    assert sorted(a.values()) == sorted([*values, "new1", "new2"])
    assert describe(data_dir, "g2")["total_lag"] == 0


def test_reset_offsets_each_mode_and_refusal_while_live(make_cluster, data_dir, kctl, members):
    c = make_cluster()
    c.create_topic("r", 1)
    produce(data_dir, "r", [f"a{i}" for i in range(10)])
    time.sleep(0.05)
    middle = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.05)
    produce(data_dir, "r", [f"b{i}" for i in range(10)])
    assert kctl("consume", "r", "-g", "g", "-e").returncode == 0

    def committed() -> int:
        return describe(data_dir)["partitions"][0]["current_offset"]

    def reset(*args: str, execute: bool = True) -> dict[str, Any]:
        res = kctl("-o", "json", "group", "reset-offsets", "g", "--topic", "r", *args,
                   *(["--execute"] if execute else []))
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    assert committed() == 20
    dry = reset("--to-earliest", execute=False)
    assert dry == {"group": "g", "mode": "to-earliest", "executed": False,
                   "partitions": [{"topic": "r", "partition": 0, "current_offset": 20, "new_offset": 0}]}
    assert committed() == 20, "a dry run changes nothing"
    assert reset("--to-offset", "5") == {**dry, "mode": "to-offset", "executed": True, "partitions": [
        {"topic": "r", "partition": 0, "current_offset": 20, "new_offset": 5}]}
    assert committed() == 5
    admin = GroupAdmin(data_dir)
    cases = [
        ("to-earliest", None, 0),
        ("to-latest", None, 20),
        ("to-offset", 5, 5),
        ("to-offset", 999, 20),  # clamped to the high watermark
        ("shift-by", -3, 17),
        ("shift-by", -100, 0),  # clamped to the log start
        ("shift-by", 4, 4),
        ("to-datetime", parse_datetime_ms(middle), 10),
        ("by-duration", 3_600_000, 0),
        ("by-duration", 1, 20),
    ]
    for mode, value, expected in cases:
        plan = admin.reset_offsets("g", [("r", None)], mode, value, execute=True)
        assert [r["new_offset"] for r in plan] == [expected], (mode, value)
        assert committed() == expected, (mode, value)
    assert len(group_events(data_dir, "offsets_reset")) == len(cases) + 1
    assert reset("--to-datetime", middle)["partitions"][0]["new_offset"] == 10
    assert reset("--by-duration", "PT1H")["partitions"][0]["new_offset"] == 0
    reset("--to-offset", "15")
    res = kctl("consume", "r", "-g", "g", "-e")
    assert res.stdout.split() == [f"b{i}".encode() for i in range(5, 10)], "the group resumes from the reset"

    # plain output: a header and one row
    plain = kctl("group", "reset-offsets", "g", "--topic", "r:0", "--to-earliest")
    assert plain.returncode == 0
    assert plain.stdout.decode().splitlines() == ["GROUP\tTOPIC\tPARTITION\tCURRENT-OFFSET\tNEW-OFFSET",
                                                  "g\tr\t0\t20\t0"]
    assert b"Dry run" in plain.stderr
    bad = kctl("group", "reset-offsets", "g", "--topic", "r", "--to-earliest", "--to-latest")
    assert bad.returncode == 2 and bad.stderr.startswith(b"kctl: error:")

    # refused while a member lives
    m = members("r", "-g", "g")
    wait_for(lambda: settled(data_dir, 1), 20, "the member")
    res = kctl("group", "reset-offsets", "g", "--topic", "r", "--to-earliest", "--execute")
    assert res.returncode == 1 and b"live member" in res.stderr and str(m.pid).encode() in res.stderr
    res = kctl("group", "delete", "g")
    assert res.returncode == 1 and b"live member" in res.stderr
    assert committed() == 20
    assert m.stop() == 0
    listed = json.loads(kctl("-o", "json", "group", "list").stdout)["groups"]
    assert [(g["group"], g["state"], g["members"]) for g in listed] == [("g", "Empty", 0)]
    assert kctl("group", "delete", "g").returncode == 0
    assert json.loads(kctl("-o", "json", "group", "list").stdout) == {"groups": []}
    res = kctl("group", "describe", "g")
    assert res.returncode == 1 and b"does not exist" in res.stderr
    assert group_events(data_dir, "group_deleted")[-1]["group"] == "g"


# -- failures elsewhere ---------------------------------------------------------------------------


def test_broker_failure_causes_no_rebalance_and_consumers_continue(make_cluster, data_dir, members):
    c = make_cluster()
    c.create_topic("t", 4)
    first = [f"a{i}" for i in range(40)]
    produce(data_dir, "t", first)
    ms = [members("t", "-g", "g") for _ in range(2)]
    before = wait_for(lambda: settled(data_dir, 2), 20, "2 stable members")
    leader = c.metadata().topics["t"].partitions[0].leader
    c.kill_broker(leader)
    wait_for(lambda: c.metadata().topics["t"].partitions[0].leader not in (None, leader), 15, "a new leader")
    second = [f"b{i}" for i in range(40)]
    produce(data_dir, "t", second)
    after = wait_for(lambda: settled(data_dir, 2), 20, "consumers to continue on the new leaders")
    assert after["generation"] == before["generation"], "a broker failure must not rebalance the group"
    assert assignment_of(after) == assignment_of(before)
    for m in ms:
        assert m.stop() == 0, m.stderr()
    got = Counter(v for m in ms for v in m.values())
    assert set(got) == set(first + second)
    assert max(got.values()) == 1


def test_hung_member_is_dropped_after_the_session_timeout_then_rejoins(make_cluster, data_dir, members):
    c = make_cluster()
    c.create_topic("t", 4)
    ms = [members("t", "-g", "g") for _ in range(2)]
    before = wait_for(lambda: settled(data_dir, 2), 20, "2 stable members")
    hung = ms[1]
    t0 = time.monotonic()
    os.kill(hung.pid, signal.SIGSTOP)
    try:
        doc = wait_for(lambda: (d := describe(data_dir)) and len(d["members"]) == 1 and d, 10, "the expulsion")
        took = time.monotonic() - t0
        assert took >= 2.5, f"expelled after {took:.2f}s, before the 3 s session timeout"
        assert doc["generation"] == before["generation"] + 1
        died = group_events(data_dir, "group_member_died")
        assert died[-1]["pid"] == hung.pid and "session timeout" in died[-1]["reason"]
        # the hung process still holds its partitions: nobody reads them twice meanwhile
        assert doc["state"] == "CompletingRebalance"
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    doc = wait_for(lambda: settled(data_dir, 2), 20, "the hung member to rejoin")
    assert {m["pid"] for m in doc["members"]} == {m.pid for m in ms}
    assert_disjoint_cover(doc, "t", 4)
    produce(data_dir, "t", [f"x{i}" for i in range(20)])
    wait_for(lambda: settled(data_dir, 2), 20, "the records consumed")
    for m in ms:
        assert m.stop() == 0, m.stderr()
    assert {v for m in ms for v in m.values()} == {f"x{i}" for i in range(20)}
    assert "removed from group g" in hung.stderr()


def test_static_member_restart_gets_its_partitions_back_and_idle_members_show(make_cluster, data_dir, kctl,
                                                                              members):
    c = make_cluster()
    c.create_topic("t", 2)
    static = members("t", "-g", "g", "--instance-id", "s1", name="static")
    dynamic = members("t", "-g", "g", name="dynamic")
    before = wait_for(lambda: settled(data_dir, 2), 20, "2 stable members")
    static_parts = next(m for m in before["members"] if m["instance_id"] == "s1")["assignment"]
    static.kill()
    time.sleep(0.5)
    doc = describe(data_dir)
    assert doc["generation"] == before["generation"] and len(doc["members"]) == 2
    assert next(m for m in doc["members"] if m["instance_id"] == "s1")["status"] == "away"
    again = members("t", "-g", "g", "--instance-id", "s1", name="static2")
    after = wait_for(lambda: settled(data_dir, 2), 20, "the static member back")
    assert after["generation"] == before["generation"], "a static restart moves nobody"
    back = next(m for m in after["members"] if m["instance_id"] == "s1")
    assert back["pid"] == again.pid and back["assignment"] == static_parts
    assert assignment_of(after) != assignment_of(before)  # new member id, same partitions
    rebalances = len(group_events(data_dir, "group_rebalance"))

    # a third member on a 2-partition topic stays idle, and describe shows it
    idle = members("t", "-g", "g", name="idle")
    doc = wait_for(lambda: settled(data_dir, 3), 20, "3 stable members")
    assert len(group_events(data_dir, "group_rebalance")) == rebalances + 1
    assert sorted(len(m["assignment"]) for m in doc["members"]) == [0, 1, 1]
    res = kctl("group", "describe", "g")
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "GROUP\tTOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tCONSUMER-ID\tHOST\tCLIENT-ID"
    idle_rows = [line for line in lines[1:] if line.split("\t")[1] == "-"]
    assert len(idle_rows) == 1 and len(lines) == 4
    res = kctl("group", "describe", "g", "--members")
    assert res.returncode == 0 and len(res.stdout.decode().splitlines()) == 4
    for m in (again, dynamic, idle):
        assert m.stop() == 0, m.stderr()
