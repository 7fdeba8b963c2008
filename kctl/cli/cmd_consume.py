"""``kctl consume``: read topics to stdout, alone or as a member of a consumer group."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from kctl.cli.complete import complete_topic
from kctl.cli.state import State, get_state


class _Stop(Exception):
    pass


def register(app: typer.Typer) -> None:
    @app.command("consume")
    def consume(
        ctx: typer.Context,
        topics: Annotated[list[str], typer.Argument(help="Topics to read.", autocompletion=complete_topic)],
        group: Annotated[str | None, typer.Option(
            "--group", "-g", help="Join this consumer group (partitions assigned, offsets committed).")] = None,
        partition: Annotated[int | None, typer.Option(
            "--partition", "-p", help="Without a group: read only this partition.", show_default=False)] = None,
        offset: Annotated[str | None, typer.Option(
            "--offset", "-o", help="Start: beginning|end|stored|N|-N|@TIMESTAMP (ms or ISO-8601).",
            show_default=False)] = None,
        from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Same as -o beginning.")] = False,
        reset: Annotated[str, typer.Option("--reset", help="Group start when nothing is committed: "
                                                            "earliest or latest.")] = "earliest",
        max_messages: Annotated[int | None, typer.Option(
            "--max-messages", "-n", help="Exit after N records.", show_default=False)] = None,
        exit_at_end: Annotated[bool, typer.Option(
            "--exit-at-end", "-e", help="Exit once every assigned partition is read to its high watermark.")] = False,
        fmt: Annotated[str | None, typer.Option(
            "--format", "-f", help="kcat-style format: %t %p %o %k %s %T %h %K %S %%, \\n \\t (default %s\\n).",
            show_default=False)] = None,
        assignor: Annotated[str, typer.Option(
            "--assignor", help="range, roundrobin or cooperative-sticky.")] = "range",
        no_commit: Annotated[bool, typer.Option("--no-commit", help="Read without committing offsets.")] = False,
        instance_id: Annotated[str | None, typer.Option(
            "--instance-id", help="Static membership id (KIP-345): a restart keeps its partitions.")] = None,
        client_id: Annotated[str, typer.Option("--client-id", help="Client id shown in group describe.")] = "kctl",
    ) -> None:
        """Read records to stdout (raw values by default; the JSON envelope with -o json).

        Examples: kctl consume orders -e;  kctl consume orders -g billing;  kctl -o json consume orders -n 10
        """
        st = get_state(ctx)
        run_consume(st, topics, group, partition, offset, from_beginning, reset, max_messages, exit_at_end,
                    fmt, assignor, no_commit, instance_id, client_id)


def run_consume(st: State, topics: list[str], group: str | None, partition: int | None, offset: str | None,
                from_beginning: bool, reset: str, max_messages: int | None, exit_at_end: bool,
                fmt: str | None, assignor: str, no_commit: bool, instance_id: str | None, client_id: str) -> None:
    from kctl.client.offsetspec import OffsetSpec, parse_offset_spec
    from kctl.cluster.config import validate_topic_name
    from kctl.cluster.layout import ClusterLayout
    from kctl.cluster.metadata import require_live_cluster
    from kctl.errors import InvalidArgumentError

    for t in topics:
        validate_topic_name(t)
    if from_beginning:
        if offset is not None and offset != "beginning":
            raise InvalidArgumentError("--from-beginning and --offset cannot be used together")
        offset = "beginning"
    if offset in ("json", "plain", "table"):
        raise InvalidArgumentError(
            f"'{offset}' is not an offset; the output style goes before the command: kctl -o {offset} consume ...")
    spec: OffsetSpec | None = parse_offset_spec(offset) if offset is not None else None
    if reset not in ("earliest", "latest"):
        raise InvalidArgumentError(f"--reset must be earliest or latest (got '{reset}')")
    if max_messages is not None and max_messages < 0:
        raise InvalidArgumentError("--max-messages must be zero or more")
    if group is None and spec is not None and spec.kind == "stored":
        raise InvalidArgumentError("-o stored needs a consumer group (-g GROUP)")
    if group is not None and partition is not None:
        raise InvalidArgumentError("-p/--partition is for reading without a group; a group assigns partitions")

    md = require_live_cluster(ClusterLayout.at(st.data_dir))
    for t in topics:
        top = md.topic(t)
        if partition is not None and not 0 <= partition < len(top.partitions):
            from kctl.errors import UnknownPartitionError

            raise UnknownPartitionError(f"topic '{t}' has no partition {partition} (it has {len(top.partitions)})")

    writer = _RecordWriter(st, fmt)

    def on_reset(tp: tuple[str, int], old: int, new: int, why: str) -> None:
        st.warn(f"offset {old} of {tp[0]}-{tp[1]} is {why}; resetting to {new} ({reset})")

    # A signal only raises _Stop outside the group member's own calls: in the middle of a
    # rebalance or a commit it sets the flag and the loop ends after the call returns (within a
    # poll timeout), so group state and committed offsets stay exact.
    stop = {"flag": False, "guard": False}

    def handle_term(_signum: int, _frame: Any) -> None:
        stop["flag"] = True
        if not stop["guard"]:
            raise _Stop()

    old_term = signal.signal(signal.SIGTERM, handle_term)
    old_int = signal.signal(signal.SIGINT, handle_term) if group is not None else signal.getsignal(signal.SIGINT)
    consumer: Any
    if group is not None:
        from kctl.client.group import GroupConsumer

        stop["guard"] = True
        try:
            consumer = GroupConsumer(st.data_dir, group, topics, assignor=assignor, reset=reset,
                                     start=spec, instance_id=instance_id, client_id=client_id,
                                     auto_commit=not no_commit, on_reset=on_reset,
                                     on_event=lambda msg: st.info(f"[dim]{msg}[/]"))
        except BaseException:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int or signal.default_int_handler)
            raise
        finally:
            stop["guard"] = False
    else:
        from kctl.client.consumer import Consumer

        consumer = Consumer(st.data_dir, reset=reset, on_reset=on_reset)
        start = spec or OffsetSpec("beginning")
        wanted = {}
        for t in topics:
            for tp in consumer.partitions_of(t):
                if partition is None or tp[1] == partition:
                    wanted[tp] = start
        consumer.assign(wanted)
    from kctl.cli.progress import Progress

    # progress on stderr only while records go elsewhere than this terminal
    progress = Progress("consumed", enabled=sys.stderr.isatty() and not sys.stdout.isatty())
    written = 0
    idle_polls = 0
    guarded = group is not None
    try:
        while not stop["flag"]:
            if max_messages is not None and written >= max_messages:
                break
            stop["guard"] = guarded
            try:
                # with -e, a caught-up consumer checks "at the end?" at once instead of waiting
                wait = 0.0 if exit_at_end and idle_polls == 0 else (0.5 if exit_at_end else 1.0)
                batches = consumer.poll(wait, values_only=writer.values_only)
                idle_polls = 0 if batches else idle_polls + 1
                done = not batches and exit_at_end and consumer.at_end()
            finally:
                stop["guard"] = False
            if done or stop["flag"]:
                break
            if not batches:
                if writer.reader_gone():
                    break  # `| head` exited while we waited for records: end quietly
                continue
            remaining = None if max_messages is None else max_messages - written
            n, positions = writer.write(batches, remaining)  # unguarded: a blocked stdout stays interruptible
            stop["guard"] = guarded
            written += n
            progress.tick(n)
            if group is not None:
                consumer.delivered(positions)
            stop["guard"] = False
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        stop["guard"] = True
        try:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                pass
            consumer.close()
            progress.close()
        finally:
            signal.signal(signal.SIGTERM, old_term)
            if group is not None:
                signal.signal(signal.SIGINT, old_int or signal.default_int_handler)


class _RecordWriter:
    """Formats records to stdout: raw bytes through a kcat format, or JSON envelope lines."""

    def __init__(self, st: State, fmt: str | None) -> None:
        from kctl.client.formatter import compile_format

        self.json = st.is_json
        self.fmt_text = fmt
        self.formatter = None if self.json else compile_format(fmt if fmt is not None else "%s\\n")
        self.values_only = not self.json and (fmt is None or fmt == "%s\\n")
        self.out = sys.stdout.buffer
        self._poll: Any = None

    def reader_gone(self) -> bool:
        """True if stdout is a pipe whose reader has closed it (poll reports POLLERR)."""
        import select

        if self._poll is None:
            self._poll = select.poll()
            self._poll.register(self.out.fileno(), 0)
        return any(ev & (select.POLLERR | select.POLLHUP) for _fd, ev in self._poll.poll(0))

    def write(self, batches: list[Any], limit: int | None) -> tuple[int, dict[tuple[str, int], int]]:
        from kctl.client.envelope import dumps_envelope

        parts: list[bytes] = []
        count = 0
        positions: dict[tuple[str, int], int] = {}
        for b in batches:
            if limit is not None and count >= limit:
                break
            if b.values is not None:
                vals = b.values
                if limit is not None and count + len(vals) > limit:
                    vals = vals[: limit - count]
                if not vals:
                    continue
                if None in vals:
                    vals = [b"" if v is None else v for v in vals]
                parts.append(b"\n".join(vals))  # type: ignore[arg-type]
                parts.append(b"\n")
                count += len(vals)
                positions[(b.topic, b.partition)] = b.first_offset + len(vals)
                continue
            recs = b.records
            if limit is not None and count + len(recs) > limit:
                recs = recs[: limit - count]
            if self.json:
                parts.extend((dumps_envelope(b.topic, b.partition, r.offset, r.timestamp, r.key, r.value,
                                             r.headers) + "\n").encode() for r in recs)
            else:
                f = self.formatter
                parts.extend(f(b.topic, b.partition, r.offset, r.timestamp, r.key, r.value, r.headers) for r in recs)
            count += len(recs)
            if recs:
                positions[(b.topic, b.partition)] = recs[-1].offset + 1
        self.out.write(b"".join(parts))
        self.out.flush()
        return count, positions
