"""Dynamic shell completion: topic names, group names and broker ids from the data directory."""

from __future__ import annotations

import json
import os

import typer


def _data_dir(ctx: typer.Context) -> str:
    root = ctx.find_root()
    params = getattr(root, "params", {}) or {}
    return params.get("data_dir") or os.environ.get("KCTL_DATA_DIR") or "cluster_data"


def _metadata(ctx: typer.Context) -> dict:
    path = os.path.join(_data_dir(ctx), "metadata", "cluster-metadata.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def complete_topic(ctx: typer.Context, incomplete: str) -> list[str]:
    return sorted(t for t in _metadata(ctx).get("topics", {}) if t.startswith(incomplete))


def complete_topic_partition(ctx: typer.Context, incomplete: str) -> list[str]:
    out = []
    for name, t in sorted(_metadata(ctx).get("topics", {}).items()):
        for p in range(len(t.get("partitions", []))):
            cand = f"{name}:{p}"
            if cand.startswith(incomplete):
                out.append(cand)
    return out


def complete_broker(ctx: typer.Context, incomplete: str) -> list[str]:
    return sorted(b for b in _metadata(ctx).get("brokers", {}) if b.startswith(incomplete))


def complete_group(ctx: typer.Context, incomplete: str) -> list[str]:
    path = os.path.join(_data_dir(ctx), "groups")
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(incomplete) and not n.startswith("."))
