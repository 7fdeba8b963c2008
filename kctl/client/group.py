"""A consumer group member: ``kctl consume TOPIC -g GROUP`` in library form.

:class:`GroupConsumer` wraps a :class:`~kctl.client.consumer.Consumer` and lets the group decide
which partitions it reads. All coordination goes through the group's files
(:mod:`kctl.cluster.groups`); this class is the member's side of it:

* it registers (member lock), joins under the group lock and heartbeats by renewing its lock
  file's mtime from :meth:`poll`;
* on every :meth:`poll` it checks the group: a new generation, a member that died or hung, a
  topic that grew. Whoever notices a change first rebalances for everybody;
* it reads a partition only after taking the partition's ownership lock, which the previous owner
  releases only after committing; it gives up only the partitions that move;
* committed offsets follow what the application has written out (:meth:`delivered`), so delivery
  is at-least-once, and exactly once across clean hand-overs.

Waiting never spins: :meth:`poll` sleeps in the consumer's inotify watcher, which also watches the
group state file, the members' lock files (a crash closes them) and the ownership locks (a
release closes them), with a timeout no longer than the heartbeat interval.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence

from kctl.client.consumer import Consumer, FetchedBatch, TopicPartition
from kctl.client.offsetspec import OffsetSpec
from kctl.cluster.assignors import ASSIGNORS
from kctl.cluster.config import validate_topic_name
from kctl.cluster.groups import (
    GroupCoordinator,
    GroupState,
    MemberInfo,
    MemberLock,
    OwnershipLock,
    format_partitions,
    trace,
    validate_group_name,
)
from kctl.cluster.watch import IN_CLOSE_WRITE, IN_MOVED_TO
from kctl.errors import GroupError, InvalidArgumentError, KctlError, UnknownPartitionError, UnknownTopicError

__all__ = ["DEFAULT_COMMIT_INTERVAL", "GroupConsumer"]

DEFAULT_COMMIT_INTERVAL = 0.2
"""Seconds between automatic commits of delivered offsets (also committed on revoke and close)."""


class GroupConsumer:
    """One member of a consumer group. Not thread-safe; use one per thread or process.

    ``start`` is where a partition starts the first time this member gets it: None or
    ``stored`` means the committed offset, else ``reset``; any other spec (beginning, end, an
    offset, ``-N``, a timestamp) overrides the committed offset on that first assignment.
    With ``auto_commit`` False nothing is committed unless :meth:`commit` is called.
    """

    def __init__(self, data_dir: str | os.PathLike[str], group: str, topics: Sequence[str], *,
                 assignor: str = "range", reset: str = "earliest", start: OffsetSpec | None = None,
                 instance_id: str | None = None, client_id: str = "kctl", auto_commit: bool = True,
                 on_reset: Callable[[TopicPartition, int, int, str], None] | None = None,
                 on_event: Callable[[str], None] | None = None,
                 commit_interval: float = DEFAULT_COMMIT_INTERVAL) -> None:
        validate_group_name(group)
        if not topics:
            raise InvalidArgumentError("a group member needs at least one topic")
        for t in topics:
            validate_topic_name(t)
        if assignor not in ASSIGNORS:
            raise InvalidArgumentError(f"unknown assignor {assignor!r} (choose from: {', '.join(ASSIGNORS)})")
        if instance_id is not None:
            validate_group_name(instance_id, "instance id")
        if reset not in ("earliest", "latest"):
            raise InvalidArgumentError(f"reset must be earliest or latest (got {reset!r})")
        self.group = group
        self.topics = tuple(dict.fromkeys(topics))
        self.assignor = assignor
        self.reset = reset
        self.start = start
        self.instance_id = instance_id
        self.client_id = client_id
        self.auto_commit = auto_commit
        self.commit_interval = commit_interval
        self._on_event = on_event
        self.member_id = ""
        self.generation = -1
        self._member_lock: MemberLock | None = None
        self._owned: dict[TopicPartition, OwnershipLock] = {}
        self._pending: dict[TopicPartition, OwnershipLock] = {}
        self._blocked: set[TopicPartition] = set()
        self._waiting_noted: set[TopicPartition] = set()
        self._delivered: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int | None] = {}
        self._seen: set[TopicPartition] = set()
        self._last_commit = time.monotonic()
        self._next_heartbeat = 0.0
        self._closed = False
        self._consumer = Consumer(data_dir, reset=reset, on_reset=on_reset)
        try:
            self._coord = GroupCoordinator(self._consumer.layout, group, self._consumer.store)
            self._coord.ensure_dirs()
            self._heartbeat_interval = self._coord.heartbeat_interval_ms / 1000.0
            watcher = self._consumer.watcher
            watcher.watch(self._coord.dir, IN_MOVED_TO)
            watcher.watch(self._coord.members_dir, IN_CLOSE_WRITE)
            watcher.watch(self._coord.owners_dir, IN_CLOSE_WRITE)
            self._consumer.store.lock  # noqa: B018 - import filelock now, not in the middle of a rebalance
            self._join()
        except BaseException:
            self._consumer.close()
            raise

    # -- membership -----------------------------------------------------------------------------
    def _event(self, message: str) -> None:
        if self._on_event is not None:
            self._on_event(message)

    def _join(self) -> None:
        info = MemberInfo.new(self.client_id, self.topics, self.instance_id)
        lock = self._coord.register(info)
        try:
            state = self._coord.join(info, self.assignor, self._consumer.metadata())
        except BaseException:
            lock.release()
            _unlink(lock.path)
            raise
        self._member_lock = lock
        self.member_id = info.member_id
        self.generation = -1
        self._next_heartbeat = time.monotonic() + self._heartbeat_interval
        static = f", static member '{self.instance_id}'" if self.instance_id else ""
        self._event(f"joined group {self.group} as {self.member_id} (generation {state.generation}, "
                    f"{state.assignor} assignor{static})")
        self._sync(state)

    def _fenced(self) -> None:
        """We were expelled (no heartbeat within the session timeout): hand over and rejoin.

        We still hold our ownership locks, so nobody read our partitions meanwhile and our
        commits are still the truth: commit, release, then join again with a new member id.
        """
        self._event(f"member {self.member_id} was removed from group {self.group} (no heartbeat within "
                    f"{self._coord.session_timeout_ms} ms); rejoining")
        self._revoke(list(self._owned))
        self._drop_pending(list(self._pending))
        self._release_member_lock(unlink=True)
        self._join()

    def _release_member_lock(self, unlink: bool) -> None:
        lock = self._member_lock
        self._member_lock = None
        if lock is not None:
            lock.release()
            if unlink:
                _unlink(lock.path)

    def _tick(self) -> None:
        """Heartbeat, notice group changes (rebalancing if we see one first), follow the assignment."""
        now = time.monotonic()
        if now >= self._next_heartbeat and self._member_lock is not None:
            self._member_lock.touch()
            self._next_heartbeat = now + self._heartbeat_interval
        state = self._coord.load_state()
        if self.member_id not in state.members:
            self._fenced()
            state = self._coord.load_state()
        md = self._consumer.metadata()
        if self._coord.pending_changes(state, md, self.member_id):
            state = self._coord.maybe_rebalance(md, self.member_id)
            if self.member_id not in state.members:
                self._fenced()
                state = self._coord.load_state()
        self._sync(state)
        if self._pending:
            self._acquire_pending()
        if self.auto_commit and time.monotonic() - self._last_commit >= self.commit_interval:
            self._commit()

    def _sync(self, state: GroupState) -> None:
        """Follow the assignment of ``state``: revoke what moved away, wait for what moved here."""
        target = set(state.assignment.get(self.member_id, ()))
        if state.generation != self.generation:
            self._blocked.clear()
            self._coord.forget_departed(state)
        current = set(self._owned) | set(self._pending) | self._blocked
        if state.generation == self.generation and target == current:
            return
        revoked = sorted(tp for tp in self._owned if tp not in target)
        self._revoke(revoked)
        self._drop_pending([tp for tp in self._pending if tp not in target])
        self._blocked &= target
        for tp in sorted(target - set(self._owned) - set(self._pending) - self._blocked):
            self._pending[tp] = self._coord.ownership(tp)
        self.generation = state.generation
        text = f"generation {state.generation}: assigned [{format_partitions(target)}]"
        if revoked:
            text += f", revoked [{format_partitions(revoked)}]"
        self._event(text)
        if self._pending:
            self._acquire_pending()

    def _revoke(self, tps: Sequence[TopicPartition]) -> None:
        """Commit what was delivered, stop reading, then release: the next owner starts there."""
        if not tps:
            return
        if self.auto_commit:
            self._commit(tps)
        self._consumer.unassign(tps)
        for tp in tps:
            lock = self._owned.pop(tp)
            trace("release", group=self.group, member=self.member_id, generation=self.generation,
                  tp=f"{tp[0]}-{tp[1]}")
            lock.release()
            self._delivered.pop(tp, None)
            self._committed.pop(tp, None)

    def _drop_pending(self, tps: Sequence[TopicPartition]) -> None:
        for tp in tps:
            self._pending.pop(tp).release()
            self._waiting_noted.discard(tp)

    def _acquire_pending(self) -> None:
        committed: dict[TopicPartition, int] | None = None
        for tp, lock in list(self._pending.items()):
            if not lock.try_acquire(self.member_id):
                if tp not in self._waiting_noted:
                    self._waiting_noted.add(tp)
                    self._event(f"waiting for the previous owner of {tp[0]}-{tp[1]} to commit and release it")
                continue
            trace("acquire", group=self.group, member=self.member_id, generation=self.generation,
                  tp=f"{tp[0]}-{tp[1]}")
            if committed is None:
                committed = self._coord.committed()
            stored = committed.get(tp)
            try:
                self._consumer.assign({tp: self._start_position(tp, stored)})
            except (UnknownTopicError, UnknownPartitionError):
                # the topic shrank or went away; the rebalance that follows drops it
                trace("release", group=self.group, member=self.member_id, generation=self.generation,
                      tp=f"{tp[0]}-{tp[1]}")
                self._pending.pop(tp).release()
                self._blocked.add(tp)
                continue
            self._pending.pop(tp)
            self._waiting_noted.discard(tp)
            self._owned[tp] = lock
            self._committed[tp] = stored
            self._seen.add(tp)
            position = self._consumer.position(tp)
            if position != stored:
                # Commit a reset or overridden start like Kafka's auto-commit of positions: the
                # next owner must not reset again (with --reset latest it would skip records).
                self._delivered[tp] = position

    def _start_position(self, tp: TopicPartition, stored: int | None) -> int | OffsetSpec:
        spec = self.start
        if spec is not None and spec.kind != "stored" and tp not in self._seen:
            return spec
        if stored is not None:
            return stored
        return OffsetSpec("beginning" if self.reset == "earliest" else "end")

    # -- offsets --------------------------------------------------------------------------------
    def _commit(self, tps: Sequence[TopicPartition] | None = None) -> None:
        wanted = None if tps is None else set(tps)
        offsets = {tp: off for tp, off in self._delivered.items()
                   if tp in self._owned and (wanted is None or tp in wanted) and self._committed.get(tp) != off}
        if offsets:
            self._coord.commit(offsets)
            self._committed.update(offsets)
        self._last_commit = time.monotonic()

    def delivered(self, positions: Mapping[TopicPartition, int]) -> None:
        """The application has written out records up to these next-offsets: they may be committed.

        Commits are batched (every ``commit_interval`` seconds) and always made before a
        partition is released and on :meth:`close`.
        """
        for tp, off in positions.items():
            if tp in self._owned:
                self._delivered[tp] = int(off)
        if self.auto_commit and time.monotonic() - self._last_commit >= self.commit_interval:
            self._commit()

    def commit(self) -> None:
        """Commit every delivered offset now (the only way to commit with ``auto_commit`` off)."""
        self._commit()

    def committed(self) -> dict[TopicPartition, int]:
        """The group's committed offsets for this member's subscription."""
        return {tp: off for tp, off in self._coord.committed().items() if tp[0] in self.topics}

    # -- reading --------------------------------------------------------------------------------
    def poll(self, timeout: float, *, values_only: bool = False) -> list[FetchedBatch]:
        """Records from partitions this member owns; heartbeats and follows rebalances meanwhile."""
        if self._closed:
            raise GroupError("this group consumer is closed")
        deadline = time.monotonic() + timeout
        watcher = self._consumer.watcher
        while True:
            self._tick()
            if self._owned:
                batches = self._consumer.poll(0, values_only=values_only)
                if batches:
                    return batches
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return []
            wait = min(remaining, max(0.0, self._next_heartbeat - now))
            if self.auto_commit and self._has_uncommitted():
                wait = min(wait, max(0.0, self._last_commit + self.commit_interval - now))
            watcher.wait(wait)

    def _has_uncommitted(self) -> bool:
        return any(self._committed.get(tp) != off for tp, off in self._delivered.items() if tp in self._owned)

    def at_end(self) -> bool:
        """Every partition assigned to this member is owned and read to its high watermark."""
        self._tick()
        return not self._pending and self._consumer.at_end()

    def assignment(self) -> list[TopicPartition]:
        """This member's partitions in the current generation (owned or about to be)."""
        return sorted(set(self._owned) | set(self._pending))

    def owned(self) -> list[TopicPartition]:
        """The partitions this member holds right now (and may read)."""
        return sorted(self._owned)

    def lag(self) -> dict[TopicPartition, int]:
        return self._consumer.lag()

    # -- the end ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Commit, release every partition, leave the group (the others rebalance), release the
        member lock. A static member stays listed until the session timeout, so that a restart
        gets its partitions back."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.auto_commit and self._member_lock is not None:
                self._commit()
        finally:
            try:
                self._revoke_without_commit()
                if self._member_lock is not None and self.instance_id is None:
                    try:
                        self._coord.leave(self.member_id, self._consumer.metadata())
                    except KctlError as exc:
                        self._event(f"could not leave group {self.group} cleanly: {exc}")
            finally:
                self._release_member_lock(unlink=self.instance_id is None)
                self._consumer.close()
                self._coord.close()

    def _revoke_without_commit(self) -> None:
        saved, self.auto_commit = self.auto_commit, False
        try:
            self._revoke(list(self._owned))
        finally:
            self.auto_commit = saved
        self._drop_pending(list(self._pending))

    def __enter__(self) -> GroupConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
