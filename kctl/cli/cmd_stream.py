"""``kctl stream map|filter|count|aggregate``: stream processors, each one a consumer group member."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from kctl.cli.complete import complete_group, complete_topic
from kctl.cli.state import State, get_state

stream_app = typer.Typer(
    help="Stream processors: read a topic, transform each record, produce to another topic. Each processor "
         "is a consumer group member (several instances share the partitions); outputs are acknowledged "
         "before input offsets are committed, and a restart skips what was already produced.",
    no_args_is_help=True)

FromOpt = Annotated[str, typer.Option("--from", help="Input topic.", autocompletion=complete_topic,
                                      show_default=False)]
ToOpt = Annotated[str, typer.Option("--to", help="Output topic (must exist).", autocompletion=complete_topic,
                                    show_default=False)]
GroupOpt = Annotated[str | None, typer.Option(
    "--group", "-g", help="Consumer group (default stream-NAME).", autocompletion=complete_group,
    show_default=False)]
NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Processor name, shown in events (default IN-OUT).", show_default=False)]
ExitOpt = Annotated[bool, typer.Option(
    "--exit-at-end", "-e", help="Exit once every assigned partition is processed up to its high watermark.")]
ExprOpt = Annotated[str | None, typer.Option(
    "--expr", help="Python expression over key, value, text, headers, topic, partition, offset, timestamp, json.",
    show_default=False)]
ExecOpt = Annotated[str | None, typer.Option(
    "--exec", help="Shell command run once, fed one value per line, answering one line per value.",
    show_default=False)]
NullOpt = Annotated[bool, typer.Option(
    "--null", "-0", help="With --exec: NUL-delimited values and answers (values may contain newlines).")]
ExecTimeoutOpt = Annotated[float, typer.Option(
    "--exec-timeout", help="Seconds without an answer from the --exec command before it counts as hung.")]
WindowOpt = Annotated[float | None, typer.Option(
    "--window", help="Tumbling windows of this many seconds by record timestamp; output key KEY@WINDOWSTART.",
    show_default=False)]
CommitOpt = Annotated[float, typer.Option(
    "--commit-interval", help="Seconds between commits of input offsets (longer: fewer commits, more rescanning "
                              "after a crash).")]
StateDirOpt = Annotated[str | None, typer.Option(
    "--state-dir", help="Where the local state stores live (default DATA_DIR/streams).", show_default=False)]


def _note(message: str) -> None:
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False).print(f"[dim]{escape(message)}[/]")
    else:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def _run(st: State, kind: str, **kwargs: Any) -> None:
    """Build the processor (bad options and expressions fail here, before touching the cluster), run
    it until Ctrl-C/SIGTERM or the end of the input, and report what it did."""
    from kctl.errors import InvalidArgumentError
    from kctl.streams.processor import PROCESSORS

    if kwargs.get("checkpoint_interval", 0.5) < 0:
        raise InvalidArgumentError("--commit-interval must not be negative")
    processor = PROCESSORS[kind](st.data_dir, on_event=_note, on_warning=st.warn, **kwargs)
    stop = {"flag": False}

    def handle(_signum: int, _frame: Any) -> None:
        # never raise here: the record in hand is finished, outputs flushed, offsets committed
        stop["flag"] = True

    old_term = signal.signal(signal.SIGTERM, handle)
    old_int = signal.signal(signal.SIGINT, handle)
    try:
        stats = processor.run(lambda: stop["flag"])
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int or signal.default_int_handler)
    doc = {**processor.describe(), **stats.to_json()}
    if st.is_json:
        st.emit_json(doc)
        return
    extra = [f"{stats.duplicates} already produced (skipped)"] if stats.duplicates else []
    if stats.dropped:
        extra.append(f"{stats.dropped} dropped")
    if stats.restored:
        extra.append(f"{stats.restored} changelog record(s) restored")
    st.info(f"stream {kind} {processor.input} -> {processor.output} (group {processor.group}): "
            f"{stats.records_in} record(s) in, {stats.records_out} out" + "".join(f", {e}" for e in extra))


@stream_app.command("map")
def stream_map(
    ctx: typer.Context, from_topic: FromOpt, to_topic: ToOpt, expr: ExprOpt = None, exec_command: ExecOpt = None,
    group: GroupOpt = None, name: NameOpt = None, null: NullOpt = False, exec_timeout: ExecTimeoutOpt = 30.0,
    commit_interval: CommitOpt = 0.5, exit_at_end: ExitOpt = False,
) -> None:
    """Transform every record: the --expr result (bytes, str, None, JSON for numbers/lists/dicts, or a
    (key, value) tuple) or the --exec command's answer line becomes the value; keys are kept unless changed.

    Example: kctl stream map --from orders --to orders-upper --expr 'value.upper()'
    """
    _run(get_state(ctx), "map", input_topic=from_topic, output_topic=to_topic, expr=expr,
         exec_command=exec_command, null=null, exec_timeout=exec_timeout, group=group, name=name,
         checkpoint_interval=commit_interval, exit_at_end=exit_at_end)


@stream_app.command("filter")
def stream_filter(
    ctx: typer.Context, from_topic: FromOpt, to_topic: ToOpt, expr: ExprOpt = None, exec_command: ExecOpt = None,
    group: GroupOpt = None, name: NameOpt = None, null: NullOpt = False, exec_timeout: ExecTimeoutOpt = 30.0,
    commit_interval: CommitOpt = 0.5, exit_at_end: ExitOpt = False,
) -> None:
    """Keep the records for which --expr is true, or which the --exec command answers 1/true/yes/keep
    (0/false/no/drop or an empty line drops); kept records are copied unchanged. Tombstones bypass --exec.

    Example: kctl stream filter --from orders --to big-orders --expr 'json.loads(value)["amount"] > 100'
    """
    _run(get_state(ctx), "filter", input_topic=from_topic, output_topic=to_topic, expr=expr,
         exec_command=exec_command, null=null, exec_timeout=exec_timeout, group=group, name=name,
         checkpoint_interval=commit_interval, exit_at_end=exit_at_end)


@stream_app.command("count")
def stream_count(
    ctx: typer.Context, from_topic: FromOpt, to_topic: ToOpt, window: WindowOpt = None, group: GroupOpt = None,
    name: NameOpt = None, state_dir: StateDirOpt = None, commit_interval: CommitOpt = 0.5,
    exit_at_end: ExitOpt = False,
) -> None:
    """Count records per key (records without a key are skipped); every update emits (key, count) to the
    output. State lives in a local store backed by the compacted topic GROUP-changelog.

    Example: kctl stream count --from clicks --to clicks-per-user --window 60
    """
    _run(get_state(ctx), "count", input_topic=from_topic, output_topic=to_topic, window=window, group=group,
         name=name, state_dir=state_dir, checkpoint_interval=commit_interval, exit_at_end=exit_at_end)


@stream_app.command("aggregate")
def stream_aggregate(
    ctx: typer.Context, from_topic: FromOpt, to_topic: ToOpt,
    agg: Annotated[str, typer.Option("--agg", help="sum, min, max, avg or count.")] = "sum",
    field: Annotated[str | None, typer.Option(
        "--field", help="Take the number from this field of a JSON value (a.b for nested); default: the value.",
        show_default=False)] = None,
    window: WindowOpt = None, group: GroupOpt = None, name: NameOpt = None, state_dir: StateDirOpt = None,
    commit_interval: CommitOpt = 0.5, exit_at_end: ExitOpt = False,
) -> None:
    """Aggregate a number per key: each update emits (key, result). Values that are not numbers are
    skipped (the first few with a warning). State as in count.

    Example: kctl stream aggregate --from orders --to revenue --agg sum --field amount
    """
    _run(get_state(ctx), "aggregate", input_topic=from_topic, output_topic=to_topic, agg=agg, field=field,
         window=window, group=group, name=name, state_dir=state_dir, checkpoint_interval=commit_interval,
         exit_at_end=exit_at_end)


def register(app: typer.Typer) -> None:
    app.add_typer(stream_app, name="stream")
