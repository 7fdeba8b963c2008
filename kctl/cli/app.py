"""The typer application: global options and the command groups, one module per group."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from kctl.cli.state import OUTPUTS, State

HELP = """kctl runs a real, local, multi-broker Kafka-style cluster inside one directory.

Brokers are OS processes coordinated by file locks; partitions are Kafka RecordBatch v2
segment files. Start with: kctl cluster init && kctl cluster start && kctl demo --help
"""

app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        from kctl import __version__

        typer.echo(f"kctl {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    data_dir: Annotated[str | None, typer.Option(
        "--data-dir", envvar="KCTL_DATA_DIR", help="The cluster directory (default ./cluster_data).",
        show_default=False)] = None,
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Output style: table, json or plain (default: table on a terminal, else plain).",
        show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    if output is not None and output not in OUTPUTS:
        raise typer.BadParameter(f"'{output}' is not one of table, json, plain", param_hint="'--output'")
    ctx.obj = State(
        data_dir=data_dir or os.environ.get("KCTL_DATA_DIR") or "cluster_data",
        output=output or ("table" if sys.stdout.isatty() else "plain"),
        explicit_output=output is not None,
    )


# which module defines each top-level command: a one-shot command imports only its own module
COMMAND_MODULES = {
    "cluster": "cmd_cluster", "broker": "cmd_cluster",
    "topic": "cmd_topic", "describe": "cmd_topic",
    "produce": "cmd_produce", "consume": "cmd_consume",
    "elect": "cmd_ops", "events": "cmd_ops", "log": "cmd_ops",
    "group": "cmd_group", "watch": "cmd_watch", "perf": "cmd_perf", "demo": "cmd_demo",
    "connect": "cmd_connect", "stream": "cmd_stream",
}
_registered: set[str] = set()


def _register(module_name: str) -> None:
    if module_name in _registered:
        return
    _registered.add(module_name)
    try:
        module = __import__(f"kctl.cli.{module_name}", fromlist=["register"])
    except ModuleNotFoundError as exc:
        if exc.name != f"kctl.cli.{module_name}":
            raise
        return
    module.register(app)


def _command_word(args: list[str]) -> str | None:
    """The first word that is not a global option (or its value)."""
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--data-dir", "--output", "-o"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return None


def build_command(args: list[str] | None = None) -> Any:
    """The click command for these arguments, registering only the module it needs (all of them
    for help, completion, or an unknown word, so that those still list every command)."""
    word = _command_word(args or [])
    completing = any(k.endswith("_COMPLETE") for k in os.environ)
    wanted = COMMAND_MODULES.get(word or "")
    if wanted and not completing and "--help" not in (args or []) and "-h" not in (args or []):
        _register(wanted)
    else:
        for module_name in dict.fromkeys(COMMAND_MODULES.values()):
            _register(module_name)
    return typer.main.get_command(app)
