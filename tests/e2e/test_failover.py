"""Broker and controller failures with real processes: SIGKILL, SIGSTOP, all-but-one down.

Every test checks the promise that matters: an acknowledged record is never lost nor duplicated,
and once the failed broker is back every replica ends byte-identical.
"""

from __future__ import annotations

import signal

import pytest

from tests.e2e.test_replication_support import (
    BackgroundProducer,
    assert_acked_once_in_order,
    partition_state,
    read_partition,
    replica_log_bytes,
    wait_converged,
    wait_until,
)

pytestmark = pytest.mark.e2e


def assert_replicas_identical(cluster, topic: str, p: int = 0) -> bytes:
    part = wait_converged(cluster, topic, p)
    logs = {b: replica_log_bytes(cluster, b, topic, p) for b in part.replicas}
    first = logs[part.leader]
    for b, data in logs.items():
        assert data == first, f"replica on broker {b} differs from the leader's ({len(data)} vs {len(first)} bytes)"
    return first


def test_kill_leader_during_acks_all_loses_nothing(make_cluster, data_dir):
    c = make_cluster(brokers=3)
    c.create_topic("pay", 1, 3, {"min.insync.replicas": 2})
    before = partition_state(c, "pay")
    victim = before.leader
    assert victim is not None

    prod = BackgroundProducer(data_dir, "pay", chunk=10)
    prod.start()
    try:
        prod.wait_acked(300)
        c.kill_broker(victim)
        after = wait_until(lambda: (s := partition_state(c, "pay")).leader not in (None, victim) and s,
                           5, "a new leader")
        prod.wait_acked(prod.acked_count + 300)
    finally:
        prod.stop()
    assert prod.failed == 0, prod.errors
    assert after.leader in before.isr
    assert after.leader_epoch > before.leader_epoch
    assert victim not in after.isr
    wait_until(lambda: any(e["type"] == "broker_down" and e["broker"] == victim for e in c.events()), 2,
               "the death in the history")

    log = read_partition(c, "pay")
    assert_acked_once_in_order(log, prod)
    assert len(log) >= prod.acked_count

    # the victim comes back: it truncates what it alone had, catches up and rejoins the ISR
    c.start_broker(victim)
    data = assert_replicas_identical(c, "pay")
    assert data, "the log is empty"
    assert read_partition(c, "pay") == log


def test_restarted_leader_truncates_unreplicated_suffix(make_cluster, data_dir):
    from kctl.client.producer import produce

    c = make_cluster(brokers=3)
    c.create_topic("trunc", 1, 3)
    assert all(r.error is None for r in produce(data_dir, "trunc", [f"a{i}".encode() for i in range(100)]))
    part = wait_converged(c, "trunc")
    victim = part.leader
    followers = [b for b in part.replicas if b != victim]
    # freeze the followers for a moment: what the leader takes now (acks=1) only it will have
    for b in followers:
        c.signal_broker(b, signal.SIGSTOP)
    try:
        reports = produce(data_dir, "trunc", [f"lost{i}".encode() for i in range(50)], acks="1")
        assert all(r.error is None for r in reports)
        c.kill_broker(victim)
    finally:
        for b in followers:
            c.signal_broker(b, signal.SIGCONT)
    new = wait_until(lambda: (s := partition_state(c, "trunc")).leader in followers and s, 5, "a new leader")
    assert new.leader_epoch > part.leader_epoch
    assert all(r.error is None for r in produce(data_dir, "trunc", [f"b{i}".encode() for i in range(20)]))

    c.start_broker(victim)
    assert_replicas_identical(c, "trunc")
    values = [v for _o, v in read_partition(c, "trunc")]
    assert values == [f"a{i}".encode() for i in range(100)] + [f"b{i}".encode() for i in range(20)]
    with open(c.layout.broker_log(victim), encoding="utf-8") as f:
        assert "truncated trunc-0 from 150 to 100" in f.read()


