"""Failover latency and idle cost of a real local cluster.

1. Failover: SIGKILL the leader of a partition and time until the metadata names a new leader
   for every partition it led (what a producer or consumer waits for). The victim is restarted
   and the ISR allowed to fill again before the next kill. Reports median, p99 and max.
2. Idle CPU: the sum of user and system CPU time of every broker process of an idle cluster over
   a window, from /proc/<pid>/stat, as a share of one core.

    python benchmarks/bench_failover.py --kills 20 --idle-seconds 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kctl.client.admin import Cluster
from kctl.cluster.locks import lock_holder_pids
from kctl.cluster.process import broker_pid
from kctl.cluster.watch import IN_MOVED_TO, ChangeWatcher


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields after the command: state is index 0, so utime/stime (14th/15th overall) are 11/12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_full_isr(c: Cluster, topic: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = c.metadata().topic(topic).partitions
        if all(p.leader is not None and sorted(p.isr) == sorted(p.replicas) for p in parts):
            return
        time.sleep(0.01)
    raise SystemExit(f"the ISR of {topic} did not fill again within {timeout:g}s")


def kill_leader_once(c: Cluster, topic: str, watcher: ChangeWatcher) -> tuple[float, int, bool]:
    """SIGKILL the leader of partition 0; seconds until every partition it led has a new leader
    (and whether the victim was the controller too, so that a standby had to take over first)."""
    md = c.metadata()
    was_controller = c.controller_id() == md.topic(topic).partitions[0].leader
    victim = md.topic(topic).partitions[0].leader
    assert victim is not None
    led = [i for i, p in enumerate(md.topic(topic).partitions) if p.leader == victim]
    pid = broker_pid(c.layout, victim)
    assert pid is not None and pid in lock_holder_pids(c.layout.broker_lock(victim))
    pidfd = os.pidfd_open(pid)
    try:
        watcher.drain()
        start = time.perf_counter()
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        while True:
            parts = c.store.load().topic(topic).partitions
            if all(parts[i].leader not in (None, victim) for i in led):
                elapsed = time.perf_counter() - start
                break
            if time.perf_counter() - start > 30:
                raise SystemExit("no new leader within 30 s")
            watcher.wait(0.05)
    finally:
        os.close(pidfd)
    return elapsed, victim, was_controller


def bench_failover(c: Cluster, topic: str, kills: int) -> list[float]:
    watcher = ChangeWatcher()
    watcher.watch(c.layout.metadata_dir, IN_MOVED_TO)
    latencies = []
    try:
        for i in range(kills):
            wait_full_isr(c, topic)
            time.sleep(0.2)  # let the followers settle into their idle wait
            elapsed, victim, was_controller = kill_leader_once(c, topic, watcher)
            latencies.append(elapsed)
            role = "leader and controller" if was_controller else "leader"
            print(f"  kill {i + 1:2d}: broker {victim} ({role}) -> new leader in {elapsed * 1000:7.2f} ms",
                  flush=True)
            c.start_broker(victim)
    finally:
        watcher.close()
    return latencies


def bench_idle_cpu(c: Cluster, seconds: float) -> tuple[float, dict[int, float]]:
    pids = {b: broker_pid(c.layout, b) for b in c.broker_ids}
    if any(p is None for p in pids.values()):
        raise SystemExit("a broker is not running")
    before = {b: cpu_seconds(p) for b, p in pids.items() if p is not None}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    after = {b: cpu_seconds(p) for b, p in pids.items() if p is not None}
    per = {b: (after[b] - before[b]) / wall * 100 for b in before}
    return sum(per.values()), per


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the benchmark topic")
    parser.add_argument("--kills", type=int, default=20, help="leader kills to time (at least 20 for a p99)")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle CPU measurement window")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a cluster setting, e.g. broker.heartbeat.interval.ms=250 (repeatable)")
    parser.add_argument("--data-dir", help="where to create the cluster (default: a temporary directory)")
    parser.add_argument("--skip-failover", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args(argv)
    settings = dict(pair.split("=", 1) for pair in args.set)

    root = args.data_dir or tempfile.mkdtemp(prefix="kctl-bench-")
    data_dir = os.path.join(root, "cluster")
    c = Cluster.init(data_dir, brokers=args.brokers, settings=settings)
    print(f"cluster of {args.brokers} brokers in {data_dir}; settings {settings or 'defaults'}")
    try:
        c.start()
        c.create_topic("bench", args.partitions, min(3, args.brokers))
        wait_full_isr(c, "bench")
        ok = True
        if not args.skip_idle:
            time.sleep(1.0)
            total, per = bench_idle_cpu(c, args.idle_seconds)
            shares = ", ".join(f"broker {b} {v:.2f}%" for b, v in per.items())
            print(f"idle CPU over {args.idle_seconds:g} s: {total:.2f}% of one core ({shares}); target < 2%")
            ok &= total < 2.0
        if not args.skip_failover:
            lat = bench_failover(c, "bench", args.kills)
            med, p99 = statistics.median(lat) * 1000, percentile(lat, 99) * 1000
            print(f"failover over {len(lat)} kills: median {med:.2f} ms, p99 {p99:.2f} ms, "
                  f"max {max(lat) * 1000:.2f} ms, min {min(lat) * 1000:.2f} ms; target median < 50, p99 < 200")
            ok &= med < 50 and p99 < 200
        print("targets met" if ok else "TARGETS MISSED")
        return 0 if ok else 1
    finally:
        try:
            c.stop(timeout=10)
        except Exception:
            for b in c.broker_ids:
                try:
                    c.kill_broker(b)
                except Exception:
                    pass
        if not args.data_dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
