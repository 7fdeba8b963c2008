"""``Cluster``: the Python API for a cluster directory (what ``kctl cluster|broker|topic`` call).

    >>> from kctl import Cluster
    >>> c = Cluster.init("/tmp/demo", brokers=3)
    >>> c.start()
    >>> c.create_topic("orders", partitions=3)
    >>> c.describe_topics()["orders"]...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Any

from kctl.cluster import elections
from kctl.cluster.config import broker_settings, effective_config, validate_topic_name
from kctl.cluster.layout import CLUSTER_FILE, FORMAT_VERSION, ClusterLayout
from kctl.cluster.locks import is_held, read_owner
from kctl.cluster.metadata import (
    BROKER_UP,
    BrokerState,
    ClusterMetadata,
    Event,
    MetadataStore,
)
from kctl.cluster.process import broker_pid, signal_broker, spawn_broker, wait_for_exit
from kctl.cluster.topics import alter_topic, create_topic, delete_topic
from kctl.errors import (
    BrokerError,
    ClusterExistsError,
    InvalidArgumentError,
    KctlError,
    NoLiveBrokerError,
    UnknownBrokerError,
    UnknownPartitionError,
    UnknownTopicError,
)
from kctl.storage.checkpoint import atomic_write, write_meta_properties
from kctl.storage.log import ReplicaStateFile


@dataclass
class PartitionInfo:
    topic: str
    partition: int
    leader: int | None
    replicas: list[int]
    isr: list[int]
    leader_epoch: int
    log_start: int | None
    high_watermark: int | None
    log_end: int | None

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "leader": self.leader, "replicas": self.replicas, "isr": self.isr,
                "leader_epoch": self.leader_epoch, "log_start": self.log_start,
                "high_watermark": self.high_watermark, "log_end": self.log_end}


@dataclass
class BrokerInfo:
    broker_id: int
    state: str
    pid: int | None
    controller: bool
    leaders: int
    replicas: int
    epoch: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.broker_id, "state": self.state, "pid": self.pid, "controller": self.controller,
                "leaders": self.leaders, "replicas": self.replicas, "broker_epoch": self.epoch}


def default_data_dir() -> str:
    return os.environ.get("KCTL_DATA_DIR") or "cluster_data"


class Cluster:
    """A cluster directory. Cheap to construct; every call reads the current state from disk."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.layout = ClusterLayout.at(data_dir if data_dir is not None else default_data_dir())
        self.store = MetadataStore(self.layout)
        self._descriptor: dict[str, Any] | None = None

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def init(cls, data_dir: str | os.PathLike[str] | None = None, brokers: int = 3, cluster_id: str | None = None,
             settings: dict[str, Any] | None = None) -> Cluster:
        c = cls(data_dir)
        lay = c.layout
        if not 1 <= brokers <= 64:
            raise InvalidArgumentError(f"--brokers must be between 1 and 64 (got {brokers})")
        clean_settings = broker_settings(settings)  # validates
        overrides = {k: clean_settings[k] for k in (settings or {})}
        if os.path.exists(lay.cluster_file):
            raise ClusterExistsError(f"a cluster already exists at {lay.root} "
                                     "(remove it with: kctl cluster destroy --yes)")
        if os.path.isdir(lay.root):
            foreign = [n for n in os.listdir(lay.root) if n not in ("README.md", ".gitignore")]
            if foreign:
                raise ClusterExistsError(
                    f"{lay.root} is not empty and holds no cluster; refusing to write into it")
        cid = cluster_id or _new_cluster_id()
        if not cid or len(cid) > 64 or not all(ch.isalnum() or ch in "-_" for ch in cid):
            raise InvalidArgumentError("--cluster-id takes 1-64 letters, digits, '-' or '_'")
        ids = list(range(brokers))
        os.makedirs(lay.metadata_dir, exist_ok=True)
        os.makedirs(lay.groups_dir, exist_ok=True)
        for b in ids:
            os.makedirs(lay.broker_dir(b), exist_ok=True)
            write_meta_properties(lay.meta_properties(b), broker_id=b, cluster_id=cid)
        md = ClusterMetadata(cluster_id=cid, brokers={b: BrokerState(b) for b in ids})
        c.store.write_initial(md)
        open(lay.events_file, "a").close()
        c.store.update(lambda m: [{"type": "cluster_created", "cluster_id": cid, "brokers": ids}])
        descriptor = {"format": "kctl", "format_version": FORMAT_VERSION, "cluster_id": cid, "brokers": ids,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "settings": overrides}
        # cluster.json last: its presence means the layout is complete
        atomic_write(lay.cluster_file, json.dumps(descriptor, indent=1).encode())
        return c

    @property
    def descriptor(self) -> dict[str, Any]:
        if self._descriptor is None:
            self._descriptor = self.layout.read_cluster_file()
        return self._descriptor

    @property
    def cluster_id(self) -> str:
        return str(self.descriptor["cluster_id"])

    @property
    def broker_ids(self) -> list[int]:
        return list(self.descriptor["brokers"])

    @property
    def settings(self) -> dict[str, int]:
        return broker_settings(self.descriptor.get("settings", {}))

    def metadata(self) -> ClusterMetadata:
        self.descriptor  # noqa: B018 - a clear error for a missing or foreign directory
        return self.store.load()

    def _check_broker(self, broker_id: int) -> None:
        if broker_id not in self.broker_ids:
            raise UnknownBrokerError(f"broker {broker_id} does not exist (brokers: "
                                     f"{', '.join(map(str, self.broker_ids))})")

    # -- processes ------------------------------------------------------------------------------
    def broker_alive(self, broker_id: int) -> bool:
        return is_held(self.layout.broker_lock(broker_id))

    def controller_id(self) -> int | None:
        """The active controller: the holder of ``controller.lock`` (its file names the broker and
        the controller epoch it won), unless a broker with a newer epoch took over from a hung
        holder, as the metadata then says."""
        if not is_held(self.layout.controller_lock):
            return None
        owner = read_owner(self.layout.controller_lock).split()
        if not owner or not owner[0].isdigit():
            return None
        holder = int(owner[0])
        if len(owner) < 3 or not owner[2].isdigit():
            return holder  # becoming active right now
        md = self.store.load()
        named = md.controller_id
        if named is not None and named != holder and md.controller_epoch > int(owner[2]) \
                and self.broker_alive(named):
            return named
        return holder

    def start_broker(self, broker_id: int, timeout: float = 30.0, wait: bool = True) -> int | None:
        """Start one broker; returns its PID (None if it was already running)."""
        self._check_broker(broker_id)
        if self.broker_alive(broker_id):
            return None
        proc = spawn_broker(self.layout, broker_id)
        if not wait:
            return proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"broker {broker_id} exited at start-up (code {proc.returncode}): "
                                  f"{_tail(self.layout.broker_log(broker_id))}")
            md = self.store.load()
            st = md.brokers.get(broker_id)
            if st is not None and st.state == BROKER_UP and st.pid == proc.pid:
                return proc.pid
            time.sleep(0.01)
        raise BrokerError(f"broker {broker_id} did not come up within {timeout:g}s "
                          f"(see {self.layout.broker_log(broker_id)})")

    def start(self, timeout: float = 30.0) -> list[int]:
        """Start every broker that is not running; return once all are up and a controller is
        active. Idempotent. Returns the ids started."""
        started = []
        procs = {}
        for b in self.broker_ids:
            if not self.broker_alive(b):
                procs[b] = spawn_broker(self.layout, b)
                started.append(b)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for b, proc in procs.items():
                if proc.poll() is not None:
                    raise BrokerError(f"broker {b} exited at start-up (code {proc.returncode}): "
                                      f"{_tail(self.layout.broker_log(b))}")
            md = self.store.load()
            up = all(md.brokers[b].state == BROKER_UP and self.broker_alive(b) for b in self.broker_ids)
            if up and md.controller_id is not None and self.controller_id() is not None \
                    and self._partitions_settled(md):
                return started
            time.sleep(0.01)
        raise BrokerError(f"the cluster did not come up within {timeout:g}s (see the broker.log files in "
                          f"{self.layout.brokers_dir})")

    def _partitions_settled(self, md: ClusterMetadata) -> bool:
        live = md.live_brokers()
        for t in md.topics.values():
            for part in t.partitions:
                if part.leader is None and elections.clean_candidate(part, live) is not None:
                    return False
        return True

    def stop_broker(self, broker_id: int, timeout: float = 30.0) -> bool:
        """Controlled shutdown of one broker; False if it was not running."""
        self._check_broker(broker_id)
        try:
            pid = signal_broker(self.layout, broker_id, signal.SIGTERM)
        except BrokerError:
            if not self.broker_alive(broker_id):
                return False
            raise
        if not wait_for_exit(self.layout, broker_id, timeout, pid):
            raise BrokerError(f"broker {broker_id} did not stop within {timeout:g}s")
        return True

    def stop(self, timeout: float = 30.0) -> list[int]:
        """Controlled shutdown of every running broker, one at a time so leadership can move."""
        stopped = []
        for b in self.broker_ids:
            if self.broker_alive(b) and self.stop_broker(b, timeout):
                stopped.append(b)
        return stopped

    def kill_broker(self, broker_id: int, wait: bool = True) -> int:
        """SIGKILL the broker (verified to be that broker). Returns the PID killed."""
        self._check_broker(broker_id)
        pid = signal_broker(self.layout, broker_id, signal.SIGKILL)
        if wait:
            wait_for_exit(self.layout, broker_id, 10.0, pid)
        return pid

    def signal_broker(self, broker_id: int, sig: int) -> int:
        self._check_broker(broker_id)
        return signal_broker(self.layout, broker_id, sig)

    def destroy(self, force: bool = False) -> None:
        lay = self.layout
        self.descriptor  # noqa: B018 - refuse to remove a directory that is not a cluster
        running = [b for b in self.broker_ids if self.broker_alive(b)]
        if running and not force:
            raise BrokerError(f"brokers {', '.join(map(str, running))} are running "
                              "(stop them with: kctl cluster stop, or pass --force)")
        for b in running:
            try:
                self.kill_broker(b)
            except BrokerError:
                pass
        keep_readme = os.path.join(lay.root, "README.md")
        for name in os.listdir(lay.root):
            path = os.path.join(lay.root, name)
            if path == keep_readme:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        if not os.listdir(lay.root):
            os.rmdir(lay.root)

    def status(self) -> dict[str, Any]:
        md = self.metadata()
        ctrl = self.controller_id()
        leaders: dict[int, int] = {b: 0 for b in self.broker_ids}
        replicas: dict[int, int] = {b: 0 for b in self.broker_ids}
        for t in md.topics.values():
            for part in t.partitions:
                if part.leader is not None:
                    leaders[part.leader] = leaders.get(part.leader, 0) + 1
                for r in part.replicas:
                    replicas[r] = replicas.get(r, 0) + 1
        brokers = []
        for b in self.broker_ids:
            alive = self.broker_alive(b)
            st = md.brokers.get(b)
            state = "up" if alive and st is not None and st.state == BROKER_UP else \
                ("fenced" if alive and st is not None and st.state == "fenced" else
                 ("starting" if alive else "down"))
            pid = broker_pid(self.layout, b) if alive else None
            brokers.append(BrokerInfo(b, state, pid, ctrl == b, leaders.get(b, 0), replicas.get(b, 0),
                                      st.epoch if st else 0))
        return {"cluster_id": md.cluster_id, "controller": ctrl, "controller_epoch": md.controller_epoch,
                "metadata_version": md.version, "brokers": brokers}

    def require_live(self) -> ClusterMetadata:
        md = self.metadata()
        if not any(self.broker_alive(b) for b in self.broker_ids):
            raise NoLiveBrokerError(f"no broker is running in {self.layout.root} (start them with: kctl cluster start)")
        return md

    # -- topics ---------------------------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, replication_factor: int | None = None,
                     config: dict[str, Any] | None = None, if_not_exists: bool = False) -> bool:
        self.descriptor  # noqa: B018
        return create_topic(self.store, name, partitions, replication_factor, config, if_not_exists) is not None

    def alter_topic(self, name: str, partitions: int | None = None, set_config: dict[str, Any] | None = None,
                    delete_config: list[str] | None = None) -> None:
        self.descriptor  # noqa: B018
        alter_topic(self.store, name, partitions, set_config, delete_config)

    def delete_topic(self, name: str) -> None:
        self.descriptor  # noqa: B018
        delete_topic(self.store, name)

    def topics(self) -> list[dict[str, Any]]:
        md = self.metadata()
        return [{"topic": t.name, "partitions": len(t.partitions), "replication_factor": t.replication_factor}
                for t in sorted(md.topics.values(), key=lambda t: t.name)]

    def topic_config(self, name: str) -> dict[str, Any]:
        return effective_config(self.metadata().topic(name).config)

    def describe(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        """Per topic: its partitions (leader, replicas, ISR, epoch, log start, HW, log end) and config."""
        md = self.metadata()
        if names:
            for n in names:
                validate_topic_name(n)
                md.topic(n)
        chosen = [md.topics[n] for n in (names or sorted(md.topics))]
        out = []
        for t in chosen:
            parts = []
            for p, part in enumerate(t.partitions):
                ls = hw = le = None
                src = part.leader if part.leader is not None else None
                if src is not None:
                    ls, hw, le = self._replica_offsets(src, t.name, p)
                parts.append(PartitionInfo(t.name, p, part.leader, part.replicas, part.isr, part.leader_epoch,
                                           ls, hw, le))
            out.append({"topic": t.name, "topic_id": t.topic_id, "partitions": parts,
                        "config": dict(t.config)})
        return out

    def _replica_offsets(self, broker: int, topic: str, p: int) -> tuple[int | None, int | None, int | None]:
        try:
            sf = ReplicaStateFile(self.layout.replica_dir(broker, topic, p))
        except FileNotFoundError:
            return None, None, None
        try:
            st = sf.read_log_end()
            hw = sf.read_high_watermark()
        finally:
            sf.close()
        if st is None:
            return None, None, None
        return st.log_start_offset, (hw.high_watermark if hw else None), st.log_end_offset

    def partition(self, topic: str, p: int) -> PartitionInfo:
        for t in self.describe([topic]):
            for info in t["partitions"]:
                if info.partition == p:
                    return info
        raise UnknownPartitionError(f"topic '{topic}' has no partition {p}")

    # -- elections ------------------------------------------------------------------------------
    def elect(self, kind: str = "preferred", targets: list[tuple[str, int | None]] | None = None) -> list[Event]:
        md = self.require_live()
        chosen: set[tuple[str, int]] | None = None
        if targets:
            chosen = set()
            for name, p in targets:
                t = md.topic(name)
                if p is None:
                    chosen.update((name, i) for i in range(len(t.partitions)))
                elif not 0 <= p < len(t.partitions):
                    raise UnknownPartitionError(f"topic '{name}' has no partition {p}")
                else:
                    chosen.add((name, p))
        if kind not in ("preferred", "unclean"):
            raise InvalidArgumentError(f"election type must be preferred or unclean (got {kind!r})")
        alive = {b for b in self.broker_ids if self.broker_alive(b)}
        result: list[Event] = []

        def change(md: ClusterMetadata) -> list[Event]:
            live = {b for b in md.live_brokers() if b in alive}
            evs = (elections.preferred_election(md, live, chosen) if kind == "preferred"
                   else elections.unclean_election(md, live, chosen))
            result.extend(evs)
            return evs

        self.store.update(change)
        return result

    # -- history --------------------------------------------------------------------------------
    def events(self, last: int | None = None) -> list[Event]:
        self.descriptor  # noqa: B018
        return self.store.read_events(last)


def _new_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) if text else "(empty log)"


__all__ = ["CLUSTER_FILE", "BrokerInfo", "Cluster", "KctlError", "PartitionInfo", "UnknownTopicError"]
