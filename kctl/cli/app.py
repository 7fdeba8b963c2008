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


def _register() -> None:
    from kctl.cli import cmd_cluster, cmd_consume, cmd_ops, cmd_produce, cmd_topic

    cmd_cluster.register(app)
    cmd_topic.register(app)
    cmd_produce.register(app)
    cmd_consume.register(app)
    cmd_ops.register(app)
    for optional in ("cmd_group", "cmd_watch", "cmd_perf", "cmd_demo", "cmd_connect", "cmd_stream"):
        try:
            module = __import__(f"kctl.cli.{optional}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"kctl.cli.{optional}":
                raise
            continue
        module.register(app)


_registered = False


def build_command() -> Any:
    global _registered
    if not _registered:
        _register()
        _registered = True
    return typer.main.get_command(app)
