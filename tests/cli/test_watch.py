"""``kctl watch``: the pure snapshot -> frame function, and the live loop across a broker kill."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from kctl.cli.cmd_watch import GroupView, PartitionView, WatchSnapshot, partition_health, render_snapshot
from kctl.client.admin import BrokerInfo
from tests.conftest import KCTL, run_kctl


def _text(renderable, width: int = 160) -> str:
    from rich.console import Console

    console = Console(record=True, width=width, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def _snapshot(live: set[int], parts: list[tuple[int | None, list[int], list[int]]], controller: int | None = 0,
              events: list[dict] | None = None, groups: list[GroupView] | None = None) -> WatchSnapshot:
    brokers = [BrokerInfo(b, "up" if b in live else "down", 100 + b if b in live else None, b == controller,
                          0, 0, 1) for b in range(3)]
    views = []
    for p, (leader, replicas, isr) in enumerate(parts):
        health, why = partition_health(replicas, isr, leader, live)
        views.append(PartitionView("orders", p, leader, replicas, isr, 1, 10 * p, 10 * p + 1, health, why))
    return WatchSnapshot("cid", controller, 4, brokers, views, groups, events or [], time.time())


def test_partition_health_explains_itself():
    assert partition_health([0, 1, 2], [0, 1, 2], 0, {0, 1, 2}) == ("ok", "")
    assert partition_health([0, 1, 2], [0, 2], 0, {0, 2}) == ("under-replicated", "ISR 2/3: broker 1 down")
    assert partition_health([0, 1, 2], [0, 2], 0, {0, 1, 2}) == ("under-replicated", "ISR 2/3: broker 1 catching up")
    assert partition_health([1, 2], [1], None, {0}) == ("offline", "offline: no live in-sync replica "
                                                                   "(replicas 1, 2 down)")
    assert partition_health([1, 2], [1], None, {2}) == ("offline", "offline: no live in-sync replica "
                                                                   "(replica 1 down; 2 not in ISR)")
    health, why = partition_health([1, 2, 0], [1, 2, 0], 1, {0, 2})
    assert health == "offline" and why == "offline: leader broker 1 down; next leader: broker 2"


def test_render_snapshot_shows_brokers_partitions_groups_and_events():
    from kctl.cli.cmd_ops import describe_event

    ev = {"time": "2026-01-02T03:04:05.678Z", "type": "leader_changed", "topic": "orders", "partition": 1,
          "old_leader": 1, "new_leader": 2, "leader_epoch": 3, "isr": [2, 0], "reason": "broker_failure"}
    snap = _snapshot({0, 2}, [(0, [0, 1, 2], [0, 2]), (2, [1, 2, 0], [2, 0]), (None, [1], [1])],
                     events=[ev], groups=[GroupView("billing", "Stable", 2, 7, {"orders": 7})])
    text = _text(render_snapshot(snap))
    assert "controller: broker 0 (epoch 4)" in text
    assert "brokers up 2/3" in text and "2 under-replicated" in text and "1 offline" in text
    broker_rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit() and len(line.split()) >= 5]
    assert ["0", "up", "100", "*", "controller", "0", "0", "1"] in broker_rows
    assert ["1", "down", "-", "0", "0", "1"] in broker_rows
    assert "ISR 2/3: broker 1 down" in text
    assert "offline: no live in-sync replica (replica 1 down)" in text
    assert "billing" in text and "Stable" in text and "orders=7" in text
    assert "03:04:05.678Z" in text and describe_event(ev) in text
    assert describe_event(ev) == "orders-1: leader 1 -> 2, leader epoch 3, ISR 2,0 (broker failure)"


def test_render_trims_healthy_partitions_first_on_a_short_screen():
    parts = [(0, [0, 1, 2], [0, 1, 2])] * 40 + [(0, [0, 1, 2], [0, 2])]
    text = _text(render_snapshot(_snapshot({0, 1, 2}, parts), height=24))
    assert "ISR 2/3: broker 1 catching up" in text  # the one unhealthy partition, listed last, is kept
    assert "more healthy partition(s)" in text
    assert "no controller" in _text(render_snapshot(_snapshot({0, 1, 2}, parts[:1], controller=None)))


def test_watch_refuses_without_a_terminal(cli, tmp_path):
    from kctl.client.admin import Cluster

    Cluster.init(tmp_path / "c", brokers=1)
    res = cli("--data-dir", str(tmp_path / "c"), "watch")  # stdout is captured: not a terminal
    assert res.code == 2 and res.out == ""
    assert res.err.startswith("kctl: error: ") and "kctl describe" in res.err and "kctl events --follow" in res.err
    assert cli("--data-dir", str(tmp_path / "none"), "watch", "--once").code == 3


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.e2e
def test_watch_live_across_a_broker_kill(make_cluster, data_dir):
    c = make_cluster(brokers=3)
    c.create_topic("orders", 3, 3, {"min.insync.replicas": 2})
    victim = c.partition("orders", 1).leader
    assert victim is not None

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 150, 0, 0))
    env = dict(os.environ, TERM="xterm-256color")
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen([*KCTL, "--data-dir", data_dir, "watch"], stdin=slave, stdout=slave, stderr=slave,
                            env=env, start_new_session=True, close_fds=True)
    os.close(slave)
    follower = subprocess.Popen([*KCTL, "--data-dir", data_dir, "-o", "json", "events", "--follow", "-n", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    screen = bytearray()

    def pump(until: float, stop_on: bytes | None = None, start: int = 0) -> bool:
        while time.monotonic() < until:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:
                    return False
            if stop_on is not None and stop_on in screen[start:]:
                return True
        return False

    try:
        assert pump(time.monotonic() + 15, b"Latest events"), screen[-500:]
        assert b"controller" in screen
        # idle: the view redraws but does not spin
        pump(time.monotonic() + 0.5)
        used = _cpu_seconds(proc.pid)
        pump(time.monotonic() + 1.5)
        used = _cpu_seconds(proc.pid) - used
        assert used < 0.75, f"watch used {used:.2f}s of CPU in 1.5s while idle (spinning?)"

        mark = len(screen)
        c.kill_broker(victim)
        killed = time.monotonic()
        assert pump(killed + 3, f"broker {victim} down".encode(), start=mark), screen[mark:][-800:]
        assert time.monotonic() - killed < 2.0  # within a few refreshes, even on a loaded machine
        assert pump(time.monotonic() + 3, b"leader_changed", start=mark)

        os.write(master, b"q")
        assert proc.wait(10) == 0
        follower.send_signal(signal.SIGINT)
        followed, _ = follower.communicate(timeout=10)
        assert follower.returncode == 0
    finally:
        for p in (proc, follower):
            if p.poll() is None:
                p.kill()
                p.wait(5)
        pump(time.monotonic() + 0.2)
        os.close(master)
    assert b"\x1b[?1049l" in screen  # left the alternate screen: the terminal is restored

    # events --follow printed the failure as it happened, as JSON Lines
    followed_events = [json.loads(line) for line in followed.decode().splitlines()]
    assert {"broker_down", "leader_changed", "isr_shrink"} <= {e["type"] for e in followed_events}
    assert not any(e["type"] == "cluster_created" for e in followed_events)  # -n 0: only new events

    # the same picture without a terminal, for scripts
    once = run_kctl(data_dir, "watch", "--once", env={"COLUMNS": "160"})
    assert once.returncode == 0, once.stderr
    text = once.stdout.decode()
    assert f"broker {victim} down" in text or f"ISR 2/3: broker {victim} down" in text
    assert "Latest events" in text and "q: quit" not in text
    doc = json.loads(run_kctl(data_dir, "-o", "json", "watch", "--once").stdout)
    assert [b["state"] for b in doc["brokers"]] == ["down" if b == victim else "up" for b in range(3)]
    p1 = next(p for p in doc["partitions"] if p["partition"] == 1)
    assert p1["leader"] != victim and p1["health"] == "under-replicated"
    assert p1["why"] == f"ISR 2/3: broker {victim} down"
    assert any(e["type"] == "broker_down" and e["broker"] == victim for e in doc["events"])

    # describe's filters and its table's STATUS column tell the same story
    urp = json.loads(run_kctl(data_dir, "-o", "json", "describe", "--under-replicated").stdout)
    assert [p["partition"] for p in urp["topics"][0]["partitions"]] == [0, 1, 2]
    assert all(victim not in p["isr"] for p in urp["topics"][0]["partitions"])
    assert json.loads(run_kctl(data_dir, "-o", "json", "describe", "--unavailable").stdout) == {"topics": []}
    table = run_kctl(data_dir, "-o", "table", "describe", "--under-replicated", env={"COLUMNS": "200"})
    assert table.stdout.decode().count(f"ISR 2/3: broker {victim} down") == 3
