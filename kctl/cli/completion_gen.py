"""Write the shell completion scripts in ``completions/`` (and the command reference) from the app.

``python -m kctl.cli.completion_gen completions`` (what ``make completions`` runs) asks the real
``kctl`` command for its bash, zsh and fish scripts through typer's completion protocol (the
``_KCTL_COMPLETE=source_<shell>`` environment variable), so the committed files are exactly what
``kctl --show-completion`` would print. A test fails when they are out of date.

The scripts call back into ``kctl`` at each Tab press; that is how topic names, group names and
broker ids are completed from the current data directory (see :mod:`kctl.cli.complete`).

``python -m kctl.cli.completion_gen --commands docs/COMMANDS.md`` writes the command reference
from the same application: every command's ``--help``, as ``kctl ... --help`` prints it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Any

SHELLS = {"bash": "kctl.bash", "zsh": "kctl.zsh", "fish": "kctl.fish"}
PROG = "kctl"
COMPLETE_VAR = "_KCTL_COMPLETE"


def completion_script(shell: str) -> str:
    """The completion script for ``shell``, as the ``kctl`` command itself emits it."""
    from kctl.cli.app import build_command

    if shell not in SHELLS:
        raise ValueError(f"unsupported shell {shell!r} (supported: {', '.join(SHELLS)})")
    command = build_command()
    out = io.StringIO()
    saved = os.environ.get(COMPLETE_VAR)
    os.environ[COMPLETE_VAR] = f"source_{shell}"
    try:
        with contextlib.redirect_stdout(out):
            try:
                command.main(args=[], prog_name=PROG, standalone_mode=False)
            except SystemExit as exc:  # the completion protocol ends the program
                if exc.code not in (0, None):
                    raise RuntimeError(f"kctl could not produce the {shell} completion script") from exc
    finally:
        if saved is None:
            os.environ.pop(COMPLETE_VAR, None)
        else:
            os.environ[COMPLETE_VAR] = saved
    text = out.getvalue()
    if not text.strip():
        raise RuntimeError(f"kctl produced an empty {shell} completion script")
    return text.strip("\n") + "\n"


def write_all(directory: str) -> list[str]:
    """Write every script into ``directory``; returns the paths whose content changed."""
    os.makedirs(directory, exist_ok=True)
    changed = []
    for shell, name in SHELLS.items():
        path = os.path.join(directory, name)
        text = completion_script(shell)
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == text:
                    continue
        except FileNotFoundError:
            pass
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        changed.append(path)
    return changed


def command_paths() -> list[tuple[list[str], Any, Any]]:
    """(path, command, context) for the root, every group and every command, in help order."""
    import typer

    from kctl.cli.app import build_command

    root = build_command()
    out: list[tuple[list[str], Any, Any]] = []

    def walk(cmd: Any, path: list[str], parent: Any) -> None:
        settings = dict(getattr(cmd, "context_settings", None) or {})
        settings.update(terminal_width=100, max_content_width=100)
        ctx = typer.Context(cmd, parent=parent, info_name=path[-1], **settings)
        out.append((path, cmd, ctx))
        subs = getattr(cmd, "commands", None) or {}
        for name in cmd.list_commands(ctx) if subs else []:
            walk(subs[name], [*path, name], ctx)

    walk(root, [PROG], None)
    return out


def command_reference() -> str:
    """Markdown: the ``--help`` of every kctl command, generated, never edited by hand."""
    lines = ["# kctl command reference", "",
             "Generated from the application (`python -m kctl.cli.completion_gen --commands docs/COMMANDS.md`):",
             "each section is exactly what `--help` prints. See the README for a tour.", ""]
    entries = command_paths()
    lines.append("Commands:")
    lines.append("")
    for path, cmd, _ctx in entries[1:]:
        if not getattr(cmd, "commands", None):
            anchor = "-".join(path).replace(" ", "-")
            lines.append(f"- [`{' '.join(path)}`](#{anchor})")
    lines.append("")
    for path, cmd, ctx in entries:
        lines.append(f"## {' '.join(path)}")
        lines.append("")
        lines.append("```text")
        lines.append(cmd.get_help(ctx).rstrip())
        lines.append("```")
        lines.append("")
    return "\n".join(lines)


def write_command_reference(path: str) -> bool:
    """Write the reference; True if the file changed."""
    text = command_reference()
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--commands":
        changed = write_command_reference(args[1])
        sys.stderr.write(f"{'wrote' if changed else 'already up to date:'} {args[1]}\n")
        return 0
    if len(args) != 1 or args[0] in ("-h", "--help"):
        sys.stderr.write("usage: python -m kctl.cli.completion_gen DIRECTORY\n"
                         "         writes kctl.bash, kctl.zsh and kctl.fish into DIRECTORY\n"
                         "       python -m kctl.cli.completion_gen --commands FILE\n"
                         "         writes the command reference (every --help) into FILE\n")
        return 2
    changed = write_all(args[0])
    for path in changed:
        sys.stderr.write(f"wrote {path}\n")
    if not changed:
        sys.stderr.write(f"{args[0]}: completion scripts already up to date\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
