"""Consumer group rebalance latency, measured on real ``kctl consume -g`` processes.

Two figures, each the median (and spread) over ``--runs`` repetitions:

* **join**: a second member joins a group whose only member reads every partition. Measured from
  the join's new generation (written to ``group.json``) until the newcomer holds the ownership
  lock of every partition assigned to it, i.e. both members are consuming. The first member
  keeps reading its other partitions meanwhile.
* **crash**: the second member is SIGKILLed. Measured from just before the kill until the
  survivor holds every partition the dead member had (death noticed through the freed member
  lock, new generation written, partitions taken, committed offsets read).

Timestamps come from ``KCTL_GROUP_TRACE`` (one monotonic clock for every process on the machine).
Python start-up of the joining process is not counted: the clock starts at the join itself.

    .venv/bin/python benchmarks/bench_rebalance.py --runs 12
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

KCTL = [sys.executable, "-m", "kctl"]


def _read_trace(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


class Bench:
    def __init__(self, root: str, partitions: int) -> None:
        self.data_dir = os.path.join(root, "cluster")
        self.trace = os.path.join(root, "trace.jsonl")
        self.partitions = partitions
        self.env = dict(os.environ, KCTL_GROUP_TRACE=self.trace)
        self.procs: list[subprocess.Popen[bytes]] = []

    def kctl(self, *args: str, input: bytes | None = None) -> None:
        subprocess.run([*KCTL, "--data-dir", self.data_dir, *args], input=input, check=True,
                       capture_output=True, timeout=120)

    def member(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*KCTL, "--data-dir", self.data_dir, "consume", "bench", "-g", "bench"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        self.procs.append(proc)
        return proc

    def owners(self, upto: int | None = None) -> dict[str, str]:
        """Who holds each partition according to the trace (acquire/release lines)."""
        held: dict[str, str] = {}
        for rec in _read_trace(self.trace)[:upto]:
            if rec["op"] == "acquire":
                held[rec["tp"]] = rec["member"]
            elif rec["op"] == "release" and held.get(rec["tp"]) == rec["member"]:
                held.pop(rec["tp"])
        return held

    def setup(self) -> None:
        from kctl.client.admin import Cluster

        Cluster.init(self.data_dir, brokers=3).start(timeout=60)
        self.kctl("topic", "create", "bench", "-p", str(self.partitions))
        self.kctl("produce", "bench", input=b"".join(b"%d\n" % i for i in range(1000)))

    def join_once(self) -> tuple[float, subprocess.Popen[bytes]]:
        start_len = len(_read_trace(self.trace))
        old = set(self.owners().values())
        proc = self.member()

        def joined() -> Any:
            recs = _read_trace(self.trace)[start_len:]
            for rec in recs:
                if rec["op"] == "rebalance" and "member joined" in rec["reason"]:
                    return rec
            return None

        reb = _wait(joined, 30, "the join")
        newcomer = next(m for m in reb["assignment"] if m not in old)
        wanted = set(reb["assignment"][newcomer])

        def settled() -> Any:
            recs = _read_trace(self.trace)
            got = {r["tp"]: r["t"] for r in recs if r["op"] == "acquire" and r["member"] == newcomer
                   and r["generation"] == reb["generation"]}
            return max(got.values()) if wanted and set(got) >= wanted else None

        done = _wait(settled, 30, "the newcomer's partitions")
        return done - reb["t"], proc

    def kill_once(self, proc: subprocess.Popen[bytes]) -> float:
        held = self.owners()
        victim = None
        for rec in _read_trace(self.trace):
            if rec["op"] == "acquire" and rec["pid"] == proc.pid:
                victim = rec["member"]
        if victim is None:
            raise RuntimeError("the second member holds nothing")
        moved = {tp for tp, m in held.items() if m == victim}
        start_len = len(_read_trace(self.trace))
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        def taken() -> Any:
            recs = _read_trace(self.trace)[start_len:]
            got = {r["tp"]: r["t"] for r in recs if r["op"] == "acquire" and r["tp"] in moved}
            return max(got.values()) if set(got) >= moved else None

        return _wait(taken, 30, "the takeover") - t0

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run([*KCTL, "--data-dir", self.data_dir, "cluster", "stop"], capture_output=True, timeout=120)


def _summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return (f"{name:<6} median {statistics.median(ms):7.1f} ms   min {ms[0]:6.1f}   p90 {p90:6.1f}   "
            f"max {ms[-1]:6.1f}   ({len(ms)} runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kctl-bench-rebalance-") as root:
        bench = Bench(root, args.partitions)
        joins: list[float] = []
        kills: list[float] = []
        try:
            bench.setup()
            bench.member()
            _wait(lambda: len(bench.owners()) == args.partitions, 30, "the first member")
            for _ in range(args.runs):
                latency, proc = bench.join_once()
                joins.append(latency)
                time.sleep(0.2)  # let the pair settle (commits, heartbeats) before the crash
                kills.append(bench.kill_once(proc))
                _wait(lambda: len(bench.owners()) == args.partitions, 30, "a settled group")
                time.sleep(0.1)
        finally:
            bench.close()
    if args.json:
        print(json.dumps({"join_ms": [round(v * 1000, 2) for v in joins],
                          "crash_ms": [round(v * 1000, 2) for v in kills],
                          "join_median_ms": round(statistics.median(joins) * 1000, 2),
                          "crash_median_ms": round(statistics.median(kills) * 1000, 2)}))
    else:
        print(f"rebalance latency, {args.partitions} partitions, range assignor, 2 members")
        print(_summary("join", joins))
        print(_summary("crash", kills))
    return 0


if __name__ == "__main__":
    sys.exit(main())
