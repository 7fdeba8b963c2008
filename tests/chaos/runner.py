"""Run one seeded chaos run and check it: ``python -m tests.chaos.runner --profile long --seed 7``.

A run:

1. creates a 3-broker cluster (RF 3, ``min.insync.replicas=2``, small segments so that recovery
   crosses segment boundaries) and its topics;
2. starts the workload (:mod:`tests.chaos.workload`): idempotent ``acks=all`` producers,
   assign-mode consumers and the members of one consumer group; a supervisor restarts any
   worker that dies (a new incarnation, with its own history file);
3. lets the nemesis (:mod:`tests.chaos.nemesis`) strike until the profile's duration has passed
   and at least its minimum number of faults were injected;
4. heals: resumes and starts every broker, waits for full ISRs with the high watermark at the
   log end, stops the workers cleanly, then drains every partition from the beginning with a
   fresh consumer;
5. stops the cluster, runs ``kctl log verify`` and compares every replica's bytes;
6. checks the merged history and the group ownership trace (:mod:`tests.chaos.checker`).

Every run prints its seed. The run directory (history, trace, worker logs, data directory,
``summary.json``) is kept under ``chaos-runs/<timestamp>-<seed>/`` when the run fails, or with
``--keep``. The runner needs no pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.chaos.checker import CheckResult, check
from tests.chaos.history import HistoryWriter, read_history, read_jsonl
from tests.chaos.nemesis import BROKER_FAULTS, REPO, Nemesis, Worker, Workers
from tests.procs import pids_naming

CHAOS_RUNS = os.path.join(REPO, "chaos-runs")

# Fast failure detection, as in tests/conftest.py (kept here: the runner does not need pytest).
FAST_SETTINGS = {
    "broker.session.timeout.ms": "2000",
    "broker.heartbeat.interval.ms": "250",
    "replica.lag.time.max.ms": "3000",
    "group.session.timeout.ms": "3000",
    "group.heartbeat.interval.ms": "250",
}


@dataclass(frozen=True)
class Profile:
    name: str
    duration: float  # seconds of faults (at least)
    min_faults: int
    gap: tuple[float, float]  # seconds between faults
    topics: int
    partitions: int
    producers: int
    consumers: int  # assign mode
    members: int  # group mode
    max_batch: int = 20
    pause: float = 0.01
    producer_timeout: float = 4.0
    segment_bytes: int = 64 * 1024
    min_acked: int = 0


PROFILES = {
    "smoke": Profile("smoke", duration=40, min_faults=22, gap=(0.3, 0.9), topics=2, partitions=2,
                     producers=2, consumers=1, members=2, max_batch=30, pause=0.08, min_acked=5000),
    "long": Profile("long", duration=300, min_faults=75, gap=(0.5, 2.0), topics=4, partitions=2,
                    producers=3, consumers=2, members=3, max_batch=30, pause=0.05, min_acked=20000),
}


@dataclass
class RunResult:
    seed: int
    profile: str
    run_dir: str
    kept: bool = False
    wall_seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    fault_total: int = 0
    errors: list[str] = field(default_factory=list)
    verify_exit: int | None = None
    verify_output: str = ""
    replicas_identical: bool = False
    worker_restarts: int = 0
    check: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.check.get("valid")) and not self.errors and self.verify_exit == 0 \
            and self.replicas_identical

    def stat(self, name: str) -> int:
        return int(self.check.get("stats", {}).get(name, 0))


def _now_tag() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _kill_leftovers(data_dir: str) -> list[int]:
    """SIGKILL every process whose command line names ``data_dir`` (all of them ours)."""
    found = pids_naming(os.path.abspath(data_dir))
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return found


def lock_inodes(root: str) -> dict[str, int]:
    """The inode of every lock file under ``root`` that must never be replaced while it may be
    held (group member locks are removed by design once released, so they are left out)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".lock") and f"{os.sep}members{os.sep}" not in path:
                try:
                    out[os.path.relpath(path, root)] = os.stat(path).st_ino
                except FileNotFoundError:
                    pass
    return out


