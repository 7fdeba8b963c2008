"""The broker process: ``python -m kctl.cluster.broker --data-dir D --broker-id N``.

A broker is alive exactly while it holds ``brokers/broker-N/broker.lock``. It:

1. takes its lock (refusing to run twice), checks ``meta.properties`` against the cluster id;
2. recovers its replicas (full recovery unless ``.kafka_cleanshutdown`` says the last stop was
   clean, as in Kafka) and registers itself in the metadata with a new broker epoch;
3. runs a standby controller thread (see :mod:`kctl.cluster.controller`);
4. loops: lead and follow its replicas, renew its heartbeat, checkpoint high watermarks,
   flush and checkpoint recovery points, apply retention; it sleeps in inotify between passes;
5. on SIGTERM performs a controlled shutdown: leadership moves to other in-sync replicas first,
   then logs are flushed, checkpoints and the clean-shutdown marker written, and the lock freed.

A fenced broker (its heartbeat lapsed, e.g. after SIGSTOP) finds its registration marked
``fenced`` when it runs again; it re-registers with a new epoch and rejoins as a follower, and
leader-epoch fencing keeps it from acting on what it believed before. Each heartbeat the broker
also checks that the controller still acts, and takes over from one that hangs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from kctl.cluster import elections
from kctl.cluster.config import broker_settings
from kctl.cluster.controller import Controller, controller_unresponsive, start_controller_thread
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import LivenessLock
from kctl.cluster.metadata import BROKER_DOWN, BROKER_UP, ClusterMetadata, Event, MetadataStore, now_ms
from kctl.cluster.replica_manager import ReplicaManager
from kctl.cluster.watch import IN_MOVED_TO, ChangeWatcher
from kctl.errors import BrokerError, CorruptRecordError, KctlError
from kctl.storage.checkpoint import (
    read_meta_properties,
    read_offsets_checkpoint,
    write_meta_properties,
    write_offsets_checkpoint,
)
from kctl.storage.log import consume_clean_shutdown_marker, write_clean_shutdown_marker

log = logging.getLogger("kctl.broker")

RECOVERY_POINT = "recovery-point-offset-checkpoint"
REPLICATION_OFFSET = "replication-offset-checkpoint"
LOG_START = "log-start-offset-checkpoint"


class Broker:
    def __init__(self, layout: ClusterLayout, broker_id: int) -> None:
        self.layout = layout
        self.broker_id = broker_id
        cluster = layout.read_cluster_file()
        if broker_id not in cluster["brokers"]:
            raise BrokerError(
                f"broker {broker_id} is not part of this cluster (brokers: {cluster['brokers']})"
            )
        self.cluster_id = cluster["cluster_id"]
        self.broker_ids = list(cluster["brokers"])
        self.settings = broker_settings(cluster.get("settings", {}))
        self.store = MetadataStore(layout)
        self.lock = LivenessLock(layout.broker_lock(broker_id))
        self.replicas = ReplicaManager(layout, broker_id, self.store, self.settings)
        self.stop_requested = threading.Event()
        self.epoch = 0
        self.controller: Controller | None = None
        self._written: dict[str, dict[tuple[str, int], int]] = {}  # checkpoint contents on disk
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # -- startup --------------------------------------------------------------------------------
    def start(self) -> None:
        bdir = self.layout.broker_dir(self.broker_id)
        os.makedirs(bdir, exist_ok=True)
        if not self.lock.acquire(timeout=5.0):
            raise BrokerError(f"broker {self.broker_id} is already running")
        self.lock.write_owner(f"{os.getpid()} {time.time():.3f}\n")
        self._check_meta_properties()
        clean = consume_clean_shutdown_marker(bdir)
        recovered = self._open_replicas(clean)
        self._register("started after unclean shutdown (recovered)" if recovered else "started")
        self.controller = Controller(
            self.layout, self.broker_id, self.broker_ids, self.settings, self.stop_requested
        )
        start_controller_thread(self.controller)

    def _check_meta_properties(self) -> None:
        path = self.layout.meta_properties(self.broker_id)
        try:
            props = read_meta_properties(path)
        except FileNotFoundError:
            write_meta_properties(path, broker_id=self.broker_id, cluster_id=self.cluster_id)
            return
        if props.get("cluster.id") != self.cluster_id or props.get("broker.id") != str(self.broker_id):
            raise BrokerError(
                f"{path} belongs to cluster {props.get('cluster.id')} broker {props.get('broker.id')}, "
                f"not cluster {self.cluster_id} broker {self.broker_id}"
            )

    def _checkpoint(self, name: str) -> dict[tuple[str, int], int]:
        try:
            return read_offsets_checkpoint(self.layout.checkpoint(self.broker_id, name))
        except (CorruptRecordError, OSError) as exc:
            log.warning("ignoring damaged %s: %s", name, exc)
            return {}

    def _open_replicas(self, clean: bool) -> bool:
        """Open (after an unclean shutdown: recover) every assigned replica; True if any was
        recovered."""
        md = self.store.load()
        recovery = self._checkpoint(RECOVERY_POINT)
        hws = self._checkpoint(REPLICATION_OFFSET)
        bdir = self.layout.broker_dir(self.broker_id)
        wanted = set()
        recovered = False
        for t in md.topics.values():
            for p, part in enumerate(t.partitions):
                if self.broker_id not in part.replicas:
                    continue
                wanted.add(f"{t.name}-{p}")
                t0 = time.monotonic()
                self.replicas.open_replica(
                    t,
                    p,
                    recover=not clean,
                    recovery_point=recovery.get((t.name, p)),
                    hw_checkpoint=hws.get((t.name, p)),
                )
                if not clean:
                    recovered = True
                    log.info("recovered %s-%d in %.1f ms", t.name, p, (time.monotonic() - t0) * 1000)
        # stray replica directories (a topic deleted while we were down) are removed, as Kafka does
        import shutil

        for name in os.listdir(bdir):
            path = os.path.join(bdir, name)
            if os.path.isdir(path) and name not in wanted:
                shutil.rmtree(path, ignore_errors=True)
        return recovered

    def _register(self, reason: str) -> None:
        me = self.broker_id
        pid = os.getpid()

        def change(md: ClusterMetadata) -> list[Event]:
            st = md.brokers[me]
            st.epoch += 1
            st.state = BROKER_UP
            st.pid = pid
            st.since_ms = now_ms()
            self.epoch = st.epoch
            return [
                {"type": "broker_up", "broker": me, "broker_epoch": st.epoch, "pid": pid, "reason": reason}
            ]

        self.store.update(change)
        log.info("broker %d registered with epoch %d (%s)", me, self.epoch, reason)

    # -- main loop ------------------------------------------------------------------------------
    def request_stop(self, *_args: object) -> None:
        self.stop_requested.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        s = self.settings
        watcher = ChangeWatcher()
        watcher.add_wakeup_fd(self._wake_r)
        watcher.watch(self.layout.metadata_dir, IN_MOVED_TO)
        watched: set[str] = set()
        wanted: set[str] = set()
        last_beat = last_tick = last_hw_ckpt = last_flush = last_retention = time.monotonic()
        beat_every = min(s["broker.heartbeat.interval.ms"], s["broker.session.timeout.ms"] / 4) / 1000.0
        # inotify reports every append, fetch and metadata change; without one, replicas still need
        # a look now and then (a follower that stopped fetching leaves the ISR after
        # replica.lag.time.max.ms), but far less often than the heartbeat, which costs one utime
        tick_every = min(1.0, s["replica.lag.time.max.ms"] / 4000.0)
        md_version = -1
        woke = True
        while not self.stop_requested.is_set():
            mono = time.monotonic()
            beat_due = mono - last_beat >= beat_every
            if beat_due:
                self.lock.touch()
                last_beat = mono
            try:
                md = self.store.load()
            except KctlError as exc:
                log.error("cannot read metadata: %s", exc)
                watcher.wait(0.5)
                continue
            me = md.brokers.get(self.broker_id)
            if me is None or me.state != BROKER_UP or me.epoch != self.epoch:
                # fenced (e.g. we were stopped past the session timeout): rejoin with a new epoch
                self.lock.touch()
                self._register("re-registered after being fenced")
                continue
            if md.version != md_version:
                self.replicas.sync_assignment(md)
                wanted = self.replicas.watched_paths(md)
                for p in wanted - watched:
                    watcher.watch(p)
                for p in watched - wanted:
                    watcher.unwatch(p)
                watched = {p for p in wanted if watcher.is_watching(p)}
                md_version = md.version
                woke = True
            if beat_due:
                self._watch_controller(md)
            busy = False
            if woke or mono - last_tick >= tick_every:
                busy = self.replicas.tick(md, now_ms())
                last_tick = mono
                for p in wanted - watched:  # a replica directory that did not exist yet
                    if watcher.watch(p):
                        watched.add(p)
            mono = time.monotonic()
            if mono - last_hw_ckpt >= s["replica.high.watermark.checkpoint.interval.ms"] / 1000.0:
                self._write_hw_checkpoint()
                last_hw_ckpt = mono
            if mono - last_retention >= s["log.retention.check.interval.ms"] / 1000.0:
                self.replicas.apply_retention(md, now_ms())
                last_retention = mono
            flush_every = s["log.flush.interval.ms"]
            ckpt_every = s["log.flush.offset.checkpoint.interval.ms"]
            if (flush_every >= 0 and mono - last_flush >= flush_every / 1000.0) \
                    or mono - last_flush >= ckpt_every / 1000.0:
                self._flush_and_checkpoint()
                last_flush = mono
            if busy:
                woke = True
                continue
            due = min(last_beat + beat_every, last_tick + tick_every) - time.monotonic()
            woke = watcher.wait(max(0.0, due))
        watcher.close()

    def _watch_controller(self, md: ClusterMetadata) -> None:
        """Take over from a controller that holds its lock but no longer acts (hung)."""
        ctrl = self.controller
        if ctrl is None or ctrl.active:
            return
        expected = controller_unresponsive(self.layout, md, self.broker_id,
                                           self.settings["broker.session.timeout.ms"])
        if expected is not None and ctrl.take_over(expected):
            log.info("controller %s looks unresponsive; broker %d tries to take over", expected[0], self.broker_id)

    def _write_hw_checkpoint(self) -> None:
        hws = self.replicas.high_watermarks()
        if hws != self._written.get(REPLICATION_OFFSET):  # an idle broker writes nothing
            write_offsets_checkpoint(self.layout.checkpoint(self.broker_id, REPLICATION_OFFSET), hws)
            self._written[REPLICATION_OFFSET] = hws

    def _flush_and_checkpoint(self) -> None:
        points = self.replicas.flush_all()
        starts = self.replicas.log_start_offsets()
        for name, offsets in ((RECOVERY_POINT, points), (LOG_START, starts)):
            if offsets != self._written.get(name):
                write_offsets_checkpoint(self.layout.checkpoint(self.broker_id, name), offsets)
                self._written[name] = offsets

    # -- shutdown -------------------------------------------------------------------------------
    def controlled_shutdown(self) -> None:
        me = self.broker_id

        def change(md: ClusterMetadata) -> list[Event]:
            live = {b for b, st in md.brokers.items() if st.state == BROKER_UP}
            events = elections.move_leadership_off(md, me, live)
            st = md.brokers.get(me)
            if st is not None and st.state == BROKER_UP and st.epoch == self.epoch:
                st.state = BROKER_DOWN
                st.since_ms = now_ms()
                events.append(
                    {
                        "type": "broker_down",
                        "broker": me,
                        "broker_epoch": st.epoch,
                        "reason": "controlled shutdown",
                    }
                )
            return events

        try:
            self.store.update(change, timeout=10)
        except KctlError as exc:
            log.warning("controlled shutdown could not move leadership: %s", exc)
        self._flush_and_checkpoint()
        self._write_hw_checkpoint()
        self.replicas.close()
        write_clean_shutdown_marker(self.layout.broker_dir(self.broker_id))
        if self.controller is not None and self.controller.lock.held:
            self.controller.lock.release()  # hand over at once, not at exit
        self.lock.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kctl-broker", description="run one kctl broker")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--broker-id", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    layout = ClusterLayout.at(args.data_dir)
    try:
        broker = Broker(layout, args.broker_id)
        signal.signal(signal.SIGTERM, broker.request_stop)
        signal.signal(signal.SIGINT, broker.request_stop)
        broker.start()
    except KctlError as exc:
        print(f"kctl-broker: error: {exc}", file=sys.stderr)
        return 1
    log.info("broker %d running (pid %d)", args.broker_id, os.getpid())
    try:
        broker.run()
    finally:
        broker.controlled_shutdown()
        log.info("broker %d stopped cleanly", args.broker_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
