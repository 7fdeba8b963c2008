"""The nemesis: the faults of a chaos run, each logged to the history as it strikes
(kills before the signal, so a death is never earlier than its record).

Broker faults go through :class:`kctl.client.admin.Cluster`, whose ``kill_broker`` and
``signal_broker`` prove (pidfd + /proc/locks) that the process they signal holds the broker's
lock; a SIGSTOPped broker is resumed through a pidfd opened when it was stopped, so no signal
can reach a reused PID. Workers are our own children (:class:`Workers`).

Faults, one at a time (the gap between them is drawn from the profile):

* ``kill-broker`` / ``kill-leader`` / ``kill-controller``: SIGKILL one broker, restart it after
  a short downtime;
* ``kill-all``: SIGKILL every broker at once, then start them all (full recovery);
* ``kill-below-min-isr``: SIGKILL two of the three brokers for longer than the producers'
  delivery timeout (acks=all must fail, and certainly: NOT_ENOUGH_REPLICAS), then restart them;
* ``pause-leader`` / ``pause-follower`` / ``pause-controller``: SIGSTOP that broker, past the
  session timeout or not, then SIGCONT (a hung broker: fenced, then back under new epochs);
* ``pause-member``: SIGSTOP a group member past the group session timeout or not, then SIGCONT;
* ``kill-producer`` / ``kill-consumer``: SIGKILL a workload process at a random moment;
* ``crash-producer-mid-batch`` / ``crash-member-mid-commit``: arm the worker (SIGUSR1) to
  SIGKILL itself a few milliseconds into its next flush or offset commit.

Killed workers are restarted by the runner's supervisor as new incarnations.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.history import HistoryWriter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BROKER_FAULTS = ("kill-broker", "kill-leader", "kill-controller", "kill-all", "kill-below-min-isr",
                 "pause-leader", "pause-follower", "pause-controller")
WORKER_FAULTS = ("kill-producer", "crash-producer-mid-batch", "kill-consumer", "crash-member-mid-commit",
                 "pause-member")
WEIGHTS = {
    "kill-broker": 2.0, "kill-leader": 2.0, "kill-controller": 1.5, "kill-all": 0.7,
    "kill-below-min-isr": 0.6, "pause-leader": 0.7, "pause-follower": 0.4, "pause-controller": 0.4,
    "kill-producer": 1.5, "crash-producer-mid-batch": 1.2, "kill-consumer": 1.5, "crash-member-mid-commit": 1.5,
    "pause-member": 0.6,
}


# -- workers --------------------------------------------------------------------------------------------
@dataclass
class Worker:
    """One workload role (``p0``, ``c0``, ``g0``); each (re)start is a new incarnation ``p0.N``."""

    role: str  # producer | consumer | group
    slot: str
    argv: list[str]
    history_dir: str
    log_dir: str
    env: dict[str, str]
    seed: int
    incarnation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    expected_exit: bool = False
    names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.slot}.{self.incarnation}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        self.incarnation += 1
        self.names.append(self.name)
        cmd = [sys.executable, "-m", "tests.chaos.workload", self.role, *self.argv,
               "--name", self.name, "--seed", str(self.seed * 1000 + self.incarnation),
               "--history", os.path.join(self.history_dir, f"{self.name}.jsonl")]
        if self.role == "consumer" and self.incarnation == 1:
            cmd.append("--from-beginning")
        with open(os.path.join(self.log_dir, f"{self.slot}.log"), "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=REPO,
                                         env=self.env, start_new_session=True)
        self.expected_exit = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> bool:
        """Signal our child (Popen refuses once it has been reaped, so the PID is still ours)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(sig)
        return True

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.signal(signal.SIGTERM):
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.wait()


class Workers:
    """Every workload process of a run, and the lock that serialises starting and killing them."""

    def __init__(self) -> None:
        self.all: list[Worker] = []
        self.lock = threading.Lock()

    def of(self, *roles: str) -> list[Worker]:
        return [w for w in self.all if w.role in roles]


