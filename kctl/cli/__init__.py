"""The command line: the only package that imports typer and rich.

``main`` is the single error boundary: every :class:`~kctl.errors.KctlError` becomes one
``kctl: error: ...`` line on stderr and the exit code its class names; usage errors exit 2;
``KCTL_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import os
import sys


def _error(message: str, code: int) -> int:
    sys.stderr.write(f"kctl: error: {message}\n")
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``kctl``)."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    from kctl.errors import KctlError

    debug = os.environ.get("KCTL_DEBUG") not in (None, "", "0")
    args = sys.argv[1:] if argv is None else argv
    try:
        if "produce" in args and not any(k.endswith("_COMPLETE") for k in os.environ):
            # the one-shot fast path: no typer import for a plainly well-formed `kctl produce`
            from kctl.cli.fastpath import try_produce

            rv = try_produce(args)
            if rv is not None:
                return rv
        return _run_typer(args, debug)
    except KctlError as exc:
        if debug:
            raise
        return _error(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): end quietly, as Unix tools do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except OSError as exc:
        if debug:
            raise
        return _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)


def _run_typer(args: list[str], debug: bool) -> int:
    """The typer application; its own exceptions become exit codes here, ours in :func:`run`."""
    import typer

    from kctl.cli.app import build_command

    try:
        command = build_command(args)
        rv = command.main(args=args, prog_name="kctl", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except typer.Abort:
        return _error("aborted", 130)
    except typer.TyperException as exc:
        if debug:
            raise
        fmt = getattr(exc, "format_message", None)
        message = fmt() if callable(fmt) else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        return _error(f"{message}{hint}", int(getattr(exc, "exit_code", 2) or 2))
