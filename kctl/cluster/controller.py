"""The controller: whichever broker holds ``controller.lock``.

Every broker runs a standby thread blocked in the kernel on ``controller.lock``; when the active
controller dies its lock is released and exactly one standby wakes up holding it, bumps the
controller epoch and takes over. No timeout is involved.

The active controller learns of a broker's death from that broker's lock: a dying process
closes ``broker.lock`` (inotify reports IN_CLOSE_WRITE) and a shared-lock probe then succeeds.
A broker that is alive but hung (SIGSTOP) keeps its lock but stops renewing its heartbeat (the
lock file's mtime); after ``broker.session.timeout.ms`` it is fenced. Either way the broker
leaves every ISR and every partition it led gets a new leader (see :mod:`elections`).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from kctl.cluster import elections
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import LivenessLock, LockProbe
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

    # -- standby --------------------------------------------------------------------------------
    def run(self) -> None:
        """Thread body: wait for the controller lock, then control until the process stops."""
        try:
            self.lock.acquire_blocking()
        except OSError as exc:
            log.error("cannot wait for the controller lock: %s", exc)
            return
        if self.stop.is_set():
            self.lock.release()
            return
        try:
            self._become_active()
            self._control_loop()
        except Exception:  # the controller must not die silently: release so another takes over
            log.exception("controller failed; resigning")
        finally:
            self.active = False
            self.lock.release()

    def _become_active(self) -> None:
        self.lock.write_owner(f"{self.broker_id} {os.getpid()}\n")

        def change(md: ClusterMetadata) -> list[Event]:
            old = md.controller_id
            md.controller_id = self.broker_id
            md.controller_epoch += 1
            self.epoch = md.controller_epoch
            return [
                {
                    "type": "controller_elected",
                    "broker": self.broker_id,
                    "controller_epoch": self.epoch,
                    "previous": old,
                }
            ]

        self.store.update(change)
        self.active = True
        log.info("broker %d is the controller (epoch %d)", self.broker_id, self.epoch)

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
        for b in self.broker_ids:
            watcher.watch(self.layout.broker_lock(b), IN_CLOSE_WRITE)
        watcher.watch(self.layout.metadata_dir, IN_MOVED_TO)
        interval = min(0.25, self.settings["broker.session.timeout.ms"] / 4000.0)
        while not self.stop.is_set():
            try:
                self.reconcile_once()
                self._maybe_rebalance()
            except KctlError as exc:
                log.warning("controller pass failed: %s", exc)
            watcher.wait(interval)
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


def start_controller_thread(controller: Controller) -> threading.Thread:
    t = threading.Thread(target=controller.run, name="controller", daemon=True)
    t.start()
    return t
