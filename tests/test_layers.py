"""The layering contract: cli -> client -> cluster -> storage -> errors, and a library that a Python
user can import without the CLI's dependencies."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kctl"
ORDER = ["errors", "storage", "cluster", "client", "connect", "streams", "cli"]
# connectors and stream processors are clients of the client layer; nothing below imports them
RANK = {"errors": 0, "storage": 1, "cluster": 2, "client": 3, "connect": 4, "streams": 4, "cli": 5}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "kctl" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_layer_imports_a_higher_one(path: pathlib.Path):
    rel = path.relative_to(ROOT)
    own = rel.parts[0].removesuffix(".py") if rel.parts else ""
    if own not in RANK:
        return
    for module in _imports(path):
        target = _layer(module)
        if target is not None:
            assert RANK[target] <= RANK[own], f"{rel} ({own}) imports {module} ({target})"
        if own != "cli":
            assert not module.startswith(("typer", "rich")), f"{rel} imports {module}: only kctl.cli may"


def test_import_kctl_loads_neither_typer_nor_rich():
    code = ("import sys, kctl; from kctl import Cluster, Producer, Consumer, GroupConsumer; "
            "bad = [m for m in ('typer', 'rich', 'click') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_python_dash_m_kctl_works():
    res = subprocess.run([sys.executable, "-m", "kctl", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert res.stdout.startswith("kctl ")


def test_help_lists_every_command_group():
    res = subprocess.run([sys.executable, "-m", "kctl", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for word in ("cluster", "broker", "topic", "describe", "produce", "consume", "group", "elect", "events",
                 "watch", "log", "perf", "demo"):
        assert word in res.stdout, word


def test_produce_fast_path_accepts_exactly_the_typer_commands_options():
    """The argparse fast path for one-shot produce must never drift from the typer command."""
    from kctl.cli.app import build_command
    from kctl.cli.fastpath import PRODUCE_OPTIONS

    produce = build_command(["produce"]).commands["produce"]
    typer_opts = {p.name: tuple(sorted(p.opts)) for p in produce.params if p.param_type_name == "option"}
    fast_opts = {dest: tuple(sorted(flags)) for dest, (flags, _extra) in PRODUCE_OPTIONS.items()}
    assert typer_opts == fast_opts
    defaults = {p.name: p.default for p in produce.params if p.param_type_name == "option"}
    for dest, (_flags, extra) in PRODUCE_OPTIONS.items():
        if "default" in extra and extra["default"] != []:
            assert defaults[dest] == extra["default"], dest


def test_produce_fast_path_does_not_import_typer(tmp_path):
    code = ("import sys; from kctl.cli.fastpath import try_produce\n"
            "try:\n    try_produce(['--data-dir', sys.argv[1], 'produce', 't', 'x'])\n"
            "except Exception as exc:\n    print(type(exc).__name__)\n"
            "print('typer' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none")], capture_output=True, text=True)
    assert res.stdout.split() == ["NotInitializedError", "False"], res.stdout + res.stderr
