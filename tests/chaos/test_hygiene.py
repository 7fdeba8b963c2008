"""Process hygiene: start/stop/kill cycles leave no orphan process and never replace a lock file;
``kctl broker kill`` signals only the process that holds the broker's lock.

CI runs a bounded number of cycles (``HYGIENE_CYCLES``, default 10); ``-m slow`` runs 100.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.chaos.runner import lock_inodes
from tests.conftest import run_kctl

pytestmark = pytest.mark.e2e

CI_CYCLES = int(os.environ.get("HYGIENE_CYCLES", "10"))


def live_processes(data_dir: str) -> list[tuple[int, str]]:
    """(pid, state) of every process, not a zombie, whose command line names ``data_dir``."""
    out = []
    needle = data_dir.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmd and state not in ("Z", "X"):
            out.append((int(entry), state))
    return out


def held_locks_under(root: str) -> list[str]:
    """Files under ``root`` that some process holds an flock on (from /proc/locks)."""
    inodes: dict[tuple[int, int, int], str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".lock"):
                st = os.stat(os.path.join(dirpath, name))
                inodes[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = os.path.join(dirpath, name)
    held = []
    with open("/proc/locks", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6 or parts[1] != "FLOCK":
                continue
            try:
                major, minor, ino = parts[5].split(":")
                key = (int(major, 16), int(minor, 16), int(ino))
            except ValueError:
                continue
            if key in inodes:
                held.append(inodes[key])
    return held


def wait_gone(data_dir: str, timeout: float = 10.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = live_processes(data_dir)
        if not left:
            return []
        time.sleep(0.05)
    return live_processes(data_dir)


def run_cycles(cluster, cycles: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Start the cluster and take it down again, ``cycles`` times, four ways in turn."""
    root = cluster.layout.root
    cluster.start(timeout=60)
    cluster.create_topic("hyg", 2, 3, {"min.insync.replicas": 2})
    from kctl.client.producer import produce

    produce(root, "hyg", [b"x"] * 10)
    inodes = lock_inodes(root)
    assert {"controller.lock", "metadata/metadata.lock"} <= set(inodes), inodes
    ways = {"stop": 0, "kill-all": 0, "kill-controller-then-stop": 0, "kill-one-restart-stop": 0}
    for i in range(cycles):
        cluster.start(timeout=60)
        way = list(ways)[i % len(ways)]
        ways[way] += 1
        if way == "stop":
            cluster.stop(timeout=30)
        elif way == "kill-all":
            for b in cluster.broker_ids:
                cluster.kill_broker(b)
        elif way == "kill-controller-then-stop":
            ctrl = cluster.controller_id()
            assert ctrl is not None
            cluster.kill_broker(ctrl)
            cluster.stop(timeout=30)
        else:
            victim = cluster.broker_ids[i % 3]
            cluster.kill_broker(victim)
            cluster.start_broker(victim, timeout=30)
            cluster.stop(timeout=30)
        left = wait_gone(root)
        assert not left, f"cycle {i} ({way}): processes left running: {left}"
        assert not held_locks_under(root), f"cycle {i} ({way}): locks still held: {held_locks_under(root)}"
        now = lock_inodes(root)
        replaced = {k for k, ino in inodes.items() if now.get(k) != ino}
        assert not replaced, f"cycle {i} ({way}): lock files removed or replaced: {replaced}"
        inodes.update(now)  # lock files that appeared since (append locks of new replicas) are kept too
    return ways


def test_start_stop_kill_cycles(make_cluster) -> None:
    c = make_cluster(brokers=3, start=False)
    ways = run_cycles(c, CI_CYCLES)
    assert sum(ways.values()) == CI_CYCLES


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_start_stop_kill_cycles_long(make_cluster) -> None:
    c = make_cluster(brokers=3, start=False)
    ways = run_cycles(c, 100)
    assert min(ways.values()) == 25


# -- signalling only the broker ---------------------------------------------------------------------------
@pytest.fixture
def dummy():  # type: ignore[no-untyped-def]
    """A sleeping process of ours that is not a broker."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


def test_kill_refuses_a_stopped_broker_whose_lock_names_another_pid(make_cluster, data_dir, dummy) -> None:
    c = make_cluster(brokers=3)
    c.stop_broker(0)
    with open(c.layout.broker_lock(0), "w") as f:
        f.write(f"{dummy.pid} 0.0\n")
    r = run_kctl(data_dir, "broker", "kill", "0")
    assert r.returncode == 1, r
    assert r.stderr.decode().startswith("kctl: error: broker 0 is not running")
    time.sleep(0.1)
    assert dummy.poll() is None, "the process named in the lock file was killed"


def test_kill_signals_the_lock_holder_not_the_pid_in_the_file(make_cluster, data_dir, dummy) -> None:
    c = make_cluster(brokers=3)
    real = c.status()["brokers"][1].pid
    with open(c.layout.broker_lock(1), "r+") as f:  # rewrite the content; the broker keeps its flock
        f.write(f"{dummy.pid} 0.0\n")
    r = run_kctl(data_dir, "broker", "kill", "1")
    assert r.returncode == 0, r
    time.sleep(0.1)
    assert dummy.poll() is None, "kctl broker kill signalled the PID written in the lock file"
    assert not c.broker_alive(1)
    assert real is not None and str(real) in r.stderr.decode() + r.stdout.decode()


def test_signal_broker_through_the_api_checks_the_holder(make_cluster, dummy) -> None:
    """``signal_broker`` (SIGSTOP/SIGCONT in the nemesis) goes through the same proof."""
    from kctl.errors import BrokerError

    c = make_cluster(brokers=3)
    c.stop_broker(2)
    with open(c.layout.broker_lock(2), "w") as f:
        f.write(f"{dummy.pid} 0.0\n")
    with pytest.raises(BrokerError):
        c.signal_broker(2, signal.SIGSTOP)
    with open(f"/proc/{dummy.pid}/stat") as f:
        assert f.read().rsplit(")", 1)[-1].split()[0] != "T", "the dummy was stopped"


def test_kill_refuses_a_lock_holder_that_is_not_a_broker(make_cluster, data_dir) -> None:
    c = make_cluster(brokers=3)
    c.stop_broker(0)
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.pwrite(fd, (str(os.getpid()) + ' 0\\n').encode(), 0)\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n")
    impostor = subprocess.Popen([sys.executable, "-c", code, c.layout.broker_lock(0)], stdout=subprocess.PIPE)
    try:
        assert impostor.stdout is not None and impostor.stdout.readline().strip() == b"held"
        r = run_kctl(data_dir, "broker", "kill", "0")
        time.sleep(0.1)
        assert impostor.poll() is None, "a process that is not a broker was killed"
        assert r.returncode == 1
    finally:
        impostor.kill()
        impostor.wait()
