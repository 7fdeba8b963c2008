"""``kctl group list|describe|reset-offsets|delete``: what kafka-consumer-groups does."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kctl.cli.complete import complete_group, complete_topic
from kctl.cli.state import State, get_state

group_app = typer.Typer(help="Consumer groups: list, describe (with lag), reset offsets, delete.",
                        no_args_is_help=True)

GroupArg = Annotated[str, typer.Argument(help="Group id.", autocompletion=complete_group)]


def _admin(st: State):  # type: ignore[no-untyped-def]
    from kctl.cluster.groups import GroupAdmin

    return GroupAdmin(st.data_dir)


def _dash(v: Any) -> Any:
    return "-" if v is None else v


@group_app.command("list")
def group_list(ctx: typer.Context) -> None:
    """GROUP STATE MEMBERS, one row per consumer group.

    Example: kctl group list
    """
    st = get_state(ctx)
    groups = _admin(st).list_groups()
    rows = [[g["group"], g["state"], g["members"]] for g in groups]
    st.emit_rows(["GROUP", "STATE", "MEMBERS"], rows, json_doc={"groups": groups},
                 title="Consumer groups" if rows else None,
                 styler=lambda r: "yellow" if r[1] in ("PreparingRebalance", "CompletingRebalance") else None,
                 notes=[] if rows else ["No consumer groups yet (kctl consume TOPIC -g GROUP)"])


def _summary(doc: dict[str, Any]) -> str:
    members = len(doc["members"])
    assignor = f", assignor {doc['assignor']}" if doc.get("assignor") else ""
    return (f"Group {doc['group']}: {doc['state']}, generation {doc['generation']}{assignor}, "
            f"{members} member(s), total lag {doc['total_lag']}")


@group_app.command("describe")
def group_describe(
    ctx: typer.Context,
    group: GroupArg,
    members: Annotated[bool, typer.Option("--members", help="List members with their assignment.")] = False,
    state: Annotated[bool, typer.Option("--state", help="One line: state, generation, assignor, lag.")] = False,
) -> None:
    """Per partition: committed offset, log end offset (high watermark), lag and the member reading it.

    Columns as kafka-consumer-groups: GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID
    HOST CLIENT-ID; idle members (more members than partitions) get a row with no partition.

    Example: kctl group describe billing --members
    """
    st = get_state(ctx)
    doc = _admin(st).describe_group(group)
    title = _summary(doc)
    if state:
        rows = [[doc["group"], doc["state"], doc["generation"], _dash(doc["assignor"]), len(doc["members"]),
                 doc["total_lag"]]]
        st.emit_rows(["GROUP", "STATE", "GENERATION", "ASSIGNOR", "MEMBERS", "TOTAL-LAG"], rows, json_doc=doc,
                     title=f"Group {doc['group']}")
        return
    if members:
        rows = []
        for m in doc["members"]:
            parts = [f"{a['topic']}-{a['partition']}" for a in m["assignment"]]
            rows.append([doc["group"], m["member_id"], m["host"], m["pid"], m["client_id"], _dash(m["instance_id"]),
                         m["status"], len(parts), ",".join(parts) or "-"])
        st.emit_rows(["GROUP", "CONSUMER-ID", "HOST", "PID", "CLIENT-ID", "INSTANCE-ID", "STATUS", "#PARTITIONS",
                      "ASSIGNMENT"], rows, json_doc=doc, title=title,
                     styler=lambda r: None if r[6] == "alive" else "yellow",
                     notes=[] if rows else [f"Group {group} has no members ({doc['state']})"])
        if not st.is_table and not st.is_json:
            st.info(title)
        return
    info = {m["member_id"]: m for m in doc["members"]}
    rows = []
    for p in doc["partitions"]:
        m = info.get(p["member_id"] or "")
        rows.append([doc["group"], p["topic"], p["partition"], _dash(p["current_offset"]),
                     _dash(p["log_end_offset"]), _dash(p["lag"]), _dash(p["member_id"]),
                     m["host"] if m else "-", m["client_id"] if m else "-"])
    for m in doc["members"]:
        if not m["assignment"]:
            rows.append([doc["group"], "-", "-", "-", "-", "-", m["member_id"], m["host"], m["client_id"]])
    st.emit_rows(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                  "CLIENT-ID"], rows, json_doc=doc, title=title,
                 styler=lambda r: "yellow" if isinstance(r[5], int) and r[5] > 0 else None,
                 notes=[] if rows else [f"Group {group} has no members and no committed offsets"])
    if not st.is_table and not st.is_json:
        st.info(title)


def _parse_topic_arg(text: str) -> tuple[str, list[int] | None]:
    """``T``, ``T:P`` or ``T:P1,P2`` (Kafka's --topic syntax)."""
    from kctl.cluster.config import validate_topic_name
    from kctl.errors import InvalidArgumentError

    name, sep, parts = text.partition(":")
    validate_topic_name(name)
    if not sep:
        return name, None
    words = [w.strip() for w in parts.split(",")]
    if not words or not all(w.isdigit() for w in words):
        raise InvalidArgumentError(f"'{text}' should look like TOPIC, TOPIC:PARTITION or TOPIC:P1,P2")
    return name, [int(w) for w in words]


@group_app.command("reset-offsets")
def group_reset_offsets(
    ctx: typer.Context,
    group: GroupArg,
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", help="TOPIC, TOPIC:P or TOPIC:P1,P2 (repeatable).", autocompletion=complete_topic)] = None,
    all_topics: Annotated[bool, typer.Option("--all-topics", help="Every topic the group reads or has offsets for.")
                          ] = False,
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="The log start offset.")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="The log end offset (high watermark).")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="This offset.", show_default=False)] = None,
    shift_by: Annotated[int | None, typer.Option("--shift-by", help="Move the committed offset by N (may be < 0).",
                                                 show_default=False)] = None,
    to_datetime: Annotated[str | None, typer.Option(
        "--to-datetime", help="The first offset at or after this ISO-8601 time (no zone: UTC).",
        show_default=False)] = None,
    by_duration: Annotated[str | None, typer.Option(
        "--by-duration", help="The first offset at or after now minus this duration (PT1H30M, 90m, 2h).",
        show_default=False)] = None,
    execute: Annotated[bool, typer.Option("--execute", help="Apply the change (default: only show it).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the new offsets (the default).")] = False,
) -> None:
    """Set the group's committed offsets; a dry run unless --execute. Refused while the group has live members.

    New offsets are clamped to the partition's [log start, high watermark], as Kafka's tool does.

    Example: kctl group reset-offsets billing --topic orders --to-earliest --execute
    """
    from kctl.client.offsetspec import parse_datetime_ms, parse_duration
    from kctl.errors import InvalidArgumentError

    st = get_state(ctx)
    chosen = [name for name, flag in (("to-earliest", to_earliest), ("to-latest", to_latest),
                                      ("to-offset", to_offset is not None), ("shift-by", shift_by is not None),
                                      ("to-datetime", to_datetime is not None),
                                      ("by-duration", by_duration is not None)) if flag]
    if len(chosen) != 1:
        raise InvalidArgumentError("give exactly one of --to-earliest, --to-latest, --to-offset, --shift-by, "
                                   "--to-datetime, --by-duration")
    if execute and dry_run:
        raise InvalidArgumentError("--execute and --dry-run cannot be used together")
    if bool(topic) == all_topics:
        raise InvalidArgumentError("give --topic TOPIC[:P] (repeatable) or --all-topics")
    mode = chosen[0]
    value: int | None = None
    if mode == "to-offset":
        if to_offset is not None and to_offset < 0:
            raise InvalidArgumentError("--to-offset must be zero or more")
        value = to_offset
    elif mode == "shift-by":
        value = shift_by
    elif mode == "to-datetime":
        value = parse_datetime_ms(to_datetime or "")
    elif mode == "by-duration":
        value = parse_duration(by_duration or "")
        if value < 0:
            raise InvalidArgumentError("--by-duration must not be negative")
    targets = None if all_topics else [_parse_topic_arg(t) for t in topic or []]
    plan = _admin(st).reset_offsets(group, targets, mode, value, execute=execute)
    rows = [[group, r["topic"], r["partition"], _dash(r["current_offset"]), r["new_offset"]] for r in plan]
    st.emit_rows(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"], rows,
                 json_doc={"group": group, "mode": mode, "executed": execute, "partitions": plan},
                 title=f"Offsets of group {group} ({mode}{'' if execute else ', dry run'})",
                 notes=[] if rows else ["No partitions to reset"])
    if not execute and not st.is_json:
        st.info("Dry run: nothing changed (add --execute to apply)")


@group_app.command("delete")
def group_delete(ctx: typer.Context, group: GroupArg) -> None:
    """Remove a group: its state and committed offsets. Refused while the group has live members.

    Example: kctl group delete billing
    """
    st = get_state(ctx)
    _admin(st).delete_group(group)
    if st.is_json:
        st.emit_json({"group": group, "deleted": True})
    else:
        st.info(f"Deleted group {group}")


def register(app: typer.Typer) -> None:
    app.add_typer(group_app, name="group")
