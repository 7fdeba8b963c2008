"""Every command explains itself: help text with an example, and --help that works."""

from __future__ import annotations

import pytest


def _leaf_commands():
    from kctl.cli.app import build_command

    root = build_command()
    out = []

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                walk(sub, [*path, name])
        else:
            out.append((" ".join(path), cmd))

    walk(root, [])
    return out


def test_there_are_commands():
    names = {name for name, _ in _leaf_commands()}
    assert {"cluster init", "describe", "topic describe", "events", "watch", "demo", "produce",
            "consume"} <= names


@pytest.mark.parametrize("name,cmd", _leaf_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_has_help_with_an_example(name, cmd):
    text = cmd.help or ""
    assert text.strip(), f"kctl {name} has no help text"
    assert "Example" in text, f"kctl {name}'s help has no example"
    for param in cmd.params:
        if param.name != "ctx" and getattr(param, "param_type_name", "") == "option":
            assert param.help, f"kctl {name}: option {param.opts} has no help"


def test_help_runs_for_every_command(cli):
    for name, _ in _leaf_commands():
        r = cli(*name.split(), "--help")
        assert r.code == 0, f"kctl {name} --help failed: {r.err}"
        assert "Example" in r.out, name


def test_command_reference_is_current():
    from pathlib import Path

    from kctl.cli.completion_gen import command_reference

    path = Path(__file__).resolve().parents[2] / "docs" / "COMMANDS.md"
    assert path.read_text(encoding="utf-8") == command_reference(), (
        "docs/COMMANDS.md is out of date: run python -m kctl.cli.completion_gen --commands docs/COMMANDS.md")
    for name, _ in _leaf_commands():
        assert f"\n## kctl {name}\n" in path.read_text(encoding="utf-8")
