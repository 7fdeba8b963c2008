"""The controller: whichever broker holds ``controller.lock``.

Every broker runs a standby thread blocked in the kernel on ``controller.lock``; when the active
controller dies its lock is released and exactly one standby wakes up holding it, bumps the
controller epoch and takes over. No timeout is involved.

The active controller learns of a broker's death from that broker's lock: a dying process
closes ``broker.lock`` (inotify reports IN_CLOSE_WRITE) and a shared-lock probe then succeeds.
A broker that is alive but hung (SIGSTOP) keeps its lock but stops renewing its heartbeat (the
lock file's mtime); after ``broker.session.timeout.ms`` it is fenced. Either way the broker
leaves every ISR and every partition it led gets a new leader (see :mod:`elections`).

A hung *controller* keeps ``controller.lock`` too, and no lock can be taken from a live process.
So the lock is only the fast path; what makes a controller is the metadata (controller id and
epoch), and every controller action is an update conditional on that epoch. When a broker sees
that the lock holder's heartbeat lapsed (see :func:`controller_unresponsive`), it takes over by
bumping the epoch in the metadata, without the lock; the hung controller, should it run again,
finds itself deposed, acts on nothing and goes back to standby.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from kctl.cluster import elections
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import LivenessLock, LockProbe, read_owner
from kctl.cluster.metadata import (
    BROKER_DOWN,
    BROKER_FENCED,
    BROKER_UP,
    ClusterMetadata,
    Event,
    MetadataStore,
    now_ms,
)
from kctl.cluster.watch import IN_CLOSE_WRITE, IN_MOVED_TO, ChangeWatcher
from kctl.errors import KctlError

log = logging.getLogger("kctl.controller")


class Controller:
    def __init__(
        self,
        layout: ClusterLayout,
        broker_id: int,
        broker_ids: list[int],
        settings: dict[str, int],
        stop: threading.Event,
    ) -> None:
        self.layout = layout
        self.broker_id = broker_id
        self.broker_ids = broker_ids
        self.settings = settings
        self.stop = stop
        self.store = MetadataStore(layout)
        self.lock = LivenessLock(layout.controller_lock)
        self.active = False
        self.epoch = 0
        self._probes = {b: LockProbe(layout.broker_lock(b)) for b in broker_ids}
        self._last_rebalance = time.monotonic()
        self._session = threading.Lock()

    # -- standby --------------------------------------------------------------------------------
    def run(self) -> None:
        """Thread body: wait for the controller lock, control until deposed or stopping, repeat."""
        while not self.stop.is_set():
            try:
                self.lock.acquire_blocking()
            except OSError as exc:
                log.error("cannot wait for the controller lock: %s", exc)
                return
            try:
                # a take-over session of this broker (see take_over) runs to its end first; we
                # hold the lock meanwhile, which makes that session the lock holder too
                self._write_owner()
                with self._session:
                    if self.stop.is_set():
                        return
                    self._session_body(None)
            finally:
                self.lock.release()
            # deposed (we were hung and another broker took over): let the others compete first
            self.stop.wait(0.1)

    def take_over(self, expected: tuple[int | None, int]) -> bool:
        """Replace an unresponsive controller (``expected`` = its id and epoch) from a thread of
        our own, without the lock. False if this broker already runs a controller session."""
        if not self._session.acquire(blocking=False):
            return False

        def body() -> None:
            try:
                self._session_body(expected)
            finally:
                self._session.release()

        threading.Thread(target=body, name="controller-takeover", daemon=True).start()
        return True

    def _session_body(self, expected: tuple[int | None, int] | None) -> None:
        try:
            if self._become_active(expected):
                self._control_loop()
        except Exception:  # the controller must not die silently: another takes over
            log.exception("controller failed; resigning")
        finally:
            self.active = False

    def _become_active(self, expected: tuple[int | None, int] | None = None) -> bool:
        """Bump the controller epoch and name this broker; with ``expected``, only if the
        metadata still names that (unresponsive) controller and epoch."""

        def change(md: ClusterMetadata) -> list[Event]:
            if expected is not None and (md.controller_id, md.controller_epoch) != expected:
                return []
            old = md.controller_id
            md.controller_id = self.broker_id
            md.controller_epoch += 1
            self.epoch = md.controller_epoch
            ev: Event = {
                "type": "controller_elected",
                "broker": self.broker_id,
                "controller_epoch": self.epoch,
                "previous": old,
            }
            if expected is not None:
                ev["reason"] = "controller heartbeat older than broker.session.timeout.ms"
            return [ev]

        self.epoch = -1
        self.store.update(change)
        if self.epoch < 0:
            return False
        self.active = True
        if self.lock.held:
            self._write_owner()
        log.info("broker %d is the controller (epoch %d%s)", self.broker_id, self.epoch,
                 "" if expected is None else f", took over from unresponsive broker {expected[0]}")
        return True

    def _write_owner(self) -> None:
        """Name the lock holder in the lock file: broker, pid and, once active, its epoch."""
        epoch = f" {self.epoch}" if self.active else ""
        self.lock.write_owner(f"{self.broker_id} {os.getpid()}{epoch}\n")

    def deposed(self) -> bool:
        """True once the metadata names another controller or epoch (we were replaced)."""
        md = self.store.load()
        return md.controller_id != self.broker_id or md.controller_epoch != self.epoch

    # -- active ---------------------------------------------------------------------------------
    def live_brokers(self) -> tuple[set[int], set[int]]:
        """(brokers holding their lock, of those the ones whose heartbeat lapsed)."""
        session = self.settings["broker.session.timeout.ms"]
        now = time.time_ns() // 1_000_000
        alive, hung = set(), set()
        for b, probe in self._probes.items():
            if probe.held():
                alive.add(b)
                try:
                    beat = os.stat(self.layout.broker_lock(b)).st_mtime_ns // 1_000_000
                except OSError:
                    continue
                if now - beat > session:
                    hung.add(b)
        return alive, hung

    def _control_loop(self) -> None:
        watcher = ChangeWatcher()
        watcher.watch(self.layout.metadata_dir, IN_MOVED_TO)
        locks = [self.layout.broker_lock(b) for b in self.broker_ids]
        # deaths wake us through inotify at once; the interval only bounds how late a hung broker
        # (heartbeat older than the session timeout) is noticed
        interval = min(1.0, self.settings["broker.session.timeout.ms"] / 8000.0)
        recheck = False
        while not self.stop.is_set():
            for path in locks:
                if not watcher.is_watching(path):
                    watcher.watch(path, IN_CLOSE_WRITE)  # a broker that never ran has no lock file yet
            try:
                if self.deposed():
                    log.info("broker %d is no longer the controller (epoch %d)", self.broker_id, self.epoch)
                    break
                self.reconcile_once()
                self._maybe_rebalance()
            except KctlError as exc:
                log.warning("controller pass failed: %s", exc)
            # the kernel reports a dying broker's close of its lock file just before it frees the
            # lock, so after any wake-up look once more a moment later rather than a full interval
            recheck = watcher.wait(0.005 if recheck else interval)
        watcher.close()

    def reconcile_once(self) -> None:
        alive, hung = self.live_brokers()
        md = self.store.load()
        if not self._needs_change(md, alive, hung):
            return
        me = self.broker_id
        my_epoch = self.epoch

        def change(md: ClusterMetadata) -> list[Event]:
            if md.controller_id != me or md.controller_epoch != my_epoch:
                return []  # we were replaced: never act on a stale epoch
            events: list[Event] = []
            for b in self.broker_ids:
                st = md.brokers.get(b)
                if st is None:
                    continue
                if st.state == BROKER_UP and b not in alive:
                    st.state = BROKER_DOWN
                    st.since_ms = now_ms()
                    events.append(
                        {
                            "type": "broker_down",
                            "broker": b,
                            "broker_epoch": st.epoch,
                            "reason": "lock released (process exited)",
                        }
                    )
                elif st.state == BROKER_UP and b in hung:
                    st.state = BROKER_FENCED
                    st.since_ms = now_ms()
                    events.append(
                        {
                            "type": "broker_fenced",
                            "broker": b,
                            "broker_epoch": st.epoch,
                            "reason": "heartbeat older than broker.session.timeout.ms",
                        }
                    )
            live = {b for b, s in md.brokers.items() if s.state == BROKER_UP and b in alive and b not in hung}
            reason = "broker_failure" if events else "reconcile"
            events.extend(elections.reconcile(md, live, reason))
            return events

        self.store.update(change)

    def _needs_change(self, md: ClusterMetadata, alive: set[int], hung: set[int]) -> bool:
        live = set()
        for b, st in md.brokers.items():
            if st.state == BROKER_UP:
                if b not in alive or b in hung:
                    return True
                live.add(b)
        for topic in md.topics.values():
            for part in topic.partitions:
                if part.leader is None or part.leader not in live:
                    if elections.clean_candidate(part, live) is not None:
                        return True
                    if part.leader is not None:
                        return True
                    if any(r in live for r in part.replicas) and topic.config.get(
                        "unclean.leader.election.enable"
                    ):
                        return True
                if any(r not in live for r in part.isr) and any(r in live for r in part.isr):
                    return True
        return False

    def _maybe_rebalance(self) -> None:
        if not self.settings.get("auto.leader.rebalance.enable", 1):
            return
        period = self.settings["leader.imbalance.check.interval.seconds"]
        if time.monotonic() - self._last_rebalance < period:
            return
        self._last_rebalance = time.monotonic()
        md = self.store.load()
        live = md.live_brokers()
        if elections.leader_imbalance(md, live) <= 0.10:
            return
        me, my_epoch = self.broker_id, self.epoch

        def change(md: ClusterMetadata) -> list[Event]:
            if md.controller_id != me or md.controller_epoch != my_epoch:
                return []
            return elections.preferred_election(md, md.live_brokers())

        self.store.update(change)


def heartbeat_age_ms(layout: ClusterLayout, broker: int) -> int | None:
    """Milliseconds since ``broker`` last renewed its heartbeat (None if it never ran)."""
    try:
        beat = os.stat(layout.broker_lock(broker)).st_mtime_ns // 1_000_000
    except OSError:
        return None
    return time.time_ns() // 1_000_000 - beat


def controller_unresponsive(layout: ClusterLayout, md: ClusterMetadata, me: int, session_ms: int
                            ) -> tuple[int | None, int] | None:
    """(controller id, epoch) to take over from, if the controller can no longer act.

    That is when ``controller.lock`` is held by a broker whose heartbeat lapsed (hung, e.g.
    SIGSTOP) and the controller the metadata names (the holder, or a broker that took over
    from it) is unresponsive too. A free lock needs nothing: a standby takes it at once.
    """
    from kctl.cluster.locks import is_held, lock_holder_pids

    if not is_held(layout.controller_lock):
        return None
    owner = read_owner(layout.controller_lock).split()
    if len(owner) < 2 or not owner[0].isdigit() or not owner[1].isdigit():
        return None
    holder = int(owner[0])

    def stale(b: int) -> bool:
        age = heartbeat_age_ms(layout, b)
        return age is None or age > session_ms

    if holder == me or not stale(holder):
        return None
    if int(owner[1]) not in lock_holder_pids(layout.controller_lock):
        return None  # a new holder that has not written its name yet
    named = md.controller_id
    if named is not None and named not in (holder, me) and not stale(named):
        return None
    return named, md.controller_epoch


def start_controller_thread(controller: Controller) -> threading.Thread:
    t = threading.Thread(target=controller.run, name="controller", daemon=True)
    t.start()
    return t
