"""Topic administration: create, alter, delete, with Kafka's validation and placement.

Replica directories are created before the metadata that names them is published, so a
producer that sees a new topic always finds its leader's log on disk. Deletion works the other
way round: the topic leaves the metadata first (producers and fetchers stop), then each
replica directory is renamed aside under its append lock and removed.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from kctl.cluster.config import (
    coerce_config,
    log_config,
    topic_collision_key,
    validate_topic_name,
)
from kctl.cluster.elections import assign_replicas
from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import AppendLock
from kctl.cluster.metadata import ClusterMetadata, Event, MetadataStore, PartitionState, TopicState, now_ms
from kctl.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    TopicExistsError,
    UnknownTopicError,
)
from kctl.storage.checkpoint import new_topic_id, write_partition_metadata
from kctl.storage.log import Log

MAX_PARTITIONS = 10_000


def _leader_counts(md: ClusterMetadata) -> dict[int, int]:
    counts = {b: 0 for b in md.brokers}
    for t in md.topics.values():
        for p in t.partitions:
            if p.replicas:
                counts[p.replicas[0]] = counts.get(p.replicas[0], 0) + 1
    return counts


def _create_replica(layout: ClusterLayout, broker: int, topic: TopicState, p: int) -> None:
    path = layout.replica_dir(broker, topic.name, p)
    if os.path.exists(path):
        # a stray directory from an earlier topic of the same name: never reuse its data
        remove_replica_dir(layout, broker, topic.name, p, "stale")
    Log.create(path, log_config(topic.config)).close()
    write_partition_metadata(os.path.join(path, "partition.metadata"), topic.topic_id)


def create_topic(
    store: MetadataStore,
    name: str,
    partitions: int = 1,
    replication_factor: int | None = None,
    config: dict[str, Any] | None = None,
    if_not_exists: bool = False,
) -> TopicState | None:
    """Create a topic; returns None if it existed and ``if_not_exists``."""
    validate_topic_name(name)
    config = {k: coerce_config(k, v) for k, v in (config or {}).items()}
    if not isinstance(partitions, int) or partitions < 1 or partitions > MAX_PARTITIONS:
        raise InvalidPartitionsError(f"partitions must be between 1 and {MAX_PARTITIONS} (got {partitions})")
    # the checks, the replica directories and the commit happen as one step under the metadata
    # lock, so two concurrent creators of one topic cannot trample each other's directories
    with store.lock.hold():
        return _create_topic_locked(store, name, partitions, replication_factor, config, if_not_exists)


def _create_topic_locked(store: MetadataStore, name: str, partitions: int, replication_factor: int | None,
                         config: dict[str, Any], if_not_exists: bool) -> TopicState | None:
    store.invalidate()
    md = store.load()
    brokers = sorted(md.brokers)
    rf = replication_factor if replication_factor is not None else min(3, len(brokers))
    if rf < 1:
        raise InvalidReplicationFactorError(f"replication factor must be at least 1 (got {rf})")
    if rf > len(brokers):
        raise InvalidReplicationFactorError(
            f"replication factor {rf} is larger than the number of brokers ({len(brokers)})"
        )
    min_isr = config.get("min.insync.replicas", 1)
    if min_isr > rf:
        raise InvalidConfigError(
            f"min.insync.replicas={min_isr} can never be met with replication factor {rf}"
        )
    existing = md.topics.get(name)
    if existing is not None:
        if if_not_exists:
            return None
        raise TopicExistsError(f"topic '{name}' already exists")
    for other in md.topics:
        if topic_collision_key(other) == topic_collision_key(name):
            raise TopicExistsError(
                f"topic '{name}' collides with existing topic '{other}' ('.' and '_' clash)"
            )

    counts = _leader_counts(md)
    start = brokers.index(min(brokers, key=lambda b: (counts.get(b, 0), b)))
    assignment = assign_replicas(brokers, partitions, rf, start)
    topic = TopicState(
        name, new_topic_id(), [PartitionState(r, r[0], 0, list(r), 0) for r in assignment], config, now_ms()
    )
    for p, replicas in enumerate(assignment):
        for b in replicas:
            _create_replica(store.layout, b, topic, p)

    created: dict[str, TopicState] = {}

    def change(md: ClusterMetadata) -> list[Event]:
        if name in md.topics:
            if if_not_exists:
                return []
            raise TopicExistsError(f"topic '{name}' already exists")
        md.topics[name] = topic
        created["t"] = topic
        return [
            {
                "type": "topic_created",
                "topic": name,
                "partitions": partitions,
                "replication_factor": rf,
                "config": config,
            }
        ]

    store.update(change)
    return created.get("t")


def alter_topic(
    store: MetadataStore,
    name: str,
    partitions: int | None = None,
    set_config: dict[str, Any] | None = None,
    delete_config: list[str] | None = None,
) -> TopicState:
    validate_topic_name(name)
    set_config = {k: coerce_config(k, v) for k, v in (set_config or {}).items()}
    for key in delete_config or []:
        coerce_config(key, _default_of(key))  # validates the key
    md = store.load()
    topic = md.topic(name)
    new_parts: list[list[int]] = []
    if partitions is not None:
        current = len(topic.partitions)
        if partitions < current:
            raise InvalidPartitionsError(f"topic '{name}' has {current} partitions; partitions can only grow")
        if partitions > MAX_PARTITIONS:
            raise InvalidPartitionsError(f"at most {MAX_PARTITIONS} partitions")
        if partitions > current:
            brokers = sorted(md.brokers)
            start = brokers.index(topic.partitions[0].replicas[0])
            new_parts = assign_replicas(
                brokers, partitions - current, topic.replication_factor, start, first_partition=current
            )
            for i, replicas in enumerate(new_parts):
                for b in replicas:
                    _create_replica(store.layout, b, topic, current + i)
    merged = dict(topic.config)
    merged.update(set_config)
    for key in delete_config or []:
        merged.pop(key, None)
    rf = topic.replication_factor
    if merged.get("min.insync.replicas", 1) > rf:
        raise InvalidConfigError(
            f"min.insync.replicas={merged['min.insync.replicas']} can never be met with replication factor {rf}"
        )

    def change(md: ClusterMetadata) -> list[Event]:
        t = md.topic(name)
        events: list[Event] = []
        if new_parts and len(t.partitions) < (partitions or 0):
            for replicas in new_parts:
                t.partitions.append(PartitionState(list(replicas), replicas[0], 0, list(replicas), 0))
            events.append({"type": "topic_altered", "topic": name, "partitions": len(t.partitions)})
        if t.config != merged:
            t.config = merged
            events.append({"type": "topic_altered", "topic": name, "config": merged})
        return events

    return store.update(change).topic(name)


def _default_of(key: str) -> Any:
    from kctl.cluster.config import TOPIC_CONFIGS

    cdef = TOPIC_CONFIGS.get(key)
    if cdef is None:
        raise InvalidConfigError(f"unknown topic config '{key}'")
    return cdef.default


def delete_topic(store: MetadataStore, name: str) -> None:
    validate_topic_name(name)
    removed: dict[str, TopicState] = {}

    def change(md: ClusterMetadata) -> list[Event]:
        if name not in md.topics:
            raise UnknownTopicError(f"topic '{name}' does not exist (see: kctl topic list)")
        removed["t"] = md.topics.pop(name)
        return [{"type": "topic_deleted", "topic": name}]

    store.update(change)
    topic = removed["t"]
    layout = store.layout
    for p, part in enumerate(topic.partitions):
        for b in part.replicas:
            remove_replica_dir(layout, b, name, p, topic.topic_id)


def remove_replica_dir(layout: ClusterLayout, broker: int, topic: str, partition: int, topic_id: str) -> None:
    """Rename the replica aside under its append lock (so no writer is mid-batch), then remove it."""
    path = layout.replica_dir(broker, topic, partition)
    if not os.path.isdir(path):
        return
    aside = f"{path}.{topic_id}-delete"
    try:
        with AppendLock(layout.append_lock(broker, topic, partition)).hold(timeout=10):
            os.rename(path, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)