def _partitions_healthy(cluster: Any, topics: list[str]) -> tuple[bool, str]:
    """Every partition led, with its full replica set in sync and the high watermark at the log end."""
    for t in cluster.describe(topics):
        for p in t["partitions"]:
            if p.leader is None:
                return False, f"{t['topic']}-{p.partition} has no leader"
            if sorted(p.isr) != sorted(p.replicas):
                return False, f"{t['topic']}-{p.partition} ISR {p.isr} of {p.replicas}"
            if p.high_watermark is None or p.high_watermark != p.log_end:
                return False, f"{t['topic']}-{p.partition} HW {p.high_watermark} LEO {p.log_end}"
    return True, "healthy"


def _wait_healthy(cluster: Any, topics: list[str], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        try:
            ok, why = _partitions_healthy(cluster, topics)
        except Exception as exc:  # a replica file mid-rename: look again
            ok, why = False, str(exc)
        if ok:
            return None
        time.sleep(0.1)
    return why


def _replica_bytes(directory: str) -> bytes:
    """Every published byte of a replica's segments, in offset order."""
    from kctl.storage.log import ReplicaStateFile
    from kctl.storage.segment import LogSegment, list_segment_bases

    sf = ReplicaStateFile(directory)
    try:
        st = sf.read_log_end()
    finally:
        sf.close()
    assert st is not None, f"{directory}: unreadable replica.state"
    out = bytearray()
    for base in list_segment_bases(directory):
        seg = LogSegment(directory, base)
        try:
            size = st.active_size if base == st.active_base_offset else seg.log_size()
            out += seg.read(0, size)
        finally:
            seg.close()
    return bytes(out)


def drain(data_dir: str, topics: list[str], h: HistoryWriter, timeout: float = 60.0) -> int:
    """Read every partition from the beginning to its high watermark; log it as the final read."""
    from kctl.client.consumer import Consumer
    from tests.chaos.workload import _reads

    count = 0
    c = Consumer(data_dir)
    try:
        tps = [(t, p) for t in topics for p in range(len(c.metadata().topic(t).partitions))]
        c.assign(dict.fromkeys(tps, 0))
        h.log("ok", "assign", positions=[[t, p, off] for (t, p), off in sorted(c.positions().items())])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = c.poll(0.2, values_only=True)
            if batches:
                reads = _reads(batches)
                count += sum(len(r[3]) for r in reads)
                h.log("ok", "poll", mode="drain", reads=reads)
            elif c.at_end():
                return count
        raise TimeoutError(f"the final drain did not reach the end within {timeout:g}s")
    finally:
        c.close()


def run(profile: Profile, seed: int, run_dir: str, *, log: Any = print) -> RunResult:
    """One chaos run in ``run_dir`` (created). Never raises for a finding: see the result."""
    from kctl.client.admin import Cluster

    started = time.monotonic()
    rng = random.Random(seed)
    res = RunResult(seed=seed, profile=profile.name, run_dir=run_dir)
    data_dir = os.path.join(run_dir, "data")
    hist_dir = os.path.join(run_dir, "history")
    log_dir = os.path.join(run_dir, "logs")
    for d in (hist_dir, log_dir):
        os.makedirs(d, exist_ok=True)
    trace_path = os.path.join(run_dir, "group-trace.jsonl")
    nh = HistoryWriter(os.path.join(hist_dir, "nemesis.jsonl"), "nemesis")
    rh = HistoryWriter(os.path.join(hist_dir, "runner.jsonl"), "runner")
    workers = Workers()
    stop = threading.Event()
    topics = [f"chaos{i}" for i in range(profile.topics)]
    log(f"chaos run: profile {profile.name}, seed {seed}, directory {run_dir}")
    cluster = Cluster.init(data_dir, brokers=3, settings=dict(FAST_SETTINGS))
    nemesis_thread: threading.Thread | None = None
    nemesis: Nemesis | None = None
    try:
        cluster.start(timeout=60)
        for t in topics:
            cluster.create_topic(t, profile.partitions, 3,
                                 {"min.insync.replicas": 2, "segment.bytes": profile.segment_bytes})
        err = _wait_healthy(cluster, topics, 30)
        if err:
            res.errors.append(f"the new cluster never became healthy: {err}")
            return res
        env = dict(os.environ, KCTL_GROUP_TRACE=trace_path, PYTHONPATH=REPO)
        env.pop("KCTL_DEBUG", None)
        common = ["--data-dir", data_dir, "--topics", ",".join(topics)]
        for i in range(profile.producers):
            workers.all.append(Worker("producer", f"p{i}", [*common, "--max-batch", str(profile.max_batch),
                                                            "--pause", str(profile.pause),
                                                            "--timeout", str(profile.producer_timeout)],
                                      hist_dir, log_dir, env, seed * 10 + i))
        for i in range(profile.consumers):
            workers.all.append(Worker("consumer", f"c{i}", common, hist_dir, log_dir, env, seed * 10 + 5 + i))
        for i in range(profile.members):
            workers.all.append(Worker("group", f"g{i}", [*common, "--group", "chaos"], hist_dir, log_dir, env,
                                      seed * 10 + 7 + i))
        with workers.lock:
            for w in workers.all:
                w.start()
        time.sleep(1.0)  # let the workload get going (and take its locks) before the first fault
        locks_before = lock_inodes(data_dir)

        nemesis = Nemesis(cluster, workers, nh, rng, topics,
                          session_timeout_s=int(FAST_SETTINGS["broker.session.timeout.ms"]) / 1000.0,
                          producer_timeout_s=profile.producer_timeout,
                          group_session_timeout_s=int(FAST_SETTINGS["group.session.timeout.ms"]) / 1000.0)
        chaos_end = time.monotonic() + profile.duration
        hard_end = time.monotonic() + profile.duration * 1.6
        first = list(BROKER_FAULTS)
        rng.shuffle(first)

        def enough() -> bool:
            now = time.monotonic()
            return now >= hard_end or (now >= chaos_end and sum(nemesis.faults.values()) >= profile.min_faults)

        nemesis_thread = threading.Thread(target=nemesis.run, args=(stop, enough, profile.gap, first), daemon=True)
        nemesis_thread.start()
        # the supervisor: restart any worker that died (killed, crashed or armed to crash)
        while nemesis_thread.is_alive():
            with workers.lock:
                for w in workers.all:
                    if w.proc is not None and not w.alive():
                        rh.log("info", "reaped", pid=w.pid, victim=w.name, code=w.proc.returncode)
                        res.worker_restarts += 1
                        w.start()
            nemesis_thread.join(0.1)
        res.faults = dict(nemesis.faults)
        res.fault_total = sum(nemesis.faults.values())
        res.errors.extend(nemesis.errors)
        log(f"faults injected: {res.fault_total} {res.faults}")

        # -- heal ---------------------------------------------------------------------------------------
        rh.log("info", "heal")
        nemesis.resume_all()
        try:
            cluster.start(timeout=60)
        except Exception as exc:
            res.errors.append(f"heal: the cluster did not start: {exc}")
        err = _wait_healthy(cluster, topics, 60)
        if err:
            res.errors.append(f"heal: partitions not healthy after 60 s: {err}")
        with workers.lock:  # producers first, so that everything they were told is final
            for role in ("producer", "consumer", "group"):
                for w in workers.of(role):
                    code = w.stop(timeout=profile.producer_timeout * 3 + 10)
                    rh.log("info", "stopped", pid=w.pid, victim=w.name, code=code)
                    if code not in (0, -signal.SIGKILL, 3):
                        res.errors.append(f"worker {w.name} exited with {code} (see logs/{w.slot}.log)")
        err = _wait_healthy(cluster, topics, 60)
        if err:
            res.errors.append(f"heal: partitions not healthy after the workload stopped: {err}")
        dh = HistoryWriter(os.path.join(hist_dir, "drain.jsonl"), "drain")
        try:
            drained = drain(data_dir, topics, dh)
            log(f"drained {drained} records")
        except Exception as exc:
            res.errors.append(f"final drain: {type(exc).__name__}: {exc}")

        # -- the files ------------------------------------------------------------------------------------
        try:
            cluster.stop(timeout=30)
        except Exception as exc:
            res.errors.append(f"controlled stop failed: {exc}")
        proc = subprocess.run([sys.executable, "-m", "kctl", "--data-dir", data_dir, "log", "verify"],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        res.verify_exit = proc.returncode
        res.verify_output = (proc.stdout + proc.stderr).strip()[-2000:]
        res.replicas_identical = _compare_replicas(cluster, topics, res)
        locks_after = lock_inodes(data_dir)
        replaced = sorted(k for k, ino in locks_before.items() if locks_after.get(k) != ino)
        if replaced:
            res.errors.append(f"lock files removed or replaced during the run: {replaced}")
    except Exception as exc:
        import traceback

        res.errors.append(f"runner: {''.join(traceback.format_exception(exc))[-3000:]}")
    finally:
        stop.set()
        if nemesis is not None:
            nemesis.resume_all()
        if nemesis_thread is not None:
            nemesis_thread.join(30)
        for w in workers.all:
            if w.alive():
                w.proc.kill()  # type: ignore[union-attr]
                w.proc.wait()  # type: ignore[union-attr]
        for b in cluster.broker_ids:
            if cluster.broker_alive(b):
                try:
                    cluster.kill_broker(b)
                except Exception:
                    pass
        _kill_leftovers(data_dir)
        nh.close()
        rh.close()

    history = read_history(os.path.join(hist_dir, n) for n in sorted(os.listdir(hist_dir)))
    trace = list(read_jsonl(trace_path))
    result: CheckResult = check(history, trace)
    res.check = result.to_json()
    res.wall_seconds = round(time.monotonic() - started, 1)
    if profile.min_acked and result.stats.get("send_ok", 0) < profile.min_acked:
        res.errors.append(f"only {result.stats.get('send_ok', 0)} records were acknowledged "
                          f"(the profile wants {profile.min_acked})")
    if res.fault_total < profile.min_faults:
        res.errors.append(f"only {res.fault_total} faults were injected (the profile wants {profile.min_faults})")
    res.summary = result.summary()
    with open(os.path.join(run_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(asdict(res), f, indent=1)
    log(f"seed {seed}: {res.summary}; verify exit {res.verify_exit}; replicas identical "
        f"{res.replicas_identical}; {res.wall_seconds} s")
    for e in res.errors:
        log(f"error: {e}")
    return res


def _compare_replicas(cluster: Any, topics: list[str], res: RunResult) -> bool:
    md = cluster.metadata()
    same = True
    for t in topics:
        for p, part in enumerate(md.topic(t).partitions):
            copies = {b: _replica_bytes(cluster.layout.replica_dir(b, t, p)) for b in part.replicas}
            sizes = {b: len(v) for b, v in copies.items()}
            if len(set(copies.values())) != 1:
                same = False
                res.errors.append(f"replicas of {t}-{p} differ: bytes per broker {sizes}")
    return same


def keep_dir(run_dir: str, seed: int) -> str:
    """Move a run directory under chaos-runs/<timestamp>-<seed>/ (where failed runs are kept)."""
    target = os.path.join(CHAOS_RUNS, f"{_now_tag()}-{seed}")
    if os.path.abspath(run_dir).startswith(os.path.abspath(CHAOS_RUNS) + os.sep):
        return run_dir
    os.makedirs(CHAOS_RUNS, exist_ok=True)
    shutil.move(run_dir, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="long")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory even if the run passes")
    parser.add_argument("--duration", type=float, default=None, help="override the profile's seconds of faults")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1, 1 << 31)
    profile = PROFILES[args.profile]
    if args.duration is not None:
        from dataclasses import replace

        profile = replace(profile, duration=args.duration)
    run_dir = os.path.join(CHAOS_RUNS, f"{_now_tag()}-{seed}")
    os.makedirs(run_dir, exist_ok=True)
    res = run(profile, seed, run_dir)
    if res.ok and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        res.kept = True
        print(f"run directory kept: {run_dir}")
    print(json.dumps({"seed": seed, "ok": res.ok, "faults": res.fault_total, "acked": res.stat("send_ok"),
                      "anomalies": res.check.get("anomalies", {})}))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