# -- the nemesis ----------------------------------------------------------------------------------------
class Nemesis:
    def __init__(self, cluster: Any, workers: Workers, history: HistoryWriter, rng: random.Random,
                 topics: list[str], *, session_timeout_s: float, producer_timeout_s: float,
                 group_session_timeout_s: float = 3.0) -> None:
        self.cluster = cluster
        self.workers = workers
        self.h = history
        self.rng = rng
        self.topics = topics
        self.session_timeout_s = session_timeout_s
        self.producer_timeout_s = producer_timeout_s
        self.group_session_timeout_s = group_session_timeout_s
        self.faults: dict[str, int] = {}
        self.errors: list[str] = []
        self._paused: dict[int, int] = {}  # broker -> pidfd of the stopped process

    # -- helpers ---------------------------------------------------------------------------------------
    def _fault(self, name: str, **detail: Any) -> None:
        self.faults[name] = self.faults.get(name, 0) + 1
        self.h.log("info", name, fault=True, **detail)

    def _live_brokers(self) -> list[int]:
        return [b for b in self.cluster.broker_ids if self.cluster.broker_alive(b)]

    def _leader_of_random_partition(self) -> int | None:
        md = self.cluster.metadata()
        leaders = [p.leader for t in self.topics for p in md.topic(t).partitions if p.leader is not None]
        return self.rng.choice(leaders) if leaders else None

    def _start(self, brokers: list[int]) -> None:
        for b in brokers:
            for attempt in range(3):
                try:
                    self.cluster.start_broker(b, timeout=30)
                    self.h.log("info", "broker-started", broker=b)
                    break
                except Exception as exc:  # a restart that fails is a finding; try again
                    self.errors.append(f"broker {b} failed to start (attempt {attempt + 1}): {exc}")
                    self.h.log("info", "broker-start-failed", broker=b, error=str(exc))
                    time.sleep(0.5)

    def _kill(self, b: int) -> None:
        try:
            self.cluster.kill_broker(b)
        except Exception as exc:
            self.h.log("info", "kill-refused", broker=b, error=str(exc))

    # -- faults ------------------------------------------------------------------------------------------
    def kill_one(self, which: str) -> None:
        live = self._live_brokers()
        if not live:
            return
        if which == "kill-leader":
            victim = self._leader_of_random_partition()
        elif which == "kill-controller":
            victim = self.cluster.controller_id()
        else:
            victim = self.rng.choice(live)
        if victim is None or victim not in live:
            victim = self.rng.choice(live)
        self._fault(which, broker=victim)
        self._kill(victim)
        time.sleep(self.rng.uniform(0.1, 1.0))
        self._start([victim])

    def kill_all(self) -> None:
        live = self._live_brokers()
        self._fault("kill-all", brokers=live)
        pids = []
        for b in live:  # at once: no waiting between the signals
            try:
                pids.append(self.cluster.signal_broker(b, signal.SIGKILL))
            except Exception as exc:
                self.h.log("info", "kill-refused", broker=b, error=str(exc))
        from kctl.cluster.process import wait_for_exit

        for b in live:
            wait_for_exit(self.cluster.layout, b, 10.0)
        time.sleep(self.rng.uniform(0.1, 1.0))
        try:
            self.cluster.start(timeout=60)  # all at once, as after a power cut
            self.h.log("info", "broker-started", brokers=list(self.cluster.broker_ids))
        except Exception as exc:
            self.errors.append(f"the cluster failed to start after kill-all: {exc}")
            self.h.log("info", "broker-start-failed", error=str(exc))
            self._start(list(self.cluster.broker_ids))

    def kill_below_min_isr(self) -> None:
        live = self._live_brokers()
        if len(live) < 2:
            return
        victims = self.rng.sample(live, 2)
        self._fault("kill-below-min-isr", brokers=victims)
        for b in victims:
            self._kill(b)
        time.sleep(self.producer_timeout_s + self.rng.uniform(0.5, 1.5))
        self._start(victims)

    def _follower_of_random_partition(self) -> int | None:
        md = self.cluster.metadata()
        followers = [b for t in self.topics for p in md.topic(t).partitions for b in p.replicas if b != p.leader]
        return self.rng.choice(followers) if followers else None

    def pause_broker(self, which: str) -> None:
        """SIGSTOP a leader, a follower or the controller (hung, not dead), then SIGCONT."""
        if which == "pause-leader":
            victim = self._leader_of_random_partition()
        elif which == "pause-follower":
            victim = self._follower_of_random_partition()
        else:
            victim = self.cluster.controller_id()
        if victim is None or not self.cluster.broker_alive(victim):
            return
        long_pause = self.rng.random() < 0.7
        pause = self.rng.uniform(1.2, 1.8) * self.session_timeout_s if long_pause \
            else self.rng.uniform(0.2, 0.6) * self.session_timeout_s
        try:
            pid = self.cluster.signal_broker(victim, signal.SIGSTOP)
        except Exception as exc:
            self.h.log("info", "pause-refused", broker=victim, error=str(exc))
            return
        try:
            self._paused[victim] = os.pidfd_open(pid)
        except OSError:  # it died between the two calls: nothing to resume
            return
        self._fault(which, broker=victim, pid=pid, seconds=round(pause, 2))
        time.sleep(pause)
        self.resume_all()

    def resume_all(self) -> None:
        for b, fd in list(self._paused.items()):
            try:
                signal.pidfd_send_signal(fd, signal.SIGCONT)
                self.h.log("info", "resumed", broker=b)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
                del self._paused[b]

    def pause_member(self) -> None:
        """SIGSTOP a group member past the group session timeout (or not), then SIGCONT: it is
        expelled but keeps its partitions' ownership locks, so nobody may read them meanwhile."""
        with self.workers.lock:
            candidates = [w for w in self.workers.of("group") if w.alive()]
            if not candidates:
                return
            w = self.rng.choice(candidates)
            pause = self.rng.uniform(1.2, 1.8) * self.group_session_timeout_s if self.rng.random() < 0.7 \
                else self.rng.uniform(0.1, 0.5) * self.group_session_timeout_s
            self._fault("pause-member", target="paused", victim=w.name, pid=w.pid, seconds=round(pause, 2))
            w.signal(signal.SIGSTOP)
        time.sleep(pause)
        with self.workers.lock:
            w.signal(signal.SIGCONT)
            self.h.log("info", "resumed", victim=w.name)

    def hit_worker(self, fault: str) -> None:
        roles = {"kill-producer": ("producer",), "crash-producer-mid-batch": ("producer",),
                 "kill-consumer": ("consumer", "group"), "crash-member-mid-commit": ("group",)}[fault]
        with self.workers.lock:
            candidates = [w for w in self.workers.of(*roles) if w.alive()]
            if not candidates:
                return
            w = self.rng.choice(candidates)
            if fault.startswith("kill-"):
                self._fault(fault, target="consumer" if w.role != "producer" else "producer",
                            victim=w.name, pid=w.pid)
                w.signal(signal.SIGKILL)
            else:
                self._fault(fault, target="armed", victim=w.name, pid=w.pid)
                w.signal(signal.SIGUSR1)

    def strike(self, fault: str) -> None:
        try:
            if fault in ("kill-broker", "kill-leader", "kill-controller"):
                self.kill_one(fault)
            elif fault == "kill-all":
                self.kill_all()
            elif fault == "kill-below-min-isr":
                self.kill_below_min_isr()
            elif fault in ("pause-leader", "pause-follower", "pause-controller"):
                self.pause_broker(fault)
            elif fault == "pause-member":
                self.pause_member()
            else:
                self.hit_worker(fault)
        except Exception as exc:  # keep the run going; the error is reported with the run
            self.errors.append(f"{fault}: {type(exc).__name__}: {exc}")
            self.h.log("info", "nemesis-error", fault_name=fault, error=str(exc))

    def choose(self) -> str:
        names = list(WEIGHTS)
        return self.rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]

    def run(self, stop: threading.Event, until: Callable[[], bool], gap: tuple[float, float],
            first: list[str] | None = None) -> None:
        """Strike until ``until()`` says enough (or ``stop`` is set); ``first`` come first, in order."""
        queue = [(f, 0) for f in first or ()]
        while not stop.is_set() and not until():
            fault, tries = queue.pop(0) if queue else (self.choose(), 0)
            before = self.faults.get(fault, 0)
            self.strike(fault)
            if self.faults.get(fault, 0) == before and tries < 3 and first and fault in first:
                queue.append((fault, tries + 1))  # skipped (no target right now): try it again later
            stop.wait(self.rng.uniform(*gap))
        self.resume_all()
