"""A one-shot ``kctl produce`` without typer's import cost.

``echo x | kctl produce orders`` is the command scripts run most often, once per record batch, so
its start-up time is its latency. Parsing it with argparse instead of building the typer app saves
most of that. Only plainly well-formed invocations take this path; anything else (``--help``, a
usage error, an unknown option) falls back to the typer command, which owns every message a user
sees about usage. A test keeps the option lists of the two parsers identical.
"""

from __future__ import annotations

import os
import sys

PRODUCE_OPTIONS: dict[str, tuple[tuple[str, ...], dict]] = {
    "key": (("-k", "--key"), {}),
    "key_separator": (("-K", "--key-separator"), {}),
    "delimiter": (("-D", "--delimiter"), {"default": "\\n"}),
    "partition": (("-p", "--partition"), {"type": int}),
    "header": (("-H", "--header"), {"action": "append", "default": []}),
    "input_format": (("--input",), {"default": "text"}),
    "null_empty": (("-Z", "--null-empty"), {"action": "store_true"}),
    "acks": (("--acks",), {"default": "all"}),
    "compression": (("--compression",), {"default": "none"}),
    "print_offsets": (("--print-offsets",), {"action": "store_true"}),
    "timeout": (("--timeout",), {"type": float, "default": 30.0}),
}
GLOBAL_OPTIONS = {"data_dir": ("--data-dir",), "output": ("-o", "--output")}


class _Fallback(Exception):
    """Not for the fast path: let the typer app handle (and explain) it."""


def _parser():  # type: ignore[no-untyped-def]
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise _Fallback(message)

    # a fixed width keeps argparse from importing shutil to measure the terminal
    p = Parser(prog="kctl produce", add_help=False, allow_abbrev=False,
               formatter_class=lambda prog: argparse.HelpFormatter(prog, width=100))
    p.add_argument("topic")
    p.add_argument("values", nargs="*")
    for dest, (flags, extra) in PRODUCE_OPTIONS.items():
        p.add_argument(*flags, dest=dest, **extra)
    return p


def try_produce(args: list[str]) -> int | None:
    """Run ``kctl [--data-dir D] [-o STYLE] produce ...``; None if this path does not apply."""
    data_dir = None
    output = None
    i = 0
    while i < len(args) and args[i] != "produce":
        a = args[i]
        if a == "--data-dir" and i + 1 < len(args):
            data_dir, i = args[i + 1], i + 2
        elif a in ("-o", "--output") and i + 1 < len(args):
            output, i = args[i + 1], i + 2
        else:
            return None
    rest = args[i + 1:]
    if i >= len(args) or any(a in ("-h", "--help") or a.startswith("--data-dir") for a in rest):
        return None
    if output is not None and output not in ("table", "json", "plain"):
        return None
    try:
        ns = _parser().parse_intermixed_args(rest)
    except _Fallback:
        return None
    from kctl.cli.produce_run import run_produce
    from kctl.cli.state import State

    st = State(data_dir=data_dir or os.environ.get("KCTL_DATA_DIR") or "cluster_data",
               output=output or ("table" if sys.stdout.isatty() else "plain"), explicit_output=output is not None)
    run_produce(st, ns.topic, ns.values, ns.key, ns.key_separator, ns.delimiter, ns.partition, ns.header,
                ns.input_format, ns.null_empty, ns.acks, ns.compression, ns.print_offsets, ns.timeout)
    return 0
