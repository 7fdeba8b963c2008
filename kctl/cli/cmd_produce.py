"""``kctl produce``: the command's options; the work is in :mod:`kctl.cli.produce_run`."""

from __future__ import annotations

from typing import Annotated

import typer

from kctl.cli.complete import complete_topic
from kctl.cli.produce_run import run_produce
from kctl.cli.state import get_state


def register(app: typer.Typer) -> None:
    @app.command("produce")
    def produce(
        ctx: typer.Context,
        topic: Annotated[str, typer.Argument(help="Topic to write to.", autocompletion=complete_topic)],
        values: Annotated[list[str] | None, typer.Argument(
            help="Record values; with none, one record per line of stdin.", show_default=False)] = None,
        key: Annotated[str | None, typer.Option("--key", "-k", help="One key for every record.")] = None,
        key_separator: Annotated[str | None, typer.Option(
            "--key-separator", "-K", help="Split each line at the first SEP into key and value.")] = None,
        delimiter: Annotated[str, typer.Option(
            "--delimiter", "-D", help="Record delimiter on stdin (\\0 allowed).")] = "\\n",
        partition: Annotated[int | None, typer.Option(
            "--partition", "-p", help="Write to this partition instead of using the partitioner.",
            show_default=False)] = None,
        header: Annotated[list[str] | None, typer.Option(
            "--header", "-H", help="A header KEY=VALUE on every record (repeatable).")] = None,
        input_format: Annotated[str, typer.Option(
            "--input", help="text, or json: JSON Lines in the record envelope.")] = "text",
        null_empty: Annotated[bool, typer.Option(
            "--null-empty", "-Z", help="Produce an empty value (or key) as null (a tombstone).")] = False,
        acks: Annotated[str, typer.Option("--acks", help="0, 1 or all.")] = "all",
        compression: Annotated[str, typer.Option(
            "--compression", help="none, gzip, snappy, lz4 or zstd.")] = "none",
        print_offsets: Annotated[bool, typer.Option(
            "--print-offsets", help="Print TOPIC PARTITION OFFSET per record (JSON Lines with -o json).")] = False,
        timeout: Annotated[float, typer.Option(
            "--timeout", help="Seconds to keep retrying through a leader change before failing.")] = 30.0,
    ) -> None:
        """Produce records: each VALUE argument is one record; with none, one per line of stdin.

        Examples: kctl produce orders hello world;  seq 1000 | kctl produce orders -K :
        """
        st = get_state(ctx)
        run_produce(st, topic, values or [], key, key_separator, delimiter, partition, header or [],
                    input_format, null_empty, acks, compression, print_offsets, timeout)
