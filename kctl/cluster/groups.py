"""Consumer groups with no coordinator process: membership, generations, assignment, partition
ownership and committed offsets, all kept in files under ``groups/<group>/``.

In Kafka a broker coordinates each group. Here every member (and every admin command) acts as
the coordinator when it notices something, and they agree through these files::

    groups/<group>/group.json                  generation, assignor, members, assignment
    groups/<group>/group.lock                  held while group.json changes
    groups/<group>/consumer-offsets-checkpoint committed offsets (Kafka's checkpoint text format)
    groups/<group>/offsets.lock                held while a member commits
    groups/<group>/members/<member>.lock       a member's liveness lock; its mtime is the heartbeat
    groups/<group>/owners/<topic>-<p>.lock     the partition's ownership lock

The rules that make it safe:

* ``group.json`` changes only under ``group.lock`` and is replaced atomically (rename), so a
  reader sees one generation or the next, never a mix. Members wait on it with inotify.
* A member holds its member lock (an ``flock``) for its whole life: when it crashes the kernel
  drops the lock and the others notice at once. It renews the lock file's mtime every heartbeat
  interval; a member whose mtime is older than ``group.session.timeout.ms`` is hung and expelled.
* Whoever notices a join, leave, death, hang or partition-count change bumps the generation and
  recomputes the assignment under ``group.lock`` (the first to get the lock does it; the others
  find nothing left to do).
* A member reads a partition only while it holds the partition's ownership lock, and the owner
  commits before it releases it. So the next owner starts exactly where the last one stopped,
  and no two members read one partition at the same moment, not even in mid-rebalance. This is
  why no assignor needs Kafka's revoke-everything round: a member gives up only partitions that
  move, and the new owner waits (in inotify) for the release.
* A hung member keeps its ownership locks until it runs again (then it commits, releases and
  rejoins) or dies; its partitions wait for it rather than being read twice.
* Static members (KIP-345, ``instance_id``) stay in the group when their process goes away, until
  the session timeout; a restart with the same instance id takes the old assignment back with no
  rebalance.

Set ``KCTL_GROUP_TRACE=<file>`` to append a JSON line for every rebalance and every ownership
change (tests and the rebalance benchmark read it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kctl.cluster.assignors import ASSIGNORS, Subscription, TopicPartition, assign
from kctl.cluster.config import broker_settings
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import LockProbe, flock_exclusive, is_held, lock_holder_pids
from kctl.cluster.metadata import ClusterMetadata, Event, MetadataStore, now_ms
from kctl.errors import (
    GroupError,
    GroupNotEmptyError,
    InvalidArgumentError,
    KctlTimeoutError,
    PartitionOfflineError,
    UnknownGroupError,
    UnknownPartitionError,
)
from kctl.storage.checkpoint import atomic_write, read_offsets_checkpoint, write_offsets_checkpoint

__all__ = [
    "COMPLETING_REBALANCE",
    "DEAD",
    "EMPTY",
    "PREPARING_REBALANCE",
    "RESET_MODES",
    "STABLE",
    "GroupAdmin",
    "GroupCoordinator",
    "GroupState",
    "MemberInfo",
    "MemberLock",
    "OwnershipLock",
    "format_partitions",
    "read_owner_member",
    "trace",
    "validate_group_name",
]

# Kafka's group states.
EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"
DEAD = "Dead"

# What a member looks like to the others.
ALIVE = "alive"  # lock held, heartbeat fresh
DEAD_MEMBER = "dead"  # lock free: the process exited (dynamic members leave at once)
AWAY = "away"  # a static member whose process is gone, kept until the session timeout
EXPIRED = "expired"  # no heartbeat for the session timeout (hung, or static and gone too long)

STATE_FILE = "group.json"
OFFSETS_FILE = "consumer-offsets-checkpoint"
RESET_MODES = ("to-earliest", "to-latest", "to-offset", "shift-by", "to-datetime", "by-duration")

_NAME_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")


def validate_group_name(name: str, what: str = "group") -> str:
    """Group (and instance) ids become directory and file names: 1-249 of ``[a-zA-Z0-9._-]``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise InvalidArgumentError(
            f"invalid {what} name {name!r}: use 1-249 letters, digits, '.', '_' or '-'")
    return name


def _tp_text(tp: TopicPartition) -> str:
    return f"{tp[0]}-{tp[1]}"


