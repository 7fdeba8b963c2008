"""Topic configs (Kafka's names and defaults) and cluster-wide broker settings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kctl.errors import InvalidConfigError, InvalidTopicError
from kctl.storage.log import LogConfig

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class ConfigDef:
    name: str
    kind: type
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: int | float | None = None


TOPIC_CONFIGS: dict[str, ConfigDef] = {
    c.name: c
    for c in (
        ConfigDef(
            "cleanup.policy",
            str,
            "delete",
            "delete old segments, or compact to the latest record per key",
            ("delete", "compact", "compact,delete", "delete,compact"),
        ),
        ConfigDef(
            "retention.ms",
            int,
            7 * DAY_MS,
            "how long to keep a segment after its newest record (-1: forever)",
            minimum=-1,
        ),
        ConfigDef(
            "retention.bytes",
            int,
            -1,
            "the largest a partition may grow before old segments go (-1: no limit)",
            minimum=-1,
        ),
        ConfigDef(
            "segment.bytes",
            int,
            1 << 30,
            "roll a new segment when the active one would exceed this",
            minimum=14,
        ),
        ConfigDef("segment.ms", int, 7 * DAY_MS, "roll a new segment after this long", minimum=1),
        ConfigDef(
            "min.insync.replicas", int, 1, "acks=all needs at least this many in-sync replicas", minimum=1
        ),
        ConfigDef("max.message.bytes", int, 1048588, "the largest record batch the log accepts", minimum=0),
        ConfigDef(
            "unclean.leader.election.enable",
            bool,
            False,
            "let an out-of-sync replica lead (may lose committed data)",
        ),
        ConfigDef(
            "compression.type",
            str,
            "producer",
            "the codec the log keeps batches in",
            ("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"),
        ),
        ConfigDef(
            "delete.retention.ms", int, DAY_MS, "how long a compacted topic keeps tombstones", minimum=0
        ),
        ConfigDef(
            "min.cleanable.dirty.ratio", float, 0.5, "compact when this share of the log is dirty", minimum=0
        ),
        ConfigDef("index.interval.bytes", int, 4096, "bytes between offset index entries", minimum=0),
    )
}


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise ValueError(value)


def coerce_config(key: str, value: Any) -> Any:
    """Validate one topic config and return its typed value."""
    cdef = TOPIC_CONFIGS.get(key)
    if cdef is None:
        known = ", ".join(sorted(TOPIC_CONFIGS))
        raise InvalidConfigError(f"unknown topic config '{key}' (known: {known})")
    try:
        if cdef.kind is bool:
            typed: Any = value if isinstance(value, bool) else parse_bool(str(value))
        elif cdef.kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            typed = int(value)
        elif cdef.kind is float:
            typed = float(value)
        else:
            typed = str(value)
    except (TypeError, ValueError):
        raise InvalidConfigError(
            f"invalid value '{value}' for {key}: expected {cdef.kind.__name__}"
        ) from None
    if cdef.choices and typed not in cdef.choices:
        raise InvalidConfigError(f"invalid value '{value}' for {key} (one of: {', '.join(cdef.choices)})")
    if cdef.minimum is not None and typed < cdef.minimum:
        raise InvalidConfigError(f"invalid value '{value}' for {key}: must be at least {cdef.minimum}")
    return typed


def parse_config_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings from the command line into a validated dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InvalidConfigError(f"config '{pair}' must look like KEY=VALUE")
        key, value = pair.split("=", 1)
        key = key.strip()
        out[key] = coerce_config(key, value.strip())
    return out


def effective_config(overrides: Mapping[str, Any]) -> dict[str, Any]:
    cfg = {k: c.default for k, c in TOPIC_CONFIGS.items()}
    cfg.update(overrides)
    return cfg


def log_config(overrides: Mapping[str, Any]) -> LogConfig:
    cfg = effective_config(overrides)
    return LogConfig(
        segment_bytes=cfg["segment.bytes"],
        segment_ms=cfg["segment.ms"],
        index_interval_bytes=cfg["index.interval.bytes"],
        retention_ms=cfg["retention.ms"],
        retention_bytes=cfg["retention.bytes"],
        max_message_bytes=cfg["max.message.bytes"],
        cleanup_policy=cfg["cleanup.policy"],
        delete_retention_ms=cfg["delete.retention.ms"],
        min_cleanable_dirty_ratio=cfg["min.cleanable.dirty.ratio"],
    )


# -- topic names --------------------------------------------------------------------------------
_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def validate_topic_name(name: str) -> str:
    """Kafka's rules: 1-249 of ``[a-zA-Z0-9._-]``, not ``.`` or ``..`` (so no path can escape)."""
    if not isinstance(name, str) or not name:
        raise InvalidTopicError("topic name is empty")
    if name in (".", ".."):
        raise InvalidTopicError(f"topic name '{name}' is not allowed")
    if len(name) > 249:
        raise InvalidTopicError(f"topic name is {len(name)} characters long; the limit is 249")
    if not _TOPIC_RE.fullmatch(name):
        shown = name.encode("unicode_escape").decode("ascii")
        raise InvalidTopicError(f"illegal topic name '{shown}': use only letters, digits, '.', '_' and '-'")
    return name


def topic_collision_key(name: str) -> str:
    """Kafka refuses topics that differ only by '.' versus '_' (their metric names collide)."""
    return name.replace(".", "_")


# -- broker settings ----------------------------------------------------------------------------
BROKER_SETTINGS: dict[str, tuple[int, str]] = {
    "broker.session.timeout.ms": (9000, "a broker whose heartbeat is older than this is fenced"),
    "broker.heartbeat.interval.ms": (1000, "how often a broker renews its heartbeat"),
    "replica.lag.time.max.ms": (30000, "a follower behind for longer than this leaves the ISR"),
    "replica.fetch.max.bytes": (1048576, "the most a follower copies in one fetch"),
    "log.retention.check.interval.ms": (30000, "how often leaders apply retention"),
    "log.flush.interval.ms": (
        -1,
        "fsync appends this often (-1: never, durability by replication, as Kafka)",
    ),
    "replica.high.watermark.checkpoint.interval.ms": (5000, "how often high watermarks are checkpointed"),
    "log.flush.offset.checkpoint.interval.ms": (
        60000,
        "how often recovery points are flushed and checkpointed",
    ),
    "leader.imbalance.check.interval.seconds": (300, "how often the controller restores preferred leaders"),
    "auto.leader.rebalance.enable": (1, "restore preferred leaders when imbalance exceeds 10%"),
    "group.session.timeout.ms": (10000, "a consumer whose heartbeat is older than this leaves its group"),
    "group.heartbeat.interval.ms": (1000, "how often a consumer renews its heartbeat"),
}


def broker_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, int]:
    out = {k: v for k, (v, _doc) in BROKER_SETTINGS.items()}
    for key, value in (overrides or {}).items():
        if key not in BROKER_SETTINGS:
            known = ", ".join(sorted(BROKER_SETTINGS))
            raise InvalidConfigError(f"unknown cluster setting '{key}' (known: {known})")
        try:
            out[key] = int(value)
        except (TypeError, ValueError):
            raise InvalidConfigError(f"invalid value '{value}' for {key}: expected an integer") from None
    return out
