"""Per-invocation CLI state (global options) and output rendering in three styles.

The terminal changes defaults, never content: ``table`` when stdout is a terminal, ``plain``
(tab-separated with a header, stable for ``cut``/``awk``) when it is not, ``json`` on request.
rich is imported only when a table or a stderr status line is actually drawn.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer


OUTPUTS = ("table", "json", "plain")


@dataclass
class State:
    data_dir: str = "cluster_data"
    output: str = "plain"
    explicit_output: bool = False
    _stderr: Any = field(default=None, repr=False)

    @property
    def is_json(self) -> bool:
        return self.output == "json"

    @property
    def is_table(self) -> bool:
        return self.output == "table"

    def cluster(self):  # type: ignore[no-untyped-def]
        from kctl.client.admin import Cluster

        return Cluster(self.data_dir)

    # -- stderr ---------------------------------------------------------------------------------
    @property
    def stderr(self):  # type: ignore[no-untyped-def]
        if self._stderr is None:
            from rich.console import Console

            self._stderr = Console(stderr=True, highlight=False)
        return self._stderr

    def info(self, message: str) -> None:
        """A diagnostic line on stderr (styled on a terminal, plain otherwise)."""
        if sys.stderr.isatty():
            self.stderr.print(message)
        else:
            sys.stderr.write(_strip_markup(message) + "\n")
            sys.stderr.flush()

    def warn(self, message: str) -> None:
        self.info(f"[yellow]kctl: warning:[/] {message}")

    # -- data -----------------------------------------------------------------------------------
    def emit_json(self, doc: Any) -> None:
        sys.stdout.write(json.dumps(doc, indent=None if not sys.stdout.isatty() else 2) + "\n")
        sys.stdout.flush()

    def emit_rows(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, json_doc: Any,
                  title: str | None = None, caption: str | None = None,
                  styler: Callable[[Sequence[Any]], str | None] | None = None,
                  notes: Sequence[str] = (), row_styles: Sequence[str | None] | None = None) -> None:
        """One result set in the chosen style: a table, tab-separated lines, or a JSON document.

        Row colours come from ``styler(row)`` or, position by position, from ``row_styles``; they
        and ``notes`` only appear in tables.
        """
        if self.output == "json":
            self.emit_json(json_doc)
            return
        if self.output == "plain":
            out = ["\t".join(columns)]
            out.extend("\t".join(plain_cell(v) for v in row) for row in rows)
            sys.stdout.write("\n".join(out) + "\n")
            sys.stdout.flush()
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, caption=caption, header_style="bold", title_justify="left",
                      caption_justify="left")
        for col in columns:
            numeric = col in NUMERIC_COLUMNS
            table.add_column(col, justify="right" if numeric else "left", no_wrap=numeric)
        for i, row in enumerate(rows):
            style = styler(row) if styler else None
            if row_styles is not None and i < len(row_styles):
                style = row_styles[i] or style
            table.add_row(*[table_cell(v) for v in row], style=style)
        console = Console(highlight=False)
        console.print(table)
        for note in notes:
            console.print(note)


NUMERIC_COLUMNS = {"PARTITION", "LEADER", "LEADER-EPOCH", "LOG-START", "HIGH-WATERMARK", "LOG-END", "PID",
                   "LEADERS", "REPLICAS", "PARTITIONS", "REPLICATION-FACTOR", "CURRENT-OFFSET",
                   "LOG-END-OFFSET", "LAG", "MEMBERS", "BROKER", "OFFSET", "GENERATION", "EPOCH"}


def plain_cell(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v).replace("\t", " ").replace("\n", " ")


def table_cell(v: Any) -> str:
    if v is None:
        return "[dim]none[/]"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def _strip_markup(text: str) -> str:
    import re

    return re.sub(r"\[/?[a-z #0-9_.=-]*\]", "", text)


def get_state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State(data_dir=os.environ.get("KCTL_DATA_DIR") or "cluster_data",
                    output="table" if sys.stdout.isatty() else "plain")
        ctx.find_root().obj = obj
    return obj