def test_controller_death_hands_over_and_the_new_controller_still_works(make_cluster):
    c = make_cluster(brokers=3)
    c.create_topic("ctl", 3, 3)
    md = c.metadata()
    old_ctrl, old_epoch = md.controller_id, md.controller_epoch
    assert old_ctrl is not None and c.controller_id() == old_ctrl
    c.kill_broker(old_ctrl)
    new_ctrl = wait_until(lambda: (b := c.controller_id()) not in (None, old_ctrl) and (b,), 5,
                          "another controller")[0]
    md = wait_until(lambda: (m := c.metadata()).controller_id == new_ctrl and m, 5, "the metadata to name it")
    assert md.controller_epoch > old_epoch
    # the history shows the hand-over (events are appended just after the metadata is replaced)
    wait_until(lambda: any(e["type"] == "controller_elected" and e["broker"] == new_ctrl
                           and e["controller_epoch"] == md.controller_epoch and e["previous"] == old_ctrl
                           for e in c.events()), 2, "the controller_elected event")
    # the dead controller's leaderships moved too
    wait_until(lambda: all(p.leader not in (None, old_ctrl) and old_ctrl not in p.isr
                           for p in c.metadata().topic("ctl").partitions), 5, "leaders off the dead controller")

    # the new controller handles the next death
    other = next(b for b in c.broker_ids if b not in (old_ctrl, new_ctrl))
    c.kill_broker(other)
    wait_until(lambda: all(p.leader == new_ctrl and p.isr == [new_ctrl]
                           for p in c.metadata().topic("ctl").partitions), 5, "the survivor to lead everything")
    wait_until(lambda: any(e["type"] == "broker_down" and e["broker"] == other for e in c.events()), 2,
               "the second death in the history")
    assert c.controller_id() == new_ctrl

    c.start()
    for p in range(3):
        wait_converged(c, "ctl", p)


def test_min_insync_replicas_refuses_acks_all_but_not_acks_1(make_cluster, kctl):
    c = make_cluster(brokers=3)
    assert kctl("topic", "create", "mi", "-r", "3", "-c", "min.insync.replicas=2").returncode == 0
    leader = partition_state(c, "mi").leader
    for b in c.broker_ids:
        if b != leader:
            c.kill_broker(b)
    wait_until(lambda: partition_state(c, "mi").isr == [leader], 5, "the ISR to shrink to the survivor")

    res = kctl("produce", "mi", "--acks", "all", "--timeout", "1", "x")
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert err.count("kctl: error:") == 1 and err.startswith("kctl: error:"), err
    assert "NOT_ENOUGH_REPLICAS" in err and "Traceback" not in err

    ok = kctl("produce", "mi", "--acks", "1", "--print-offsets", "y")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [b"mi", b"0", b"0"]

    c.start()
    wait_converged(c, "mi")
    res = kctl("produce", "mi", "--acks", "all", "--timeout", "5", "--print-offsets", "z")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [b"mi", b"0", b"1"]
    assert [v for _o, v in read_partition(c, "mi")] == [b"y", b"z"]


def test_controlled_shutdown_moves_leadership_without_a_failed_append(make_cluster, kctl, data_dir):
    c = make_cluster(brokers=3)
    c.create_topic("cs", 1, 3, {"min.insync.replicas": 2})
    part = partition_state(c, "cs")
    preferred = part.replicas[0]
    assert part.leader == preferred

    prod = BackgroundProducer(data_dir, "cs", chunk=5)
    prod.start()
    try:
        prod.wait_acked(100)
        res = kctl("broker", "stop", str(preferred))
        assert res.returncode == 0, res.stderr
        moved = partition_state(c, "cs")
        assert moved.leader not in (None, preferred) and preferred not in moved.isr
        prod.wait_acked(prod.acked_count + 100)
        assert kctl("broker", "start", str(preferred)).returncode == 0
        wait_until(lambda: preferred in partition_state(c, "cs").isr, 10, "the restarted broker to rejoin")
        res = kctl("elect", "--type", "preferred", "cs")
        assert res.returncode == 0, res.stderr
        assert partition_state(c, "cs").leader == preferred
        prod.wait_acked(prod.acked_count + 100)
    finally:
        prod.stop()
    assert prod.failed == 0, prod.errors
    reasons = [e["reason"] for e in c.events() if e["type"] == "leader_changed" and e["topic"] == "cs"]
    assert reasons[-2:] == ["controlled_shutdown", "preferred"], reasons
    assert_acked_once_in_order(read_partition(c, "cs"), prod)
    assert_replicas_identical(c, "cs")


