"""``kctl topic ...`` and ``kctl describe``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kctl.cli.complete import complete_topic
from kctl.cli.state import State, get_state

topic_app = typer.Typer(help="Create, list, describe, alter and delete topics.", no_args_is_help=True)

TopicArg = Annotated[str, typer.Argument(help="Topic name.", autocompletion=complete_topic)]


@topic_app.command("create")
def topic_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Topic name: 1-249 of [a-zA-Z0-9._-].")],
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="Number of partitions.")] = 1,
    replication_factor: Annotated[int | None, typer.Option(
        "--replication-factor", "-r", help="Replicas per partition (default min(3, brokers)).",
        show_default=False)] = None,
    config: Annotated[list[str] | None, typer.Option(
        "--config", "-c", help="Topic config KEY=VALUE (repeatable), e.g. -c min.insync.replicas=2.")] = None,
    if_not_exists: Annotated[bool, typer.Option("--if-not-exists", help="Succeed if it already exists.")] = False,
) -> None:
    """Create a topic. Replicas of a partition are always on distinct brokers; leaders spread evenly.

    Example: kctl topic create orders -p 3 -r 3 -c min.insync.replicas=2
    """
    from kctl.cluster.config import parse_config_pairs

    st = get_state(ctx)
    cfg = parse_config_pairs(config or [])
    created = st.cluster().create_topic(name, partitions, replication_factor, cfg, if_not_exists)
    if st.is_json:
        st.emit_json({"topic": name, "created": created})
    elif created:
        st.info(f"Created topic [bold]{name}[/] with {partitions} partition(s)")
    else:
        st.info(f"Topic {name} already exists")


@topic_app.command("list")
def topic_list(ctx: typer.Context) -> None:
    """TOPIC PARTITIONS REPLICATION-FACTOR.

    Example: kctl topic list
    """
    st = get_state(ctx)
    topics = st.cluster().topics()
    rows = [[t["topic"], t["partitions"], t["replication_factor"]] for t in topics]
    st.emit_rows(["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"], rows, json_doc={"topics": topics},
                 title="Topics" if rows else None,
                 notes=[] if rows else ["No topics yet (kctl topic create NAME)"])


def _describe(st: State, names: list[str] | None, under_replicated: bool, unavailable: bool) -> None:
    c = st.cluster()
    described = c.describe(names or None)
    live = {b for b in c.broker_ids if c.broker_alive(b)}
    md = c.metadata()
    live &= md.live_brokers() | {b for b in live if md.brokers.get(b) and md.brokers[b].state == "up"}
    rows: list[list[Any]] = []
    why: list[str] = []
    doc_topics = []
    for t in described:
        parts_json = []
        for info in t["partitions"]:
            urp = len(info.isr) < len(info.replicas)
            offline = info.leader is None
            if under_replicated and not urp:
                continue
            if unavailable and not offline:
                continue
            parts_json.append(info.to_json())
            rows.append([info.topic, info.partition, info.leader, info.replicas, info.isr, info.leader_epoch,
                         info.log_start, info.high_watermark, info.log_end])
            if offline:
                down = [r for r in info.replicas if r not in live]
                why.append(f"offline: no in-sync replica alive (replicas down: {', '.join(map(str, down)) or '-'})")
            elif urp:
                missing = [r for r in info.replicas if r not in info.isr]
                reasons = [f"broker {r} {'down' if r not in live else 'catching up'}" for r in missing]
                why.append(f"ISR {len(info.isr)}/{len(info.replicas)}: {', '.join(reasons)}")
            else:
                why.append("")
        if parts_json or not (under_replicated or unavailable):
            doc_topics.append({"topic": t["topic"], "topic_id": t["topic_id"], "partitions": parts_json,
                               "config": t["config"]})
    columns = ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "LEADER-EPOCH", "LOG-START",
               "HIGH-WATERMARK", "LOG-END"]
    if st.is_table:
        rows = [[*r, w] for r, w in zip(rows, why, strict=True)]
        columns = [*columns, "STATUS"]
    st.emit_rows(columns, rows, json_doc={"topics": doc_topics},
                 title="Partitions" + (" (under-replicated)" if under_replicated else "")
                 + (" (unavailable)" if unavailable else ""),
                 styler=lambda r: "bold red" if r[2] is None else ("yellow" if len(r[4]) < len(r[3]) else None),
                 notes=[] if rows else ["No partitions match"])


@topic_app.command("describe")
def topic_describe(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Topics (default: all).",
                                                      autocompletion=complete_topic)] = None,
    under_replicated: Annotated[bool, typer.Option(
        "--under-replicated", help="Only partitions whose ISR is smaller than the replicas.")] = False,
    unavailable: Annotated[bool, typer.Option("--unavailable", help="Only partitions with no leader.")] = False,
) -> None:
    """One row per partition: leader, replicas, ISR, leader epoch, log start, high watermark, log end.

    Example: kctl topic describe orders --under-replicated
    """
    _describe(get_state(ctx), names, under_replicated, unavailable)


@topic_app.command("alter")
def topic_alter(
    ctx: typer.Context,
    name: TopicArg,
    partitions: Annotated[int | None, typer.Option("--partitions", "-p", help="New partition count (grow only).",
                                                   show_default=False)] = None,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="Set KEY=VALUE (repeatable).")] = None,
    delete_config: Annotated[list[str] | None, typer.Option(
        "--delete-config", help="Reset KEY to its default.")] = None,
) -> None:
    """Grow partitions or change configs.

    Example: kctl topic alter orders --partitions 6 -c retention.ms=3600000
    """
    from kctl.cluster.config import parse_config_pairs

    st = get_state(ctx)
    st.cluster().alter_topic(name, partitions, parse_config_pairs(config or []), delete_config or [])
    if st.is_json:
        st.emit_json({"topic": name, "altered": True})
    else:
        st.info(f"Altered topic {name}")


@topic_app.command("delete")
def topic_delete(ctx: typer.Context, name: TopicArg) -> None:
    """Remove the topic from every broker.

    Example: kctl topic delete orders
    """
    st = get_state(ctx)
    st.cluster().delete_topic(name)
    if st.is_json:
        st.emit_json({"topic": name, "deleted": True})
    else:
        st.info(f"Deleted topic {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(topic_app, name="topic")

    @app.command("describe")
    def describe(
        ctx: typer.Context,
        names: Annotated[list[str] | None, typer.Argument(help="Topics (default: all).",
                                                          autocompletion=complete_topic)] = None,
        under_replicated: Annotated[bool, typer.Option("--under-replicated",
                                                       help="Only under-replicated partitions.")] = False,
        unavailable: Annotated[bool, typer.Option("--unavailable", help="Only partitions with no leader.")] = False,
    ) -> None:
        """Describe topics' partitions (same as kctl topic describe).

        Example: kctl describe orders
        """
        _describe(get_state(ctx), names, under_replicated, unavailable)
