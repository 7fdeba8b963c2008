"""``kctl connect sqlite-source|sqlite-sink|file-source|file-sink|status``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kctl.cli.complete import complete_group, complete_topic
from kctl.cli.state import State, get_state

connect_app = typer.Typer(
    help="Connectors: a SQLite table or a file into a topic, a topic into a SQLite table or a file.",
    no_args_is_help=True)

NameOpt = Annotated[str | None, typer.Option(
    "--name", help="Connector name: its files live in <data>/connect/NAME (default from the table or file).",
    show_default=False)]
GroupOpt = Annotated[str | None, typer.Option(
    "--group", "-g", help="Consumer group (default connect-NAME).", autocompletion=complete_group,
    show_default=False)]
LockTimeoutOpt = Annotated[float, typer.Option(
    "--lock-timeout", help="Seconds to wait for a database locked by another connection before failing.")]


def _running(st: State, what: str) -> None:
    st.info(f"{what}; Ctrl-C stops it")


def _stopped(st: State, message: str, doc: dict[str, Any]) -> None:
    if st.is_json:
        st.emit_json(doc)
    else:
        st.info(message)


@connect_app.command("sqlite-source")
def sqlite_source(
    ctx: typer.Context,
    db: Annotated[str, typer.Option("--db", help="The SQLite database file.", show_default=False)],
    table: Annotated[str, typer.Option("--table", help="The table to capture (it needs a primary key).",
                                       show_default=False)],
    topic: Annotated[str | None, typer.Option(
        "--topic", help="Topic (default: the table name); created with cleanup.policy=compact if missing.",
        autocompletion=complete_topic, show_default=False)] = None,
    name: NameOpt = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between looks for changes.")] = 0.5,
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="Partitions of a topic it creates.")] = 1,
    lock_timeout: LockTimeoutOpt = 30.0,
    resnapshot: Annotated[bool, typer.Option(
        "--resnapshot", help="Deliver what was captured, then take a new snapshot (after the table's columns "
                             "changed, or its triggers were lost).")] = False,
) -> None:
    """Stream a SQLite table into a topic: a snapshot, then every insert, update and delete.

    Changes are captured by triggers into a change table installed in the same transaction that
    takes the snapshot; each becomes one record keyed by the primary key (JSON), with the row as
    JSON or a tombstone for a delete. Runs until stopped; a restart resumes exactly where it left
    off, even after a crash.

    Example: kctl connect sqlite-source --db shop.db --table customers
    """
    from kctl.connect.sqlite_source import SqliteSource

    st = get_state(ctx)
    src = SqliteSource(st.data_dir, db, table, topic=topic, name=name, poll_interval=poll_interval,
                       lock_timeout=lock_timeout, resnapshot=resnapshot, partitions=partitions, on_info=st.info)
    _running(st, f"connector {src.name}: table {table} of {src.db} -> topic {src.topic}")
    stats = src.run()
    _stopped(st, f"connector {src.name} stopped at change {stats.position}: {stats.produced} record(s) produced",
             {"connector": src.name, "position": stats.position, "produced": stats.produced,
              "snapshot_rows": stats.snapshot_rows})


@connect_app.command("sqlite-sink")
def sqlite_sink(
    ctx: typer.Context,
    topic: Annotated[str, typer.Option("--topic", help="The topic of change events.", autocompletion=complete_topic,
                                       show_default=False)],
    db: Annotated[str, typer.Option("--db", help="The SQLite database file (created if missing).",
                                    show_default=False)],
    table: Annotated[str, typer.Option("--table", help="The table to write (created from the first row if missing).",
                                       show_default=False)],
    group: GroupOpt = None,
    name: NameOpt = None,
    lock_timeout: LockTimeoutOpt = 30.0,
) -> None:
    """Apply a topic of change events to a SQLite table: upsert by key, delete on a tombstone.

    Runs as a consumer group member. Each poll is one database transaction that also stores the
    offsets it applied, and the group commits only after it: a replay changes nothing.

    Example: kctl connect sqlite-sink --topic customers --db replica.db --table customers
    """
    from kctl.connect.sqlite_sink import SqliteSink

    st = get_state(ctx)
    sink = SqliteSink(st.data_dir, topic, db, table, group=group, name=name, lock_timeout=lock_timeout,
                      on_info=st.info)
    _running(st, f"connector {sink.name}: topic {topic} -> table {table} of {sink.db} (group {sink.group})")
    stats = sink.run()
    _stopped(st, f"connector {sink.name} stopped: {stats.upserts} upsert(s), {stats.deletes} delete(s)",
             {"connector": sink.name, "upserts": stats.upserts, "deletes": stats.deletes,
              "skipped": stats.skipped})


@connect_app.command("file-source")
def file_source(
    ctx: typer.Context,
    file: Annotated[str, typer.Option("--file", help="The file to follow (like tail -F).", show_default=False)],
    topic: Annotated[str, typer.Option("--topic", help="Topic (created if missing).", autocompletion=complete_topic,
                                       show_default=False)],
    name: NameOpt = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between looks at the file.")] = 0.2,
) -> None:
    """Stream the lines of a file into a topic, following appends, rotation and truncation.

    Each line is one record (no key, all to partition 0 so they keep their order). A restart
    resumes after the last line that reached the topic, even after a crash.

    Example: kctl connect file-source --file /var/log/app.log --topic app-log
    """
    from kctl.connect.file_source import FileSource

    st = get_state(ctx)
    src = FileSource(st.data_dir, file, topic, name=name, poll_interval=poll_interval, on_info=st.info)
    _running(st, f"connector {src.name}: {src.path} -> topic {topic}")
    stats = src.run()
    _stopped(st, f"connector {src.name} stopped at byte {stats.offset}: {stats.produced} line(s) produced",
             {"connector": src.name, "offset": stats.offset, "produced": stats.produced})


@connect_app.command("file-sink")
def file_sink(
    ctx: typer.Context,
    topic: Annotated[str, typer.Option("--topic", help="The topic to write out.", autocompletion=complete_topic,
                                       show_default=False)],
    file: Annotated[str, typer.Option("--file", help="The file to append lines to.", show_default=False)],
    group: GroupOpt = None,
    name: NameOpt = None,
) -> None:
    """Append a topic's record values to a file, one line each, as a consumer group member.

    Every record is written exactly once, even across a kill: the file is fsynced and its size
    recorded before offsets are committed, and a restart cuts off anything written after that.

    Example: kctl connect file-sink --topic app-log --file copy.log
    """
    from kctl.connect.file_sink import FileSink

    st = get_state(ctx)
    sink = FileSink(st.data_dir, topic, file, group=group, name=name, on_info=st.info)
    _running(st, f"connector {sink.name}: topic {topic} -> {sink.path} (group {sink.group})")
    stats = sink.run()
    _stopped(st, f"connector {sink.name} stopped: {stats.written} line(s) written",
             {"connector": sink.name, "written": stats.written, "skipped": stats.skipped})


def _position_text(row: dict[str, Any]) -> Any:
    pos = row["position"]
    if isinstance(pos, dict):
        return ",".join(f"{tp}:{off}" for tp, off in pos.items()) or None
    if isinstance(pos, list) and len(pos) == 2:
        return f"byte {pos[1]}"
    return pos


@connect_app.command("status")
def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only this connector.", show_default=False)] = None,
) -> None:
    """NAME TYPE TOPIC TARGET STATE PID POSITION LAG LAST-ERROR, one row per connector.

    Lag is what is still to do: a SQLite source's captured changes not yet delivered, a file
    source's unread bytes, a sink's consumer group lag. STATE is running, stopped, failed, or dead
    (killed without a chance to say so).

    Example: kctl connect status
    """
    from kctl.connect.status import connector_status

    st = get_state(ctx)
    rows_json = connector_status(st.data_dir, name)
    rows = [[r["name"], r["type"], r["topic"], r["target"], r["state"], r["pid"], _position_text(r), r["lag"],
             r["last_error"]] for r in rows_json]
    st.emit_rows(["NAME", "TYPE", "TOPIC", "TARGET", "STATE", "PID", "POSITION", "LAG", "LAST-ERROR"], rows,
                 json_doc={"connectors": rows_json}, title="Connectors" if rows else None,
                 styler=lambda r: "red" if r[4] in ("failed", "dead") else ("green" if r[4] == "running" else None),
                 notes=[] if rows else ["No connectors yet (kctl connect sqlite-source --help)"])


@connect_app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The connector (see: kctl connect status).")],
) -> None:
    """Forget a stopped connector: its files, and for a SQLite source the triggers and change table
    it installed in the database. A sink's table and consumer group are kept.

    Example: kctl connect delete sqlite-source-customers
    """
    from kctl.connect.status import delete_connector

    st = get_state(ctx)
    doc = delete_connector(st.data_dir, name)
    if st.is_json:
        st.emit_json(doc)
        return
    st.info(f"Deleted connector {name}" + (" and its change capture (triggers, change table)"
                                          if doc["capture_removed"] else ""))
    if doc["group"]:
        st.info(f"Its consumer group is kept: kctl group delete {doc['group']}")


def register(app: typer.Typer) -> None:
    app.add_typer(connect_app, name="connect")
