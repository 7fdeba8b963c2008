"""``kctl demo``: the guided story on a fresh directory (what ``make demo`` runs)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kctl.cli.state import get_state


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        data_dir: Annotated[str | None, typer.Option(
            "--data-dir", help="Run in this directory (must not hold a cluster; default: a new temporary "
                               "directory). The global --data-dir is not used, so the demo never touches "
                               "your cluster.", show_default=False)] = None,
        fast: Annotated[bool, typer.Option("--fast", help="No pauses between the steps, fewer records.")] = False,
        keep: Annotated[bool, typer.Option("--keep", help="Leave the cluster directory (stopped) for a "
                                                          "look afterwards.")] = False,
        records: Annotated[int | None, typer.Option("--records", help="How many records to produce "
                                                                      "(default 600, 300 with --fast).",
                                                    show_default=False)] = None,
    ) -> None:
        """The guided story, with real processes: a 3-broker cluster, a replicated topic, a producer, a
        consumer group of two members; the leader of partition 0 is killed (SIGKILL), a new leader is
        elected, producing and consuming continue, the broker returns to the ISR, and the counts prove
        nothing was lost or read twice. Exits 0 only if every check passes; leaves nothing running.

        Example: kctl demo;  kctl demo --fast --keep --data-dir /tmp/kctl-demo
        """
        from kctl.cli.demo_story import DemoStory, Narrator
        from kctl.errors import InvalidArgumentError

        st = get_state(ctx)
        if records is not None and not 2 <= records <= 1_000_000:
            raise InvalidArgumentError("--records must be between 2 and 1000000")
        stream = sys.stderr if st.is_json else sys.stdout
        narrator = Narrator(stream, styled=stream.isatty())
        story = DemoStory(narrator, data_dir=data_dir, fast=fast, keep=keep, records=records)
        result = story.run()
        if st.is_json:
            st.emit_json(result.to_json())
        narrator.say(f"Demo finished in {result.wall_s:.1f} s: " + ("all checks passed" if result.ok
                                                                    else "SOME CHECKS FAILED"),
                     style="bold green" if result.ok else "bold red")
        if not result.ok:
            raise typer.Exit(1)