def format_partitions(tps: Iterable[TopicPartition]) -> str:
    """``orders-0,orders-1`` for messages."""
    return ",".join(_tp_text(tp) for tp in sorted(tps)) or "-"


# -- tracing ------------------------------------------------------------------------------------
_trace_fd: int | None = None


def trace(op: str, **fields: Any) -> None:
    """Append one line to ``$KCTL_GROUP_TRACE`` (if set): a rebalance or an ownership change.

    Lines carry ``time.monotonic()`` (one clock for every process on the machine) and are
    written with one ``O_APPEND`` write each, so the file is a total order of what happened.
    """
    global _trace_fd
    path = os.environ.get("KCTL_GROUP_TRACE")
    if not path:
        return
    if _trace_fd is None:
        _trace_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    rec = {"t": time.monotonic(), "pid": os.getpid(), "op": op}
    rec.update(fields)
    os.write(_trace_fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())


# -- locks --------------------------------------------------------------------------------------
class _Section:
    """A short exclusive section on a lock file, retried every millisecond or so.

    filelock polls every 50 ms; a rebalance passes through this lock on its critical path, so
    it retries much more often (an uncontended acquire is one ``flock``). A holder that dies
    releases it through the kernel; the timeout only guards against a holder that hangs. The
    lock is re-taken if the file was replaced under us (``kctl group delete`` renames the group
    directory away).
    """

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what

    @contextlib.contextmanager
    def hold(self, timeout: float = 30.0) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                flock_exclusive(fd, max(0.0, deadline - time.monotonic()), self.what, self.path)
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(self.path))
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        yield
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    return
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
            os.makedirs(os.path.dirname(self.path), exist_ok=True)


class _FlockFile:
    """An exclusive ``flock`` on a file, kept open while waited for (see :class:`OwnershipLock`).

    The same lock portalocker takes on Linux, without importing it (its import costs a consumer
    process about 0.1 s, more on a busy machine).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self.held = False

    def try_acquire(self, owner: str) -> bool:
        """Take the lock if it is free and write ``owner`` into the file."""
        if self.held:
            return True
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, owner.encode(), 0)
        return True

    def touch(self) -> None:
        """Renew the heartbeat: the lock file's mtime."""
        os.utime(self._fd)

    def release(self) -> None:
        if self._fd >= 0:
            try:
                if self.held:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = -1
                self.held = False


class MemberLock(_FlockFile):
    """A member's liveness lock, held for the member's whole life; its mtime is the heartbeat."""


class OwnershipLock(_FlockFile):
    """The ownership lock of one partition: held while the member reads the partition.

    The file stays open while a member waits for it, so that failed attempts do not close a
    writable descriptor (which inotify would report to every other waiter as a release).
    Closing it on :meth:`release` is what wakes the next owner.
    """

    def __init__(self, path: str, tp: TopicPartition) -> None:
        super().__init__(path)
        self.tp = tp

    def try_acquire(self, owner: str) -> bool:
        return super().try_acquire(f"{owner} {os.getpid()}\n")


