"""``kctl demo`` end to end: real processes, checked counts, bounded time, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import KCTL, _pids_using

pytestmark = pytest.mark.e2e


def _demo_env(tmp_path) -> dict[str, str]:
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the demo's temporary directory lands in tmp_path
    env.pop("KCTL_DEBUG", None)
    env.pop("KCTL_DATA_DIR", None)
    return env


def test_demo_fast_passes_its_checks_and_leaves_nothing(tmp_path):
    """One run: the narration (plain text on stderr with -o json) and the JSON summary on stdout."""
    began = time.monotonic()
    res = subprocess.run([*KCTL, "-o", "json", "demo", "--fast"], cwd=tmp_path, env=_demo_env(tmp_path),
                         capture_output=True, timeout=90)
    wall = time.monotonic() - began
    story = res.stderr.decode()
    assert res.returncode == 0, story[-4000:]
    assert wall < 60, f"the demo took {wall:.1f}s"
    m = re.search(r"Counts: produced (\d+), consumed (\d+), unique (\d+), duplicates (\d+), missing (\d+)", story)
    assert m, story[-2000:]
    assert tuple(map(int, m.groups())) == (300, 300, 300, 0, 0)
    assert "[FAIL]" not in story and story.count("[ok]") >= 5
    assert "leader_changed" in story and "ISR 2/3: broker" in story  # the failure was shown, not just survived

    doc = json.loads(res.stdout)
    assert {k: doc[k] for k in ("ok", "produced", "consumed", "unique", "duplicates", "missing",
                                "members_exited_cleanly")} == {
        "ok": True, "produced": 300, "consumed": 300, "unique": 300, "duplicates": 0, "missing": 0,
        "members_exited_cleanly": True}
    assert all(c["ok"] for c in doc["checks"]) and len(doc["checks"]) == 5
    assert 0 < doc["failover_ms"] < 5000 and doc["isr_rejoin_s"] is not None
    per_member = doc["records_by_member"]
    assert sorted(per_member) == ["member-1", "member-2"]  # both members read ...
    assert sorted(p for parts in per_member.values() for p in parts) == ["0", "1", "2"]  # ... disjoint partitions
    assert sum(n for parts in per_member.values() for n in parts.values()) == 300

    assert not _pids_using(str(tmp_path)), "processes left running"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("kctl-demo-")], "temporary directory left"


def test_demo_stopped_midway_stops_everything(tmp_path):
    """SIGINT (Ctrl-C) in the middle of the story: exit 130, no process or directory left."""
    proc = subprocess.Popen([*KCTL, "demo", "--fast", "--records", "4000"], cwd=tmp_path,
                            env=_demo_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while b"join the group" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert b"join the group" in seen, seen.decode()
        assert _pids_using(str(tmp_path)), "the demo should be running brokers and members by now"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert b"kctl: error: interrupted" in err
    assert not _pids_using(str(tmp_path)), "processes left running after Ctrl-C"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("kctl-demo-")]


def test_demo_refuses_an_existing_cluster(tmp_path):
    from kctl.client.admin import Cluster

    c = Cluster.init(tmp_path / "mine", brokers=1)
    res = subprocess.run([*KCTL, "-o", "json", "demo", "--data-dir", c.layout.root], env=_demo_env(tmp_path),
                         capture_output=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.decode().splitlines()[-1].startswith("kctl: error: a cluster already exists")
    assert json.loads((tmp_path / "mine" / "cluster.json").read_text())["cluster_id"] == c.cluster_id
