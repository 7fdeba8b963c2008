"""A broker's replicas: leading (high watermark, ISR) and following (truncate, fetch, append).

Leader duties, per partition this broker leads:
  * high watermark = min log end offset over the ISR, counting a follower only once it has
    synchronised with the current leader epoch (its ``replica.state`` says so); it never moves
    back, and it is published in the leader's ``replica.state`` for producers and consumers;
  * ISR shrink for a follower not caught up for ``replica.lag.time.max.ms``; ISR expand for a
    live follower that reached the high watermark in the current epoch.

Follower duties, per partition this broker follows:
  * on a new leader or leader epoch, truncate by leader-epoch history (KIP-101/279) under the
    append lock, then publish "synchronised with epoch E";
  * copy whole, CRC-checked batches from the leader's files into its own log, only while the
    leader's broker is alive (holds its lock): a dead broker serves no fetches, so what only it
    had is truncated away once it returns, as in Kafka;
  * keep its own high watermark = min(leader's, own log end), and drop segments below the
    leader's log start offset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from kctl.cluster.config import broker_settings, effective_config, log_config
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import AppendLock, LockProbe
from kctl.cluster.metadata import (
    BROKER_UP,
    ClusterMetadata,
    Event,
    MetadataStore,
    PartitionState,
    TopicState,
    now_ms,
)
from kctl.errors import CorruptRecordError, KctlError, OffsetOutOfRangeError
from kctl.storage.log import HighWatermark, Log, LogReader, ReplicaStateFile, end_offset_for_epoch

log = logging.getLogger("kctl.broker")

LEADER = "leader"
FOLLOWER = "follower"
OFFLINE = "offline"


@dataclass
class Replica:
    topic: str
    partition: int
    directory: str
    log: Log
    lock: AppendLock
    topic_id: str
    hw: int = 0
    role: str = OFFLINE
    leader_epoch: int = -1
    # following
    fetch_leader: int | None = None
    synced: bool = False
    reader: LogReader | None = None
    # leading
    peers: dict[int, ReplicaStateFile | None] = field(default_factory=dict)
    caught_up_ms: dict[int, int] = field(default_factory=dict)
    last_isr_change_ms: int = 0
    hw_published: tuple[int, int] = (-1, -2)
    flushed: tuple[int, ...] = ()  # (log end, log start, active size, latest epoch) at the last fsync

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        for sf in self.peers.values():
            if sf is not None:
                sf.close()
        self.peers.clear()
        self.log.close()
        self.lock.close()


class ReplicaManager:
    def __init__(
        self,
        layout: ClusterLayout,
        broker_id: int,
        store: MetadataStore,
        settings: dict[str, int] | None = None,
    ) -> None:
        self.layout = layout
        self.broker_id = broker_id
        self.store = store
        self.settings = settings or broker_settings()
        self.replicas: dict[tuple[str, int], Replica] = {}
        self._liveness: dict[int, LockProbe] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    def open_replica(
        self,
        topic: TopicState,
        p: int,
        *,
        recover: bool,
        recovery_point: int | None,
        hw_checkpoint: int | None,
    ) -> Replica:
        path = self.layout.replica_dir(self.broker_id, topic.name, p)
        lock = AppendLock(self.layout.append_lock(self.broker_id, topic.name, p))
        cfg = log_config(topic.config)
        with lock.hold():
            if os.path.isdir(path):
                lg = Log.open(path, cfg, recover=recover, recovery_point=recovery_point)
            else:
                lg = Log.create(path, cfg)
            sf = lg._sf()
            region = sf.read_high_watermark()
            hw = max(hw_checkpoint or 0, region.high_watermark if region else 0)
            hw = min(hw, lg.log_end_offset)
            hw = max(hw, lg.log_start_offset)
            # not synchronised with any leader epoch yet: leaders ignore our LEO until we are
            sf.write_high_watermark(HighWatermark(hw, -1, now_ms()))
        rep = Replica(topic.name, p, path, lg, lock, topic.topic_id, hw=hw)
        self.replicas[(topic.name, p)] = rep
        return rep

    def close(self) -> None:
        for rep in self.replicas.values():
            rep.close()
        self.replicas.clear()
        for probe in self._liveness.values():
            probe.close()
        self._liveness.clear()

    def broker_alive(self, broker: int) -> bool:
        probe = self._liveness.get(broker)
        if probe is None:
            probe = self._liveness[broker] = LockProbe(self.layout.broker_lock(broker))
        return probe.held()

    def watched_paths(self, md: ClusterMetadata) -> set[str]:
        """Every replica.state whose change should wake this broker."""
        paths: set[str] = set()
        for (topic, p), _rep in self.replicas.items():
            t = md.topics.get(topic)
            if t is None or p >= len(t.partitions):
                continue
            for b in t.partitions[p].replicas:
                paths.add(os.path.join(self.layout.replica_dir(b, topic, p), "replica.state"))
        return paths

    def sync_assignment(self, md: ClusterMetadata) -> None:
        """Open replicas newly assigned to this broker; close (and remove) ones that are gone."""
        wanted: dict[tuple[str, int], TopicState] = {}
        for t in md.topics.values():
            for p, part in enumerate(t.partitions):
                if self.broker_id in part.replicas:
                    wanted[(t.name, p)] = t
        for key in list(self.replicas):
            rep = self.replicas[key]
            t = wanted.get(key)
            if t is None or t.topic_id != rep.topic_id:
                rep.close()
                del self.replicas[key]
        for key, t in wanted.items():
            if key not in self.replicas:
                try:
                    self.open_replica(t, key[1], recover=False, recovery_point=None, hw_checkpoint=None)
                except (OSError, KctlError) as exc:
                    log.warning("cannot open replica %s-%d: %s", key[0], key[1], exc)
            else:
                self.replicas[key].log.config = log_config(t.config)

    # -- the work -------------------------------------------------------------------------------
    def tick(self, md: ClusterMetadata, now: int) -> bool:
        """One pass over every replica; True if anything moved (so the caller looks again soon)."""
        me = md.brokers.get(self.broker_id)
        registered = me is not None and me.state == BROKER_UP
        busy = False
        for (topic, p), rep in list(self.replicas.items()):
            t = md.topics.get(topic)
            if t is None or p >= len(t.partitions):
                continue
            part = t.partitions[p]
            try:
                if part.leader == self.broker_id and registered:
                    busy |= self._lead(rep, t, part, md, now)
                elif part.leader is not None and part.leader != self.broker_id and registered:
                    busy |= self._follow(rep, part, now)
                else:
                    rep.role = OFFLINE
                    rep.synced = False
            except (OSError, KctlError) as exc:
                log.warning("replica %s-%d: %s", topic, p, exc)
                rep.synced = False
                if rep.reader is not None:
                    rep.reader.close()
                    rep.reader = None
        return busy

    def _publish_hw(self, rep: Replica, epoch: int) -> None:
        if rep.hw_published != (rep.hw, epoch):
            rep.log._sf().write_high_watermark(HighWatermark(rep.hw, epoch, now_ms()))
            rep.hw_published = (rep.hw, epoch)

    def _peer(self, rep: Replica, broker: int) -> ReplicaStateFile | None:
        sf = rep.peers.get(broker)
        if sf is None:
            try:
                sf = ReplicaStateFile(self.layout.replica_dir(broker, rep.topic, rep.partition))
            except FileNotFoundError:
                return None
            rep.peers[broker] = sf
        return sf

    def _lead(
        self, rep: Replica, topic: TopicState, part: PartitionState, md: ClusterMetadata, now: int
    ) -> bool:
        epoch = part.leader_epoch
        if rep.role != LEADER or rep.leader_epoch != epoch:
            rep.role = LEADER
            rep.leader_epoch = epoch
            rep.synced = False
            if rep.reader is not None:
                rep.reader.close()
                rep.reader = None
            rep.caught_up_ms = {b: now for b in part.replicas}
            with rep.lock.hold():
                rep.log.refresh()
            rep.hw = min(max(rep.hw, rep.log.log_start_offset), rep.log.log_end_offset)
            self._publish_hw(rep, epoch)
            log.info("leading %s-%d in epoch %d", rep.topic, rep.partition, epoch)
        state = rep.log._sf().read_log_end()
        if state is None:
            return False
        leo = state.log_end_offset
        leos: dict[int, int] = {self.broker_id: leo}
        for f in part.replicas:
            if f == self.broker_id:
                continue
            sf = self._peer(rep, f)
            if sf is None:
                continue
            fl = sf.read_log_end(attempts=3)
            fh = sf.read_high_watermark(attempts=3)
            if fl is None or fh is None or fh.leader_epoch != epoch:
                continue
            leos[f] = fl.log_end_offset
            if fl.log_end_offset >= leo:
                rep.caught_up_ms[f] = now
        isr_leos = [leos.get(r, -1) for r in part.isr]
        new_hw = min(isr_leos) if isr_leos else leo
        moved = False
        if new_hw > rep.hw:
            rep.hw = new_hw
            moved = True
        self._publish_hw(rep, epoch)

        # ISR maintenance: rate-limited so a flapping follower cannot storm the metadata
        lag_max = self.settings["replica.lag.time.max.ms"]
        live = md.live_brokers()
        shrink = [f for f in part.isr if f != self.broker_id and now - rep.caught_up_ms.get(f, now) > lag_max]
        epoch_start = rep.log.state.latest_epoch_start if rep.log.state.latest_epoch == epoch else rep.hw
        expand = [
            f
            for f in part.replicas
            if f not in part.isr and f in live and leos.get(f, -1) >= max(rep.hw, epoch_start)
        ]
        if (shrink or expand) and now - rep.last_isr_change_ms > 100:
            rep.last_isr_change_ms = now
            self._change_isr(rep.topic, rep.partition, epoch, shrink, expand)
            moved = True
        return moved

    def _change_isr(self, topic: str, p: int, epoch: int, shrink: list[int], expand: list[int]) -> None:
        me = self.broker_id

        def change(md: ClusterMetadata) -> list[Event]:
            t = md.topics.get(topic)
            if t is None or p >= len(t.partitions):
                return []
            part = t.partitions[p]
            if part.leader != me or part.leader_epoch != epoch:
                return []  # fenced: someone else leads now
            old = list(part.isr)
            isr = [r for r in part.isr if r not in shrink]
            isr += [r for r in expand if r not in isr]
            isr = [r for r in part.replicas if r in isr]
            if isr == old or not isr:
                return []
            part.isr = isr
            part.partition_epoch += 1
            kind = "isr_shrink" if len(isr) < len(old) else "isr_expand"
            return [
                {
                    "type": kind,
                    "topic": topic,
                    "partition": p,
                    "old_isr": old,
                    "isr": isr,
                    "leader": me,
                    "partition_epoch": part.partition_epoch,
                    "reason": "follower_lagging" if kind == "isr_shrink" else "follower_caught_up",
                }
            ]

        self.store.update(change)

    def _follow(self, rep: Replica, part: PartitionState, now: int) -> bool:
        leader = part.leader
        assert leader is not None
        epoch = part.leader_epoch
        if rep.role != FOLLOWER or rep.fetch_leader != leader or rep.leader_epoch != epoch:
            rep.role = FOLLOWER
            rep.fetch_leader = leader
            rep.leader_epoch = epoch
            rep.synced = False
            if rep.reader is not None:
                rep.reader.close()
                rep.reader = None
        if not self.broker_alive(leader):
            return False  # the controller is about to elect another leader
        if not rep.synced and not self._synchronise(rep, leader, epoch):
            return False
        reader = rep.reader
        assert reader is not None
        leader_state = reader.log_end()
        moved = False
        if rep.log.log_end_offset < leader_state.log_end_offset:
            try:
                chunk, headers = reader.read(
                    leader_state.log_end_offset, self.settings["replica.fetch.max.bytes"]
                )
            except OffsetOutOfRangeError:
                rep.synced = False
                return True
            if chunk:
                with rep.lock.hold():
                    rep.log.refresh()
                    if headers[0][1].base_offset != rep.log.log_end_offset:
                        rep.synced = False
                        return True
                    try:
                        rep.log.append_replicated(chunk)
                    except CorruptRecordError as exc:
                        log.warning(
                            "fetch from broker %d for %s-%d: %s", leader, rep.topic, rep.partition, exc
                        )
                        rep.synced = False
                        return True
                moved = True
        lhw = reader.high_watermark()
        if lhw is not None and lhw.leader_epoch == epoch:
            new_hw = min(lhw.high_watermark, rep.log.log_end_offset)
            if new_hw > rep.hw:
                rep.hw = new_hw
        if (
            leader_state.log_start_offset > rep.log.log_start_offset
            and leader_state.log_start_offset <= rep.log.log_end_offset
        ):
            with rep.lock.hold():
                rep.log.refresh()
                rep.log.delete_segments_below(leader_state.log_start_offset)
        self._publish_hw(rep, epoch)
        return moved

    def _synchronise(self, rep: Replica, leader: int, epoch: int) -> bool:
        """Truncate our log to where it agrees with the leader's (KIP-101/279), then mark the
        replica synchronised with ``epoch`` so the leader may count its log end offset."""
        leader_dir = self.layout.replica_dir(leader, rep.topic, rep.partition)
        try:
            reader = LogReader(leader_dir)
            leader_state = reader.log_end()
        except (FileNotFoundError, CorruptRecordError):
            return False
        leader_epochs = reader.leader_epochs()
        with rep.lock.hold():
            lg = rep.log
            lg.refresh()
            before = lg.log_end_offset
            if lg.log_end_offset > 0 and lg.epoch_entries:
                my_latest = lg.latest_epoch
                le, lend = end_offset_for_epoch(leader_epochs, leader_state.log_end_offset, my_latest)
                target = leader_state.log_start_offset if le < 0 else min(lend, lg.end_offset_for_epoch(le)[1])
                target = min(target, leader_state.log_end_offset)
                if target < lg.log_end_offset:
                    lg.truncate_to(target)
            elif lg.log_end_offset > leader_state.log_end_offset:
                lg.truncate_to(leader_state.log_end_offset)
            if lg.log_end_offset < leader_state.log_start_offset or lg.log_end_offset < lg.log_start_offset:
                lg.truncate_fully(leader_state.log_start_offset)
            if lg.log_end_offset != before:
                log.info(
                    "truncated %s-%d from %d to %d following broker %d epoch %d",
                    rep.topic,
                    rep.partition,
                    before,
                    lg.log_end_offset,
                    leader,
                    epoch,
                )
            rep.hw = min(rep.hw, lg.log_end_offset)
            rep.hw_published = (-1, -2)
            self._publish_hw(rep, epoch)
        try:
            reader.seek(lg.log_end_offset)
        except OffsetOutOfRangeError:
            reader.close()
            return False
        rep.reader = reader
        rep.synced = True
        return True

    # -- periodic duties ------------------------------------------------------------------------
    def apply_retention(self, md: ClusterMetadata, now: int) -> None:
        """``cleanup.policy``: ``delete`` drops old segments of the replicas we lead (followers
        mirror the leader's log start); ``compact`` cleans every replica we hold, below its own
        high watermark, once its dirty ratio passes ``min.cleanable.dirty.ratio`` (as Kafka's
        cleaner does on each broker)."""
        from kctl.storage.cleaner import clean_log, dirty_ratio

        for (topic, p), rep in self.replicas.items():
            t = md.topics.get(topic)
            if t is None or rep.role == OFFLINE:
                continue
            policy = effective_config(t.config)["cleanup.policy"]
            if "compact" in policy:
                result = None
                try:
                    with rep.lock.hold():
                        rep.log.refresh()
                        if dirty_ratio(rep.log, rep.hw) > rep.log.config.min_cleanable_dirty_ratio:
                            result = clean_log(rep.log, rep.hw, now)
                except (OSError, KctlError) as exc:  # a damaged replica must not stop the broker
                    log.warning("cleaning %s-%d: %s", topic, p, exc)
                if result is not None and result.segments:
                    log.info("compacted %d segment(s) of %s-%d: %d record(s) and %d tombstone(s) removed",
                             len(result.segments), topic, p, result.records_removed, result.tombstones_removed)
            if "delete" in policy and rep.role == LEADER:
                with rep.lock.hold():
                    rep.log.refresh()
                    deleted = rep.log.delete_retained_segments(rep.hw, now)
                if deleted:
                    log.info("retention removed %d segment(s) of %s-%d", len(deleted), topic, p)

    def flush_all(self) -> dict[tuple[str, int], int]:
        """fsync every replica that changed since its last flush; returns the recovery points."""
        points = {}
        for key, rep in self.replicas.items():
            st = rep.log._sf().read_log_end()
            if st is not None and rep.flushed == (st.log_end_offset, st.log_start_offset, st.active_size,
                                                  st.latest_epoch):
                points[key] = st.log_end_offset
                continue
            with rep.lock.hold():
                rep.log.refresh()
                points[key] = rep.log.flush()
                st = rep.log.state
                rep.flushed = (st.log_end_offset, st.log_start_offset, st.active_size, st.latest_epoch)
        return points

    def high_watermarks(self) -> dict[tuple[str, int], int]:
        return {key: rep.hw for key, rep in self.replicas.items()}

    def log_start_offsets(self) -> dict[tuple[str, int], int]:
        return {key: rep.log.log_start_offset for key, rep in self.replicas.items()}
