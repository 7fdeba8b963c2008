"""The chaos run as a test: a bounded smoke run in CI, the 300 s run under ``-m slow``.

The seed comes from ``CHAOS_SEED`` (else a random one) and is printed; a failing run is kept
under ``chaos-runs/<timestamp>-<seed>/`` with its history, trace, logs and data directory.
Rerun one with ``python -m tests.chaos.runner --profile smoke --seed N --keep``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.chaos.nemesis import BROKER_FAULTS
from tests.chaos.runner import PROFILES, RunResult, keep_dir, run

pytestmark = pytest.mark.e2e


def _seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.randrange(1, 1 << 31))


def _run(profile_name: str, tmp_path: Path) -> RunResult:
    seed = _seed()
    print(f"chaos seed: {seed} (rerun: python -m tests.chaos.runner --profile {profile_name} --seed {seed})")
    res = run(PROFILES[profile_name], seed, str(tmp_path / "run"))
    if not res.ok:
        res.run_dir = keep_dir(res.run_dir, seed)
        res.kept = True
    return res


def _assert_run(res: RunResult, min_faults: int, min_acked: int) -> None:
    where = f"seed {res.seed}, kept in {res.run_dir}" if res.kept else f"seed {res.seed}"
    detail = json.dumps({"anomalies": res.check.get("anomalies"), "examples": res.check.get("examples"),
                         "errors": res.errors, "verify": res.verify_output}, indent=1)[:6000]
    assert res.check.get("valid"), f"history anomalies ({where}): {detail}"
    assert not res.errors, f"run errors ({where}): {detail}"
    assert res.verify_exit == 0, f"kctl log verify found damage ({where}): {res.verify_output}"
    assert res.replicas_identical, where
    assert res.fault_total >= min_faults, (res.faults, where)
    assert set(BROKER_FAULTS) <= set(res.faults), (res.faults, where)
    assert res.stat("send_ok") >= min_acked, where
    # the history really exercised what the checker checks
    assert res.stat("drained") >= res.stat("send_ok"), where
    assert res.stat("commits") > 0 and res.stat("polls") > 0, where
    assert res.stat("ownership_checked_reads") > 0, where


def test_chaos_smoke(tmp_path: Path) -> None:
    """3 brokers, RF 3, min.insync.replicas 2; >= 22 faults, every broker fault among them;
    nothing acknowledged is lost, duplicated or reordered; verify is clean."""
    res = _run("smoke", tmp_path)
    _assert_run(res, min_faults=20, min_acked=5000)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_long(tmp_path: Path) -> None:
    """The 300 s profile: four topics x two partitions, >= 75 faults (``make chaos``)."""
    res = _run("long", tmp_path)
    _assert_run(res, min_faults=75, min_acked=20000)
