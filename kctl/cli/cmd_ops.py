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


def describe_event(ev: dict[str, Any]) -> str:
    """One human sentence per event (the table and plain renderings use it)."""
    t = ev.get("type", "?")
    if t == "leader_changed":
        new = ev.get("new_leader")
        target = f"broker {new}" if new is not None else "none (offline)"
        return (f"{ev.get('topic')}-{ev.get('partition')}: leader {ev.get('old_leader')} -> {target}, "
                f"epoch {ev.get('leader_epoch')}, ISR {ev.get('isr')} ({ev.get('reason')})")
    if t in ("isr_shrink", "isr_expand"):
        return (f"{ev.get('topic')}-{ev.get('partition')}: ISR {ev.get('old_isr')} -> {ev.get('isr')} "
                f"({ev.get('reason')})")
    if t == "controller_elected":
        return f"broker {ev.get('broker')} is the controller (epoch {ev.get('controller_epoch')})"
    if t in ("broker_up", "broker_down", "broker_fenced"):
        return f"broker {ev.get('broker')} {t.split('_')[1]} (epoch {ev.get('broker_epoch')}): {ev.get('reason', '')}"
    if t.startswith("topic_"):
        extra = {k: v for k, v in ev.items() if k not in ("type", "topic", "time", "ts_ms", "metadata_version")}
        return f"topic {ev.get('topic')} {t.split('_', 1)[1]} {extra if extra else ''}".rstrip()
    if t.startswith("group_"):
        extra = {k: v for k, v in ev.items() if k not in ("type", "group", "time", "ts_ms", "metadata_version")}
        return f"group {ev.get('group')} {t.split('_', 1)[1].replace('_', ' ')} {extra}"
    extra = {k: v for k, v in ev.items() if k not in ("type", "time", "ts_ms", "metadata_version")}
    return f"{t} {extra}"


def _event_style(ev: dict[str, Any]) -> str | None:
    t = ev.get("type", "")
    if t in ("broker_down", "broker_fenced") or (t == "leader_changed" and ev.get("new_leader") is None):
        return "red"
    if t in ("leader_changed", "isr_shrink", "controller_elected"):
        return "yellow"
    if t in ("broker_up", "isr_expand"):
        return "green"
    return None


def _print_event(st: State, ev: dict[str, Any]) -> None:
    import json
    import sys

    if st.is_json:
        sys.stdout.write(json.dumps(ev, separators=(",", ":")) + "\n")
    elif st.is_table:
        style = _event_style(ev)
        text = describe_event(ev)
        st_out = f"[{style}]{text}[/]" if style else text
        from rich.console import Console

        Console(highlight=False).print(f"[dim]{ev.get('time', '')}[/] {ev.get('type', ''):<20} {st_out}")
        return
    else:
        sys.stdout.write(f"{ev.get('time', '')}\t{ev.get('type', '')}\t{describe_event(ev)}\n")
    sys.stdout.flush()


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
        evs = [e for e in c.events() if not wanted or e.get("type") in wanted]
        if n is not None:
            evs = evs[-n:] if n else []
        if st.is_json and not follow:
            for e in evs:
                _print_event(st, e)
            return
        if st.is_table and not follow:
            rows = [[e.get("time", ""), e.get("type", ""), describe_event(e)] for e in evs]
            st.emit_rows(["TIME", "TYPE", "WHAT"], rows, json_doc=evs, title="Cluster events",
                         styler=lambda r: _event_style({"type": r[1], "new_leader": 0 if "offline" not in r[2]
                                                        else None}))
        else:
            for e in evs:
                _print_event(st, e)
        if follow:
            try:
                for e in c.store.follow_events(start_at_end=True):
                    if not wanted or e.get("type") in wanted:
                        _print_event(st, e)
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
    from kctl.errors import CorruptRecordError
    from kctl.storage.checkpoint import read_offsets_checkpoint
    from kctl.storage.verify import Problem, verify_replica

    st = get_state(ctx)
    c = st.cluster()
    problems: list[Problem] = []
    checked = 0
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
