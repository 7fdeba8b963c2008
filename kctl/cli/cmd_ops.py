"""``kctl elect``, ``kctl events``, ``kctl log dump|verify``."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from kctl.cli.complete import complete_topic_partition
from kctl.cli.state import State, get_state

log_app = typer.Typer(help="Inspect and verify partition segment files.", no_args_is_help=True)

EVENT_TYPES = ("cluster_created", "controller_elected", "broker_up", "broker_down", "broker_fenced",
               "leader_changed", "isr_shrink", "isr_expand", "topic_created", "topic_altered", "topic_deleted",
               "group_rebalance", "group_member_joined", "group_member_left", "group_member_died",
               "group_deleted", "offsets_reset")


def parse_topic_partition(text: str) -> tuple[str, int | None]:
    from kctl.cluster.config import validate_topic_name
    from kctl.errors import InvalidArgumentError

    name, sep, p = text.rpartition(":")
    if not sep:
        validate_topic_name(text)
        return text, None
    validate_topic_name(name)
    if not p.isdigit():
        raise InvalidArgumentError(f"'{text}' should look like TOPIC or TOPIC:PARTITION")
    return name, int(p)


def _ids(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) if v else "-"
    return "none" if v is None else str(v)


def _words(reason: Any) -> str:
    return str(reason).replace("_", " ") if reason else ""


def _pairs(ev: dict[str, Any], skip: tuple[str, ...]) -> str:
    hidden = ("type", "time", "ts_ms", "metadata_version", *skip)
    return ", ".join(f"{k}={_ids(v) if isinstance(v, (list, tuple)) else v}" for k, v in ev.items()
                     if k not in hidden)


def describe_event(ev: dict[str, Any]) -> str:
    """One human sentence per event: old -> new leader, epochs, ISR and the reason, in words.

    The table, plain and ``watch`` renderings use it; JSON keeps every field as recorded.
    """
    t = ev.get("type", "?")
    tp = f"{ev.get('topic')}-{ev.get('partition')}"
    reason = _words(ev.get("reason"))
    why = f" ({reason})" if reason else ""
    if t == "leader_changed":
        new = ev.get("new_leader")
        target = str(new) if new is not None else "none: OFFLINE"
        return (f"{tp}: leader {_ids(ev.get('old_leader'))} -> {target}, leader epoch {ev.get('leader_epoch')}, "
                f"ISR {_ids(ev.get('isr'))}{why}")
    if t in ("isr_shrink", "isr_expand"):
        return f"{tp}: ISR {_ids(ev.get('old_isr'))} -> {_ids(ev.get('isr'))}{why}"
    if t == "controller_elected":
        prev = ev.get("previous")
        was = f", was broker {prev}" if prev is not None and prev != ev.get("broker") else ""
        return f"broker {ev.get('broker')} is the controller (controller epoch {ev.get('controller_epoch')}{was})"
    if t in ("broker_up", "broker_down", "broker_fenced"):
        pid = f", pid {ev['pid']}" if ev.get("pid") else ""
        tail = f": {reason}" if reason else ""
        return f"broker {ev.get('broker')} {t.split('_')[1]} (broker epoch {ev.get('broker_epoch')}{pid}){tail}"
    if t == "cluster_created":
        return f"cluster {ev.get('cluster_id')} created with brokers {_ids(ev.get('brokers'))}"
    if t == "topic_created":
        cfg = ev.get("config") or {}
        extra = f", {', '.join(f'{k}={v}' for k, v in cfg.items())}" if cfg else ""
        return (f"topic {ev.get('topic')} created: {ev.get('partitions')} partition(s), replication factor "
                f"{ev.get('replication_factor')}{extra}")
    if t.startswith("topic_"):
        extra = _pairs(ev, ("topic",))
        return f"topic {ev.get('topic')} {t.split('_', 1)[1]}{': ' + extra if extra else ''}"
    g = ev.get("group")
    who = f"{ev.get('client_id') or ev.get('member_id')} (pid {ev.get('pid')})"
    if t == "group_member_joined":
        gen = f", generation {ev['generation']}" if ev.get("generation") is not None else ""
        return f"group {g}: member {who} joined{gen}"
    if t in ("group_member_left", "group_member_died"):
        return f"group {g}: member {who} {'left' if t.endswith('left') else 'died'}{why}"
    if t == "group_rebalance":
        members = ev.get("members") or []
        return (f"group {g}: rebalanced to generation {ev.get('generation')}, {len(members)} member(s), "
                f"assignor {ev.get('assignor')}{why}")
    if t == "offsets_reset":
        return f"group {g}: offsets reset ({ev.get('mode')}): {_ids(ev.get('offsets'))}"
    if t.startswith("group_") or t == "offsets_reset":
        what = t.split("_", 1)[1].replace("_", " ") if t.startswith("group_") else "offsets reset"
        extra = _pairs(ev, ("group",))
        return f"group {ev.get('group')} {what}{': ' + extra if extra else ''}"
    if t in ("stream_started", "stream_stopped"):
        head = (f"stream {ev.get('kind')} {ev.get('name')}: {ev.get('input')} -> {ev.get('output')} "
                f"(group {ev.get('group')}, pid {ev.get('pid')})")
        if t == "stream_started":
            return f"{head} started"
        return (f"{head} stopped ({ev.get('reason')}): {ev.get('records_in')} in, "
                f"{ev.get('records_out')} out, {ev.get('duplicates')} already produced")
    extra = _pairs(ev, ())
    return f"{t.replace('_', ' ')}{': ' + extra if extra else ''}"


def event_style(ev: dict[str, Any]) -> str | None:
    """Red for losses (a broker gone, a partition offline), yellow for moves, green for recoveries."""
    t = ev.get("type", "")
    if t in ("broker_down", "broker_fenced", "group_member_died") or (
            t == "leader_changed" and ev.get("new_leader") is None):
        return "bold red" if t == "leader_changed" else "red"
    if t in ("leader_changed", "isr_shrink", "controller_elected", "group_rebalance"):
        return "yellow"
    if t in ("broker_up", "isr_expand"):
        return "green"
    return None


EVENT_COLUMNS = ("TIME", "TYPE", "WHAT")


class _EventPrinter:
    """Prints events one by one (``--follow``): JSON Lines, tab-separated lines, or styled lines."""

    def __init__(self, st: State) -> None:
        self.st = st
        self._console: Any = None
        self._header_done = False

    def print(self, ev: dict[str, Any]) -> None:
        import json
        import sys

        st = self.st
        if st.is_json:
            sys.stdout.write(json.dumps(ev, separators=(",", ":")) + "\n")
        elif st.is_table:
            if self._console is None:
                from rich.console import Console

                self._console = Console(highlight=False)
            from rich.text import Text

            line = Text()
            line.append(str(ev.get("time", "")), style="dim")
            line.append(f"  {ev.get('type', ''):<20} ")
            line.append(describe_event(ev), style=event_style(ev) or "")
            self._console.print(line, soft_wrap=True)
            return
        else:
            if not self._header_done:
                sys.stdout.write("\t".join(EVENT_COLUMNS) + "\n")
                self._header_done = True
            sys.stdout.write(f"{ev.get('time', '')}\t{ev.get('type', '')}\t{describe_event(ev)}\n")
        sys.stdout.flush()

    def header(self) -> None:
        """The plain header even when no event is printed yet (``cut``/``awk`` see stable columns)."""
        import sys

        if self.st.output == "plain" and not self._header_done:
            sys.stdout.write("\t".join(EVENT_COLUMNS) + "\n")
            sys.stdout.flush()
            self._header_done = True


def register(app: typer.Typer) -> None:
    app.add_typer(log_app, name="log")

    @app.command("elect")
    def elect(
        ctx: typer.Context,
        targets: Annotated[list[str] | None, typer.Argument(
            help="TOPIC or TOPIC:PARTITION (default: every partition).",
            autocompletion=complete_topic_partition)] = None,
        election_type: Annotated[str, typer.Option("--type", help="preferred or unclean.")] = "preferred",
    ) -> None:
        """Leader election on demand: move leaders back to preferred replicas, or elect uncleanly.

        Example: kctl elect --type preferred orders
        """
        st = get_state(ctx)
        parsed = [parse_topic_partition(t) for t in targets or []]
        events = st.cluster().elect(election_type, parsed or None)
        if st.is_json:
            st.emit_json({"elections": [{k: e.get(k) for k in ("topic", "partition", "old_leader", "new_leader",
                                                                 "leader_epoch", "reason")} for e in events]})
            return
        if not events:
            st.info("No leader changed (every partition already has its preferred or only possible leader)")
        for e in events:
            st.info(describe_event(e))

    @app.command("events")
    def events(
        ctx: typer.Context,
        n: Annotated[int | None, typer.Option("-n", help="Only the last N events.", show_default=False)] = None,
        follow: Annotated[bool, typer.Option("--follow", "-F", help="Keep printing new events.")] = False,
        types: Annotated[list[str] | None, typer.Option(
            "--type", help=f"Only events of this type (repeatable): {', '.join(EVENT_TYPES)}.")] = None,
    ) -> None:
        """The cluster's change history: controllers, brokers up/down, leader and ISR changes, topics, groups.

        Example: kctl events -n 20;  kctl events --follow --type leader_changed
        """
        from kctl.errors import InvalidArgumentError

        st = get_state(ctx)
        if n is not None and n < 0:
            raise InvalidArgumentError("-n must be zero or more")
        wanted = set(types or [])
        c = st.cluster()
        history = c.events()
        evs = [e for e in history if not wanted or e.get("type") in wanted]
        if n is not None:
            evs = evs[-n:] if n else []
        unknown = sorted(wanted - set(EVENT_TYPES))
        if unknown:
            st.warn(f"unknown event type(s) {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})")
        printer = _EventPrinter(st)
        if not follow and not st.is_json:
            rows = [[e.get("time", ""), e.get("type", ""), describe_event(e)] for e in evs]
            styles = [event_style(e) for e in evs]
            st.emit_rows(list(EVENT_COLUMNS), rows, json_doc=evs, title="Cluster events (times in UTC)",
                         row_styles=styles, notes=[] if rows else ["No events match"])
            return
        printer.header()
        for e in evs:
            printer.print(e)
        if follow:
            try:
                # follow from the first event not read above, so nothing appended in between is lost
                for i, e in enumerate(c.store.follow_events(start_at_end=False)):
                    if i >= len(history) and (not wanted or e.get("type") in wanted):
                        printer.print(e)
            except KeyboardInterrupt:
                pass


@log_app.command("dump")
def log_dump(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="TOPIC:PARTITION, or a replica directory or .log file path.",
                                          autocompletion=complete_topic_partition)],
    broker: Annotated[int | None, typer.Option("--broker", help="Which replica (default: the leader).",
                                               show_default=False)] = None,
    print_data: Annotated[bool, typer.Option("--print-data", help="Also print every record.")] = False,
) -> None:
    """The batches (and records) of a replica's segments, like kafka-dump-log.

    Example: kctl log dump orders:0 --print-data
    """
    import json
    import sys

    from kctl.client.envelope import bytes_to_json
    from kctl.errors import InvalidArgumentError, UnknownPartitionError
    from kctl.storage.verify import dump_replica

    st = get_state(ctx)
    if os.path.sep in target or target.endswith(".log"):
        directory = os.path.dirname(target) if target.endswith(".log") else target
        if not os.path.isdir(directory):
            raise InvalidArgumentError(f"{directory} is not a replica directory")
    else:
        topic, p = parse_topic_partition(target)
        if p is None:
            raise InvalidArgumentError("log dump takes TOPIC:PARTITION")
        c = st.cluster()
        info = c.partition(topic, p)
        b = broker if broker is not None else (info.leader if info.leader is not None else info.replicas[0])
        if b not in info.replicas:
            raise UnknownPartitionError(f"broker {b} holds no replica of {topic}-{p} (replicas: {info.replicas})")
        directory = c.layout.replica_dir(b, topic, p)
    out = sys.stdout
    for d in dump_replica(directory, print_data):
        h = d.header
        doc = {"segment": d.segment, "position": d.position, "base_offset": h.base_offset,
               "last_offset": h.last_offset, "count": h.records_count, "size": h.size,
               "leader_epoch": h.partition_leader_epoch, "producer_id": h.producer_id,
               "producer_epoch": h.producer_epoch, "base_sequence": h.base_sequence,
               "compression": h.compression.name.lower(), "max_timestamp": h.max_timestamp,
               "crc": h.crc, "crc_valid": d.crc_valid, "control": h.is_control}
        if st.is_json:
            if d.records is not None:
                doc["records"] = [{"offset": r.offset, "timestamp": r.timestamp, "key": bytes_to_json(r.key),
                                   "value": bytes_to_json(r.value),
                                   "headers": [[k, bytes_to_json(v)] for k, v in r.headers]} for r in d.records]
            out.write(json.dumps(doc) + "\n")
        else:
            out.write(f"baseOffset: {h.base_offset} lastOffset: {h.last_offset} count: {h.records_count} "
                      f"position: {d.position} size: {h.size} partitionLeaderEpoch: {h.partition_leader_epoch} "
                      f"producerId: {h.producer_id} producerEpoch: {h.producer_epoch} "
                      f"baseSequence: {h.base_sequence} compresscodec: {doc['compression']} "
                      f"maxTimestamp: {h.max_timestamp} crc: {h.crc} isvalid: {str(d.crc_valid).lower()}\n")
            for r in d.records or []:
                key = r.key.decode("utf-8", "replace") if r.key is not None else "null"
                val = r.value.decode("utf-8", "replace") if r.value is not None else "null"
                out.write(f"| offset: {r.offset} CreateTime: {r.timestamp} keySize: "
                          f"{len(r.key) if r.key is not None else -1} valueSize: "
                          f"{len(r.value) if r.value is not None else -1} headerKeys: "
                          f"[{','.join(k for k, _ in r.headers)}] key: {key} payload: {val}\n")
    out.flush()


@log_app.command("verify")
def log_verify(ctx: typer.Context) -> None:
    """Check every segment, index and checkpoint of every replica on every broker; exit 1 if any is damaged.

    Example: kctl log verify
    """
    from kctl.errors import CorruptRecordError, NotInitializedError
    from kctl.storage.checkpoint import read_offsets_checkpoint
    from kctl.storage.verify import Problem, verify_replica

    st = get_state(ctx)
    c = st.cluster()
    problems: list[Problem] = []
    checked = 0
    c.broker_ids  # noqa: B018 - cluster.json must exist and parse (exit 3 otherwise) before the rest
    try:
        md = c.store.load()
        for t in md.topics.values():
            for p, part in enumerate(t.partitions):
                if len(set(part.replicas)) != len(part.replicas) or not set(part.isr) <= set(part.replicas) \
                        or (part.leader is not None and part.leader not in part.replicas):
                    problems.append(Problem(c.layout.metadata_file, None,
                                            f"{t.name}-{p}: inconsistent replicas {part.replicas}, "
                                            f"ISR {part.isr}, leader {part.leader}"))
    except (NotInitializedError, KeyError, TypeError, ValueError) as exc:
        problems.append(Problem(c.layout.metadata_file, None, f"unreadable: {exc}"))
    for b in c.broker_ids:
        bdir = c.layout.broker_dir(b)
        for name in ("recovery-point-offset-checkpoint", "replication-offset-checkpoint",
                     "log-start-offset-checkpoint"):
            path = os.path.join(bdir, name)
            try:
                read_offsets_checkpoint(path)
            except CorruptRecordError as exc:
                problems.append(Problem(path, None, str(exc)))
        if not os.path.isdir(bdir):
            continue
        for name in sorted(os.listdir(bdir)):
            path = os.path.join(bdir, name)
            if os.path.isdir(path) and not name.endswith("-delete"):
                checked += 1
                problems.extend(verify_replica(path))
    if st.is_json:
        st.emit_json({"replicas_checked": checked, "ok": not problems,
                      "problems": [{"path": p.path, "position": p.position, "message": p.message} for p in problems]})
    else:
        for p in problems:
            st.info(f"[red]DAMAGED[/] {p}")
        st.info(f"{checked} replica(s) checked: " + ("[green]all intact[/]" if not problems
                                                     else f"[red]{len(problems)} problem(s)[/]"))
    if problems:
        raise typer.Exit(1)