def read_owner_member(path: str) -> str | None:
    """The member id written into an ownership lock by its last holder."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            words = f.read().split()
    except OSError:
        return None
    return words[0] if words else None


# -- state --------------------------------------------------------------------------------------
@dataclass
class MemberInfo:
    """What a member registers when it joins (Kafka's member metadata)."""

    member_id: str
    client_id: str
    host: str
    pid: int
    topics: tuple[str, ...]
    instance_id: str | None = None
    joined_ms: int = 0

    @classmethod
    def new(cls, client_id: str, topics: Sequence[str], instance_id: str | None = None) -> MemberInfo:
        """A fresh member id, as Kafka makes them: ``client-id`` + ``-`` + a UUID."""
        return cls(f"{client_id}-{uuid.uuid4()}", client_id, socket.gethostname(), os.getpid(),
                   tuple(sorted(set(topics))), instance_id, now_ms())

    @property
    def static(self) -> bool:
        return self.instance_id is not None

    def to_json(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "host": self.host, "pid": self.pid, "topics": list(self.topics),
                "instance_id": self.instance_id, "joined_ms": self.joined_ms}

    @classmethod
    def from_json(cls, member_id: str, d: Mapping[str, Any]) -> MemberInfo:
        return cls(member_id, str(d.get("client_id", "")), str(d.get("host", "")), int(d.get("pid", 0)),
                   tuple(d.get("topics", ())), d.get("instance_id"), int(d.get("joined_ms", 0)))


@dataclass
class GroupState:
    """The contents of ``group.json``: one generation of the group."""

    group: str
    generation: int = 0
    assignor: str = "range"
    members: dict[str, MemberInfo] = field(default_factory=dict)
    assignment: dict[str, list[TopicPartition]] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    """Partition count of every subscribed topic when the assignment was computed."""
    leader: str | None = None
    reason: str = ""
    updated_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "generation": self.generation,
            "assignor": self.assignor,
            "leader": self.leader,
            "reason": self.reason,
            "updated_ms": self.updated_ms,
            "members": {m: info.to_json() for m, info in sorted(self.members.items())},
            "assignment": {m: [[t, p] for t, p in parts] for m, parts in sorted(self.assignment.items())},
            "partitions": dict(sorted(self.partitions.items())),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GroupState:
        return cls(
            group=str(d["group"]),
            generation=int(d.get("generation", 0)),
            assignor=str(d.get("assignor", "range")),
            members={m: MemberInfo.from_json(m, v) for m, v in d.get("members", {}).items()},
            assignment={m: [(str(t), int(p)) for t, p in v] for m, v in d.get("assignment", {}).items()},
            partitions={str(t): int(n) for t, n in d.get("partitions", {}).items()},
            leader=d.get("leader"),
            reason=str(d.get("reason", "")),
            updated_ms=int(d.get("updated_ms", 0)),
        )

    def owner_of(self) -> dict[TopicPartition, str]:
        return {tp: m for m, parts in self.assignment.items() for tp in parts}


def _member_file(member_id: str) -> str:
    return _UNSAFE.sub("_", member_id) + ".lock"


# -- the coordinator ----------------------------------------------------------------------------
class GroupCoordinator:
    """Reads and changes one group's files. One per process and group; not thread-safe.

    Every method that changes ``group.json`` takes ``group.lock``; readers take nothing.
    """

    def __init__(self, layout: ClusterLayout, group: str, store: MetadataStore | None = None) -> None:
        self.layout = layout
        self.group = validate_group_name(group)
        self.store = store or MetadataStore(layout)
        self.dir = layout.group_dir(group)
        self.state_path = os.path.join(self.dir, STATE_FILE)
        self.offsets_path = os.path.join(self.dir, OFFSETS_FILE)
        self.members_dir = os.path.join(self.dir, "members")
        self.owners_dir = os.path.join(self.dir, "owners")
        self.lock = _Section(os.path.join(self.dir, "group.lock"), f"group '{group}'")
        self.offsets_lock = _Section(os.path.join(self.dir, "offsets.lock"), f"group '{group}' offsets")
        settings = broker_settings(layout.read_cluster_file().get("settings", {}))
        self.session_timeout_ms = settings["group.session.timeout.ms"]
        self.heartbeat_interval_ms = settings["group.heartbeat.interval.ms"]
        self._cache: GroupState | None = None
        self._cache_key: tuple[int, int, int] | None = None
        self._probes: dict[str, LockProbe] = {}

    # -- paths --------------------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def ensure_dirs(self) -> None:
        os.makedirs(self.members_dir, exist_ok=True)
        os.makedirs(self.owners_dir, exist_ok=True)

    def member_lock_path(self, member_id: str) -> str:
        return os.path.join(self.members_dir, _member_file(member_id))

    def owner_lock_path(self, tp: TopicPartition) -> str:
        return os.path.join(self.owners_dir, f"{tp[0]}-{tp[1]}.lock")

    def ownership(self, tp: TopicPartition) -> OwnershipLock:
        return OwnershipLock(self.owner_lock_path(tp), tp)

    # -- group.json ---------------------------------------------------------------------------
    def load_state(self, fresh: bool = False) -> GroupState:
        """The current state (cached until the file changes); an empty state if there is none."""
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            self._cache, self._cache_key = None, None
            return GroupState(self.group)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if not fresh and self._cache is not None and key == self._cache_key:
            return self._cache
        for _ in range(5):
            try:
                with open(self.state_path, encoding="utf-8") as f:
                    st = os.fstat(f.fileno())
                    data = json.load(f)
                break
            except FileNotFoundError:
                time.sleep(0.001)
            except (ValueError, OSError) as exc:
                raise GroupError(f"{self.state_path} is damaged: {exc}") from None
        else:
            return GroupState(self.group)
        try:
            state = GroupState.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise GroupError(f"{self.state_path} is damaged: {exc}") from None
        self._cache, self._cache_key = state, (st.st_ino, st.st_mtime_ns, st.st_size)
        return state

    def state_changed(self) -> bool:
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return self._cache_key is not None
        return (st.st_ino, st.st_mtime_ns, st.st_size) != self._cache_key

    def _write_state(self, state: GroupState) -> None:
        """Caller holds ``group.lock``."""
        state.updated_ms = now_ms()
        atomic_write(self.state_path, json.dumps(state.to_json(), indent=1).encode())
        self._cache_key = None

    # -- members ------------------------------------------------------------------------------
    def register(self, info: MemberInfo) -> MemberLock:
        """Create and take the member's liveness lock (before joining, so a crash is visible)."""
        self.ensure_dirs()
        lock = MemberLock(self.member_lock_path(info.member_id))
        owner = json.dumps({"member_id": info.member_id, "pid": info.pid, "host": info.host,
                            "client_id": info.client_id}) + "\n"
        if not lock.try_acquire(owner):
            lock.release()
            raise GroupError(f"member lock {lock.path} is held by another process")
        return lock

    def member_status(self, member: MemberInfo, now: float | None = None) -> str:
        """``alive``, ``dead``, ``away`` (static, gone for less than the session timeout) or ``expired``."""
        path = self.member_lock_path(member.member_id)
        probe = self._probes.get(member.member_id)
        if probe is None:
            probe = self._probes[member.member_id] = LockProbe(path)
        held = probe.held()
        try:
            mtime: float | None = os.stat(path).st_mtime
        except FileNotFoundError:
            mtime = None
        now = time.time() if now is None else now
        stale = mtime is None or (now - mtime) * 1000.0 > self.session_timeout_ms
        if held:
            return EXPIRED if stale else ALIVE
        if member.static:
            return EXPIRED if stale else AWAY
        return DEAD_MEMBER

    def forget_departed(self, state: GroupState) -> None:
        """Close the lock probes of members no longer listed (a long-lived member sees many go)."""
        for mid in list(self._probes):
            if mid not in state.members:
                self._probes.pop(mid).close()

    def live_member_pids(self) -> list[int]:
        """PIDs of every process holding a member lock of this group (listed or not)."""
        pids: list[int] = []
        try:
            names = os.listdir(self.members_dir)
        except FileNotFoundError:
            return pids
        for name in sorted(names):
            path = os.path.join(self.members_dir, name)
            if name.endswith(".lock") and is_held(path):
                holders = lock_holder_pids(path)
                pids.extend(sorted(holders) if holders else [0])
        return pids

    def partition_counts(self, state: GroupState, md: ClusterMetadata) -> dict[str, int]:
        topics = {t for m in state.members.values() for t in m.topics}
        return {t: (len(md.topics[t].partitions) if t in md.topics else 0) for t in sorted(topics)}

    def pending_changes(self, state: GroupState, md: ClusterMetadata, me: str | None = None) -> list[str]:
        """Why the group needs a rebalance now (lock-free; empty if it does not)."""
        reasons: list[str] = []
        now = time.time()
        for mid, m in state.members.items():
            if mid == me:
                continue
            status = self.member_status(m, now)
            if status in (DEAD_MEMBER, EXPIRED):
                reasons.append(f"member {mid} {status}")
        if state.members and self.partition_counts(state, md) != state.partitions:
            reasons.append("partitions changed")
        return reasons

    def _expel(self, state: GroupState, events: list[Event], skip: str | None = None) -> list[str]:
        """Remove dead and expired members (caller holds ``group.lock``); returns the reasons."""
        reasons = []
        now = time.time()
        for mid, m in list(state.members.items()):
            if mid == skip:
                continue
            status = self.member_status(m, now)
            if status == DEAD_MEMBER:
                why = "process exited"
            elif status == EXPIRED:
                why = f"session timeout: no heartbeat for {self.session_timeout_ms} ms"
            else:
                continue
            state.members.pop(mid)
            state.assignment.pop(mid, None)
            events.append({"type": "group_member_died", "group": self.group, "member_id": mid,
                           "client_id": m.client_id, "host": m.host, "pid": m.pid, "reason": why})
            reasons.append(f"member {mid} {status}")
            if status == DEAD_MEMBER or not is_held(self.member_lock_path(mid)):
                self._unlink_member_file(mid)
        return reasons

    def _unlink_member_file(self, member_id: str) -> None:
        """Only for a member whose lock is free and that is no longer listed (nobody takes it)."""
        probe = self._probes.pop(member_id, None)
        if probe is not None:
            probe.close()
        try:
            os.unlink(self.member_lock_path(member_id))
        except FileNotFoundError:
            pass

    def _sweep_member_files(self, state: GroupState) -> None:
        """Delete lock files of members that are neither listed nor alive (crash leftovers)."""
        listed = {_member_file(m) for m in state.members}
        try:
            names = os.listdir(self.members_dir)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self.members_dir, name)
            if name.endswith(".lock") and name not in listed and not is_held(path):
                try:
                    if time.time() - os.stat(path).st_mtime > 1.0:  # not a member about to join
                        os.unlink(path)
                except FileNotFoundError:
                    pass

    def _rebalance(self, state: GroupState, md: ClusterMetadata, reason: str, events: list[Event]) -> None:
        """Bump the generation and recompute the assignment (caller holds ``group.lock``)."""
        state.generation += 1
        state.reason = reason
        counts = self.partition_counts(state, md)
        state.partitions = counts
        # Kafka sorts static members by instance id, so that a restart (new member id) keeps
        # the member's place in range and round-robin order.
        keys: dict[str, str] = {}
        for mid, m in state.members.items():
            key = f"{m.instance_id}" if m.instance_id else mid
            keys[mid] = key if key not in keys.values() else mid
        back = {k: m for m, k in keys.items()}
        subs = [Subscription(keys[mid], m.topics, tuple(state.assignment.get(mid, ())), state.generation - 1)
                for mid, m in sorted(state.members.items())]
        result = assign(state.assignor, subs, counts) if subs else {}
        state.assignment = {back[k]: list(parts) for k, parts in result.items()}
        state.leader = back[min(back)] if back else None
        events.append({"type": "group_rebalance", "group": self.group, "generation": state.generation,
                       "members": sorted(state.members), "assignor": state.assignor, "reason": reason})
        trace("rebalance", group=self.group, generation=state.generation, reason=reason,
              assignment={m: [_tp_text(tp) for tp in parts] for m, parts in state.assignment.items()})

    def _record(self, events: list[Event]) -> None:
        if events:
            self.store.record_events(events)

    # -- membership changes (each under group.lock) ---------------------------------------------
    def join(self, info: MemberInfo, assignor: str, md: ClusterMetadata) -> GroupState:
        """Add a member (or bring a static member back) and rebalance if anything moved."""
        if assignor not in ASSIGNORS:
            raise InvalidArgumentError(f"unknown assignor {assignor!r} (choose from: {', '.join(ASSIGNORS)})")
        events: list[Event] = []
        with self.lock.hold():
            if not os.path.exists(self.member_lock_path(info.member_id)):
                raise GroupError(f"group '{self.group}' was deleted while {info.member_id} was joining")
            state = self.load_state(fresh=True)
            reasons = self._expel(state, events, skip=info.member_id)
            if state.members and state.assignor != assignor:
                raise GroupError(
                    f"group '{self.group}' uses the {state.assignor} assignor; its members must all use it "
                    f"(join with --assignor {state.assignor}, or wait until the group is empty)")
            state.assignor = assignor
            joined = {"type": "group_member_joined", "group": self.group, "member_id": info.member_id,
                      "client_id": info.client_id, "host": info.host, "pid": info.pid,
                      "topics": list(info.topics)}
            previous = None
            if info.instance_id is not None:
                joined["instance_id"] = info.instance_id
                previous = next((m for m in state.members.values() if m.instance_id == info.instance_id), None)
            if previous is not None:
                if self.member_status(previous) == ALIVE:
                    raise GroupError(
                        f"instance id '{info.instance_id}' is in use by member {previous.member_id} "
                        f"(pid {previous.pid} on {previous.host}) in group '{self.group}'")
                # KIP-345: the restarted static member takes its predecessor's place and partitions.
                state.members.pop(previous.member_id)
                state.members[info.member_id] = info
                state.assignment[info.member_id] = state.assignment.pop(previous.member_id, [])
                self._unlink_member_file(previous.member_id)
                joined["replaces"] = previous.member_id
                if previous.topics != info.topics:
                    reasons.append("subscription changed")
            else:
                state.members[info.member_id] = info
                reasons.append("member joined")
            events.append(joined)
            if reasons:
                self._rebalance(state, md, reasons[-1] if len(reasons) == 1 else "; ".join(reasons), events)
            else:
                trace("static-rejoin", group=self.group, generation=state.generation, member=info.member_id)
            joined["generation"] = state.generation
            self._write_state(state)
            self._sweep_member_files(state)
            self._record(events)
            return state

    def maybe_rebalance(self, md: ClusterMetadata, me: str | None = None, timeout: float = 30.0) -> GroupState:
        """Expel dead and hung members and follow partition changes, if any (under the lock)."""
        events: list[Event] = []
        with self.lock.hold(timeout):
            state = self.load_state(fresh=True)
            reasons = self._expel(state, events, skip=me)
            if state.members and self.partition_counts(state, md) != state.partitions:
                reasons.append("partitions changed")
            if reasons or events:
                self._rebalance(state, md, "; ".join(reasons), events)
                self._write_state(state)
                self._record(events)
            self.forget_departed(state)
            return state

    def leave(self, member_id: str, md: ClusterMetadata, reason: str = "consumer closed") -> GroupState:
        """A clean leave: remove the member and hand its partitions to the others."""
        events: list[Event] = []
        with self.lock.hold():
            state = self.load_state(fresh=True)
            info = state.members.pop(member_id, None)
            if info is None:
                return state
            state.assignment.pop(member_id, None)
            events.append({"type": "group_member_left", "group": self.group, "member_id": member_id,
                           "client_id": info.client_id, "host": info.host, "pid": info.pid, "reason": reason})
            reasons = [f"member {member_id} left", *self._expel(state, events, skip=member_id)]
            self._rebalance(state, md, "; ".join(reasons), events)
            self._write_state(state)
            self._record(events)
            return state

    # -- offsets ------------------------------------------------------------------------------
    def committed(self) -> dict[TopicPartition, int]:
        """Committed offsets (the next offset to read); lock-free (the file is renamed into place)."""
        return read_offsets_checkpoint(self.offsets_path)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Store offsets. The caller owns these partitions (holds their ownership locks)."""
        if not offsets:
            return
        with self.offsets_lock.hold():
            current = read_offsets_checkpoint(self.offsets_path)
            current.update({tp: int(off) for tp, off in offsets.items()})
            write_offsets_checkpoint(self.offsets_path, current)

    # -- what describe shows ------------------------------------------------------------------
    def group_state_name(self, state: GroupState, md: ClusterMetadata | None = None) -> str:
        """Kafka's group state, derived from the files."""
        if not state.members:
            return EMPTY if self.exists() else DEAD
        now = time.time()
        statuses = {mid: self.member_status(m, now) for mid, m in state.members.items()}
        if any(s in (DEAD_MEMBER, EXPIRED) for s in statuses.values()):
            return PREPARING_REBALANCE
        if md is not None and self.partition_counts(state, md) != state.partitions:
            return PREPARING_REBALANCE
        for mid, parts in state.assignment.items():
            if statuses.get(mid) != ALIVE:
                continue
            for tp in parts:
                path = self.owner_lock_path(tp)
                if read_owner_member(path) != mid or not is_held(path):
                    return COMPLETING_REBALANCE
        return STABLE

    def close(self) -> None:
        for probe in self._probes.values():
            probe.close()
        self._probes.clear()