def test_sigstopped_leader_is_fenced_and_rejoins_without_damage(make_cluster, kctl, data_dir):
    c = make_cluster(brokers=3)
    c.create_topic("stp", 3, 3, {"min.insync.replicas": 2})
    # the victim leads a partition and is the controller too: a hung controller must be replaced
    victim = c.controller_id()
    md0 = c.metadata()
    p = next(i for i, part in enumerate(md0.topic("stp").partitions) if part.leader == victim)
    before = md0.topic("stp").partitions[p]
    prod = BackgroundProducer(data_dir, "stp", p, chunk=5)
    prod.start()
    stopped = False
    try:
        prod.wait_acked(100)
        c.signal_broker(victim, signal.SIGSTOP)
        stopped = True
        fenced = wait_until(lambda: (m := c.metadata()).brokers[victim].state == "fenced" and m, 8,
                            "the stopped broker to be fenced")
        assert fenced.controller_id != victim and fenced.controller_epoch > md0.controller_epoch
        after = wait_until(lambda: (s := partition_state(c, "stp", p)).leader not in (None, victim) and s, 2,
                           "a new leader")
        assert victim not in after.isr and after.leader_epoch > before.leader_epoch
        prod.wait_acked(prod.acked_count + 100)
        c.signal_broker(victim, signal.SIGCONT)
        stopped = False
        wait_until(lambda: (m := c.metadata()).brokers[victim].state == "up"
                   and m.brokers[victim].epoch > md0.brokers[victim].epoch, 5, "re-registration")
        prod.wait_acked(prod.acked_count + 100)
    finally:
        if stopped:
            c.signal_broker(victim, signal.SIGCONT)
        prod.stop()
    assert prod.failed == 0, prod.errors
    assert_replicas_identical(c, "stp", p)
    assert_acked_once_in_order(read_partition(c, "stp", p), prod)
    # exactly one live controller, named by the metadata
    ctrl = c.controller_id()
    assert ctrl is not None and c.metadata().controller_id == ctrl
    res = kctl("log", "verify")
    assert res.returncode == 0, res.stdout + res.stderr


def test_producer_keeps_send_order_across_a_leader_change(make_cluster, data_dir):
    """A batch sent after a leader change must not overtake an earlier one still unacknowledged
    on the old leader (Kafka's idempotent producer keeps order through retries)."""
    from kctl.client.producer import Producer

    c = make_cluster(brokers=2)
    c.create_topic("ord", 1, 2)
    part = partition_state(c, "ord")
    leader = part.leader
    follower = next(b for b in part.replicas if b != leader)
    c.signal_broker(follower, signal.SIGSTOP)  # keeps "first" unacknowledged on the leader
    frozen = True
    try:
        with Producer(data_dir, acks="all", timeout=10) as prod:
            prod.send("ord", b"first", partition=0)
            prod.seal_all()
            c.stop_broker(leader)  # controlled shutdown: the frozen follower, still in sync, leads
            assert partition_state(c, "ord").leader == follower
            prod.send("ord", b"second", partition=0)
            prod.seal_all()
            c.signal_broker(follower, signal.SIGCONT)
            frozen = False
        assert prod.failed == 0, prod.first_error
    finally:
        if frozen:
            c.signal_broker(follower, signal.SIGCONT)
    assert [v for _o, v in read_partition(c, "ord")] == [b"first", b"second"]
