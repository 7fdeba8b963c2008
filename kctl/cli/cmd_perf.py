"""``kctl perf produce|consume``: load generators like kafka-producer-perf-test."""

from __future__ import annotations

from typing import Annotated

import typer

from kctl.cli.complete import complete_topic
from kctl.cli.state import State, get_state

perf_app = typer.Typer(help="Load generators reporting records/s, MB/s and latency percentiles.",
                       no_args_is_help=True)


def _report(st: State, verb: str, res) -> None:  # type: ignore[no-untyped-def]
    if st.is_json:
        st.emit_json(res.to_json())
        return
    line = (f"{res.records} records {verb}, {res.records_per_sec:,.1f} records/sec ({res.mb_per_sec:.2f} MB/sec), "
            f"{res.avg_ms:.2f} ms avg latency, {res.max_ms:.2f} ms max latency, "
            f"{res.percentile(50):.0f} ms 50th, {res.percentile(95):.0f} ms 95th, {res.percentile(99):.0f} ms 99th")
    if res.failed:
        line += f"; {res.failed} failed"
    typer.echo(line)


@perf_app.command("produce")
def perf_produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Option("--topic", help="Topic (created if missing).",
                                       autocompletion=complete_topic)] = "perf-test",
    num_records: Annotated[int, typer.Option("--num-records", "-n", help="Records to send.")] = 100_000,
    record_size: Annotated[int, typer.Option("--record-size", "-s", help="Bytes per record.")] = 100,
    acks: Annotated[str, typer.Option("--acks", help="0, 1 or all.")] = "all",
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="Partitions if the topic is created.")] = 1,
    replication_factor: Annotated[int | None, typer.Option(
        "--replication-factor", "-r", help="Replicas if the topic is created (default min(3, brokers)).",
        show_default=False)] = None,
    compression: Annotated[str, typer.Option("--compression", help="none, gzip, snappy, lz4, zstd.")] = "none",
    throughput: Annotated[float, typer.Option("--throughput", help="Cap in records/s (-1: unlimited).")] = -1,
) -> None:
    """Send records as fast as possible (or at --throughput) and report throughput and latency.

    Example: kctl perf produce --num-records 1000000 --record-size 100 --acks all
    """
    from kctl.client.perf import produce_perf
    from kctl.errors import InvalidArgumentError

    if num_records < 1 or record_size < 0:
        raise InvalidArgumentError("--num-records must be positive and --record-size zero or more")
    st = get_state(ctx)
    c = st.cluster()
    c.require_live()
    c.create_topic(topic, partitions, replication_factor, if_not_exists=True)
    res = produce_perf(c.layout.root, topic, num_records, record_size, acks=acks, compression=compression,
                       throughput=throughput)
    _report(st, "sent", res)
    if res.failed:
        raise typer.Exit(1)


@perf_app.command("consume")
def perf_consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Option("--topic", help="Topic to read.", autocompletion=complete_topic)] = "perf-test",
    messages: Annotated[int | None, typer.Option("--messages", "-n", help="Records to read (default: to the end).",
                                                 show_default=False)] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Give up after this long without records.")] = 30.0,
) -> None:
    """Read a topic from the beginning and report throughput.

    Example: kctl perf consume --topic perf-test --messages 1000000
    """
    from kctl.client.perf import consume_perf

    st = get_state(ctx)
    c = st.cluster()
    c.require_live()
    c.metadata().topic(topic)
    res = consume_perf(c.layout.root, topic, messages, timeout=timeout)
    _report(st, "read", res)


def register(app: typer.Typer) -> None:
    app.add_typer(perf_app, name="perf")