# -- admin -------------------------------------------------------------------------------------
def _partition_bounds(layout: ClusterLayout, md: ClusterMetadata, topic: str, p: int
                      ) -> tuple[int | None, int | None]:
    """(log start, high watermark) of a partition's leader; (None, None) when it is offline."""
    from kctl.storage.log import ReplicaStateFile

    t = md.topics.get(topic)
    if t is None or not 0 <= p < len(t.partitions) or t.partitions[p].leader is None:
        return None, None
    try:
        sf = ReplicaStateFile(layout.replica_dir(t.partitions[p].leader, topic, p))
    except FileNotFoundError:
        return None, None
    try:
        st = sf.read_log_end()
        hw = sf.read_high_watermark()
    finally:
        sf.close()
    if st is None:
        return None, None
    high = st.log_start_offset if hw is None else min(max(hw.high_watermark, st.log_start_offset), st.log_end_offset)
    return st.log_start_offset, high


def _offset_for_timestamp(layout: ClusterLayout, md: ClusterMetadata, topic: str, p: int, ts: int) -> int | None:
    from kctl.storage.log import LogReader

    leader = md.topic(topic).partitions[p].leader
    if leader is None:
        return None
    with LogReader(layout.replica_dir(leader, topic, p)) as reader:
        return reader.offset_for_timestamp(ts)


