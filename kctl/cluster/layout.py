"""Where everything lives in a cluster directory (mirrors a Kafka broker's ``log.dirs``).

::

    <root>/cluster.json                      cluster id, broker ids, format version, settings
    <root>/controller.lock                   held by the active controller
    <root>/metadata/cluster-metadata.json    topics, partitions, leaders, ISR, epochs, brokers
    <root>/metadata/metadata.lock            serialises metadata updates
    <root>/metadata/events.jsonl             the change history (``kctl events``)
    <root>/groups/<group>/                   consumer group state and committed offsets
    <root>/brokers/broker-<id>/              one broker's log dir
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from kctl.errors import NotInitializedError

FORMAT_VERSION = 1
CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class ClusterLayout:
    root: str

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> ClusterLayout:
        return cls(os.path.abspath(os.fspath(root)))

    # -- cluster-wide files ---------------------------------------------------------------------
    @property
    def cluster_file(self) -> str:
        return os.path.join(self.root, CLUSTER_FILE)

    @property
    def controller_lock(self) -> str:
        return os.path.join(self.root, "controller.lock")

    @property
    def metadata_dir(self) -> str:
        return os.path.join(self.root, "metadata")

    @property
    def metadata_file(self) -> str:
        return os.path.join(self.metadata_dir, "cluster-metadata.json")

    @property
    def metadata_lock(self) -> str:
        return os.path.join(self.metadata_dir, "metadata.lock")

    @property
    def events_file(self) -> str:
        return os.path.join(self.metadata_dir, "events.jsonl")

    @property
    def groups_dir(self) -> str:
        return os.path.join(self.root, "groups")

    def group_dir(self, group: str) -> str:
        return os.path.join(self.groups_dir, group)

    @property
    def brokers_dir(self) -> str:
        return os.path.join(self.root, "brokers")

    @property
    def streams_dir(self) -> str:
        return os.path.join(self.root, "streams")

    @property
    def connect_dir(self) -> str:
        return os.path.join(self.root, "connect")

    # -- one broker -----------------------------------------------------------------------------
    def broker_dir(self, broker_id: int) -> str:
        return os.path.join(self.brokers_dir, f"broker-{broker_id}")

    def broker_lock(self, broker_id: int) -> str:
        return os.path.join(self.broker_dir(broker_id), "broker.lock")

    def broker_log(self, broker_id: int) -> str:
        return os.path.join(self.broker_dir(broker_id), "broker.log")

    def meta_properties(self, broker_id: int) -> str:
        return os.path.join(self.broker_dir(broker_id), "meta.properties")

    def checkpoint(self, broker_id: int, name: str) -> str:
        return os.path.join(self.broker_dir(broker_id), name)

    def replica_dir(self, broker_id: int, topic: str, partition: int) -> str:
        return os.path.join(self.broker_dir(broker_id), f"{topic}-{partition}")

    def append_lock(self, broker_id: int, topic: str, partition: int) -> str:
        return os.path.join(self.replica_dir(broker_id, topic, partition), "append.lock")

    # -- checks ---------------------------------------------------------------------------------
    def read_cluster_file(self) -> dict:
        """The cluster descriptor; a clear error for a missing or foreign directory."""
        if not os.path.isdir(self.root):
            raise NotInitializedError(f"no cluster at {self.root} (create one with: kctl cluster init)")
        try:
            with open(self.cluster_file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise NotInitializedError(
                f"{self.root} is not a kctl cluster directory: no {CLUSTER_FILE} "
                "(create one with: kctl cluster init)"
            ) from None
        except (OSError, ValueError) as exc:
            raise NotInitializedError(f"{self.cluster_file} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != "kctl" or "cluster_id" not in data:
            raise NotInitializedError(f"{self.cluster_file} does not describe a kctl cluster")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise NotInitializedError(
                f"{self.root} was written by a newer kctl (format {data.get('format_version')})"
            )
        return data
