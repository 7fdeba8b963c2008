"""Shell completion: the committed scripts are current, and dynamic completion reads the cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kctl.cli.completion_gen import SHELLS, completion_script
from tests.conftest import KCTL

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_committed_completion_scripts_are_current(shell):
    path = REPO / "completions" / SHELLS[shell]
    assert path.exists(), "missing: run `make completions`"
    assert path.read_text(encoding="utf-8") == completion_script(shell), \
        f"{path} is out of date: run `make completions`"


def test_generator_writes_every_script(tmp_path):
    from kctl.cli.completion_gen import main

    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SHELLS.values())
    assert "_KCTL_COMPLETE=complete_bash" in (tmp_path / "kctl.bash").read_text()
    assert (tmp_path / "kctl.zsh").read_text().startswith("#compdef kctl")
    assert "complete --command kctl" in (tmp_path / "kctl.fish").read_text()
    assert main([]) == 2


@pytest.fixture
def cluster_dir(tmp_path) -> str:
    """A cluster directory with two topics and a group (no broker needs to run to complete names)."""
    from kctl.client.admin import Cluster

    c = Cluster.init(tmp_path / "cluster", brokers=3)
    c.create_topic("orders", 2, 2)
    c.create_topic("audit", 1, 1)
    os.makedirs(c.layout.group_dir("billing"), exist_ok=True)
    return c.layout.root


def _root_context(data_dir: str):
    from kctl.cli.app import build_command

    return build_command().make_context("kctl", ["--data-dir", data_dir, "topic", "list"], resilient_parsing=True)


def test_completion_callbacks_read_the_data_directory(cluster_dir):
    from kctl.cli.complete import complete_broker, complete_group, complete_topic, complete_topic_partition

    ctx = _root_context(cluster_dir)
    assert complete_topic(ctx, "") == ["audit", "orders"]
    assert complete_topic(ctx, "or") == ["orders"]
    assert complete_topic_partition(ctx, "orders:") == ["orders:0", "orders:1"]
    assert complete_broker(ctx, "") == ["0", "1", "2"]
    assert complete_group(ctx, "b") == ["billing"]
    empty = _root_context(os.path.join(cluster_dir, "missing"))
    assert complete_topic(empty, "") == [] and complete_group(empty, "") == []


def _complete_bash(words: list[str]) -> list[str]:
    env = dict(os.environ, COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1), _KCTL_COMPLETE="complete_bash")
    res = subprocess.run(KCTL, env=env, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout.decode().split()


def test_completion_protocol_completes_topics_groups_and_brokers(cluster_dir):
    base = ["kctl", "--data-dir", cluster_dir]
    assert _complete_bash([*base, "topic", "delete", ""]) == ["audit", "orders"]
    assert _complete_bash([*base, "broker", "kill", ""]) == ["0", "1", "2"]
    from kctl.cli.app import build_command

    group_cmd = build_command().commands.get("group")
    if group_cmd is None:
        pytest.skip("this build has no consumer group commands")
    assert _complete_bash([*base, "group", "describe", "bi"]) == ["billing"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_script_completes_through_the_installed_command(cluster_dir, tmp_path):
    """Source the committed script in a real bash and press Tab (call its completion function)."""
    import sys

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "kctl").write_text(f"#!/bin/sh\nexec {sys.executable} -m kctl \"$@\"\n")
    (shim / "kctl").chmod(0o755)
    script = REPO / "completions" / "kctl.bash"
    cmd = (f"source {script}; COMP_WORDS=(kctl --data-dir {cluster_dir} describe o); COMP_CWORD=4; "
           "_kctl_completion kctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = dict(os.environ, PATH=f"{shim}:{os.environ.get('PATH', '')}")
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", cmd], env=env, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().split() == ["orders"]