class GroupAdmin:
    """What ``kctl group ...`` does: list, describe (with lag), reset offsets, delete."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.layout = ClusterLayout.at(data_dir)
        self.layout.read_cluster_file()
        self.store = MetadataStore(self.layout)

    def coordinator(self, group: str) -> GroupCoordinator:
        return GroupCoordinator(self.layout, group, self.store)

    def group_names(self) -> list[str]:
        try:
            names = os.listdir(self.layout.groups_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith(".") and _NAME_RE.fullmatch(n)
                      and os.path.isdir(os.path.join(self.layout.groups_dir, n)))

    def _existing(self, group: str) -> GroupCoordinator:
        coord = self.coordinator(group)
        if not coord.exists():
            raise UnknownGroupError(f"group '{group}' does not exist (see: kctl group list)")
        return coord

    def _settled_state(self, coord: GroupCoordinator, md: ClusterMetadata) -> GroupState:
        """The group's state, after finishing a rebalance that no live member is left to do.

        Members notice deaths, hangs and partition changes themselves within milliseconds; when
        the last member has crashed there is nobody to notice, so the reader does it (as Kafka's
        coordinator empties a group whose last member timed out).
        """
        state = coord.load_state()
        if not state.members or not coord.pending_changes(state, md):
            return state
        if any(coord.member_status(m) == ALIVE for m in state.members.values()):
            return state
        try:
            return coord.maybe_rebalance(md, timeout=2.0)
        except (KctlTimeoutError, OSError):
            return state

    def list_groups(self) -> list[dict[str, Any]]:
        """``[{"group", "state", "members"}]``."""
        md = self.store.load()
        out = []
        for name in self.group_names():
            coord = self.coordinator(name)
            state = self._settled_state(coord, md)
            out.append({"group": name, "state": coord.group_state_name(state, md),
                        "members": len(state.members), "generation": state.generation,
                        "assignor": state.assignor if state.members else None})
            coord.close()
        return out

    def group_lag(self, group: str) -> list[dict[str, Any]]:
        """Per partition: committed offset, log end offset (the high watermark), lag and owner.

        Covers every partition of the subscribed topics, plus any other partition with a
        committed offset. Unknown values (nothing committed, partition offline) are None.
        """
        coord = self._existing(group)
        try:
            return self._lag(coord, coord.load_state(), self.store.load())
        finally:
            coord.close()

    def _lag(self, coord: GroupCoordinator, state: GroupState, md: ClusterMetadata) -> list[dict[str, Any]]:
        committed = coord.committed()
        owners = state.owner_of()
        tps = set(committed) | set(owners)
        for m in state.members.values():
            for t in m.topics:
                if t in md.topics:
                    tps.update((t, p) for p in range(len(md.topics[t].partitions)))
        rows = []
        for tp in sorted(tps):
            _start, hw = _partition_bounds(self.layout, md, tp[0], tp[1])
            cur = committed.get(tp)
            lag = max(0, hw - cur) if hw is not None and cur is not None else None
            rows.append({"topic": tp[0], "partition": tp[1], "current_offset": cur, "log_end_offset": hw,
                         "lag": lag, "member_id": owners.get(tp)})
        return rows

    def describe_group(self, group: str) -> dict[str, Any]:
        """The ``group describe`` JSON document (cli.md)."""
        coord = self._existing(group)
        try:
            md = self.store.load()
            state = self._settled_state(coord, md)
            now = time.time()
            partitions = self._lag(coord, state, md)
            members = []
            for mid, m in sorted(state.members.items(), key=lambda kv: (kv[1].client_id, kv[0])):
                members.append({
                    "member_id": mid, "client_id": m.client_id, "host": m.host, "pid": m.pid,
                    "instance_id": m.instance_id, "status": coord.member_status(m, now),
                    "topics": list(m.topics),
                    "assignment": [{"topic": t, "partition": p} for t, p in state.assignment.get(mid, [])],
                })
            lags = [r["lag"] for r in partitions if r["lag"] is not None]
            return {"group": group, "state": coord.group_state_name(state, md), "generation": state.generation,
                    "assignor": state.assignor if state.members else None, "leader": state.leader,
                    "total_lag": sum(lags), "members": members, "partitions": partitions}
        finally:
            coord.close()

    def _refuse_live(self, coord: GroupCoordinator, what: str) -> None:
        pids = coord.live_member_pids()
        if pids:
            shown = ", ".join(str(p) for p in pids if p) or "unknown"
            raise GroupNotEmptyError(
                f"cannot {what} group '{coord.group}': it has {len(pids)} live member(s) (pid {shown}); "
                "stop its consumers first")

    def reset_offsets(self, group: str, targets: Sequence[tuple[str, Sequence[int] | None]] | None, mode: str,
                      value: int | None = None, *, execute: bool = False) -> list[dict[str, Any]]:
        """Kafka's ``--reset-offsets``: compute (and with ``execute`` store) new committed offsets.

        ``targets`` are (topic, partitions or None for all); None means every topic the group
        has offsets for or subscribes to. ``value`` is the offset (``to-offset``), the shift
        (``shift-by``), epoch ms (``to-datetime``) or a duration in ms (``by-duration``). New
        offsets are clamped to [log start, high watermark], as Kafka's tool does.
        """
        if mode not in RESET_MODES:
            raise InvalidArgumentError(f"unknown reset mode {mode!r} (one of: {', '.join(RESET_MODES)})")
        if mode in ("to-offset", "shift-by", "to-datetime", "by-duration") and value is None:
            raise InvalidArgumentError(f"--{mode} needs a value")
        coord = self.coordinator(group)
        md = self.store.load()
        if targets is None and not coord.exists():
            raise UnknownGroupError(f"group '{group}' does not exist (see: kctl group list)")
        plan: list[dict[str, Any]] = []
        if execute:
            coord.ensure_dirs()
            ctx: contextlib.AbstractContextManager[None] = coord.lock.hold()
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            self._refuse_live(coord, "reset the offsets of")
            committed = coord.committed()
            tps = self._reset_targets(coord, md, targets, committed)
            stamp = now_ms()
            for tp in tps:
                start, hw = _partition_bounds(self.layout, md, tp[0], tp[1])
                if start is None or hw is None:
                    raise PartitionOfflineError(f"partition {tp[0]}-{tp[1]} has no live leader; "
                                                "its offsets cannot be looked up now")
                cur = committed.get(tp)
                if mode == "to-earliest":
                    new = start
                elif mode == "to-latest":
                    new = hw
                elif mode == "to-offset":
                    new = int(value or 0)
                elif mode == "shift-by":
                    new = (start if cur is None else cur) + int(value or 0)
                else:
                    ts = int(value or 0) if mode == "to-datetime" else stamp - int(value or 0)
                    found = _offset_for_timestamp(self.layout, md, tp[0], tp[1], ts)
                    new = hw if found is None else found
                new = min(max(new, start), hw)
                plan.append({"topic": tp[0], "partition": tp[1], "current_offset": cur, "new_offset": new})
            if execute and plan:
                with coord.offsets_lock.hold():
                    offsets = coord.committed()
                    offsets.update({(r["topic"], r["partition"]): r["new_offset"] for r in plan})
                    write_offsets_checkpoint(coord.offsets_path, offsets)
                self.store.record_events([{
                    "type": "offsets_reset", "group": group, "mode": mode,
                    "offsets": [f"{r['topic']}-{r['partition']}={r['new_offset']}" for r in plan]}])
        coord.close()
        return plan

    def _reset_targets(self, coord: GroupCoordinator, md: ClusterMetadata,
                       targets: Sequence[tuple[str, Sequence[int] | None]] | None,
                       committed: Mapping[TopicPartition, int]) -> list[TopicPartition]:
        if targets is None:
            topics = {t for t, _p in committed}
            for m in coord.load_state().members.values():
                topics.update(m.topics)
            targets = [(t, None) for t in sorted(topics) if t in md.topics]
        out: list[TopicPartition] = []
        for topic, parts in targets:
            count = len(md.topic(topic).partitions)
            for p in (range(count) if parts is None else parts):
                if not 0 <= p < count:
                    raise UnknownPartitionError(f"topic '{topic}' has no partition {p} (it has {count})")
                out.append((topic, p))
        return sorted(dict.fromkeys(out))

    def delete_group(self, group: str) -> None:
        """Remove the group's state and committed offsets; refused while any member lives."""
        coord = self._existing(group)
        graveyard = os.path.join(self.layout.groups_dir, f".deleted-{group}-{uuid.uuid4().hex[:8]}")
        with coord.lock.hold():
            self._refuse_live(coord, "delete")
            # One rename makes the group vanish at once; the files go after.
            os.rename(coord.dir, graveyard)
        shutil.rmtree(graveyard, ignore_errors=True)
        self.store.record_events([{"type": "group_deleted", "group": group}])
        coord.close()
