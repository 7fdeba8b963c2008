"""The shortest end-to-end story: a cluster, a topic, records in and out through the real CLI."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_produce_consume_roundtrip_through_cli(make_cluster, kctl):
    make_cluster(brokers=3)
    assert kctl("topic", "create", "orders", "-p", "3").returncode == 0
    res = kctl("produce", "orders", "--print-offsets", input=b"a\nb\nc\n")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 3
    out = kctl("consume", "orders", "-e")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == [b"a", b"b", b"c"]
    desc = json.loads(kctl("-o", "json", "describe", "orders").stdout)
    parts = desc["topics"][0]["partitions"]
    assert sum(p["high_watermark"] for p in parts) == 3
    assert all(sorted(p["isr"]) == [0, 1, 2] for p in parts)
