"""``kctl cluster ...`` and ``kctl broker ...``."""

from __future__ import annotations

from typing import Annotated

import typer

from kctl.cli.complete import complete_broker
from kctl.cli.state import get_state

cluster_app = typer.Typer(help="Create, start, stop and inspect the cluster.", no_args_is_help=True)
broker_app = typer.Typer(help="Start, stop (controlled) or kill (SIGKILL) one broker.", no_args_is_help=True)


@cluster_app.command("init")
def cluster_init(
    ctx: typer.Context,
    brokers: Annotated[int, typer.Option("--brokers", "-b", help="Number of brokers.")] = 3,
    cluster_id: Annotated[str | None, typer.Option("--cluster-id", help="Cluster id (default: random).")] = None,
    setting: Annotated[list[str] | None, typer.Option(
        "--set", help="Broker setting KEY=VALUE, e.g. broker.session.timeout.ms=3000 (repeatable).")] = None,
) -> None:
    """Create the directory layout for N brokers. Refuses to overwrite an existing cluster.

    Example: kctl cluster init --brokers 3
    """
    from kctl.client.admin import Cluster
    from kctl.errors import InvalidConfigError

    st = get_state(ctx)
    settings = {}
    for pair in setting or []:
        if "=" not in pair:
            raise InvalidConfigError(f"--set takes KEY=VALUE (got '{pair}')")
        k, v = pair.split("=", 1)
        settings[k.strip()] = v.strip()
    c = Cluster.init(st.data_dir, brokers=brokers, cluster_id=cluster_id, settings=settings)
    if st.is_json:
        st.emit_json({"cluster_id": c.cluster_id, "brokers": c.broker_ids, "data_dir": c.layout.root})
    else:
        st.info(f"Created cluster [bold]{c.cluster_id}[/] with {brokers} broker(s) in {c.layout.root}")
        st.info("Next: kctl cluster start")


@cluster_app.command("start")
def cluster_start(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every broker and a controller.")] = 30.0,
) -> None:
    """Start every broker that is not running, as background processes; returns once all are up
    and a controller is active. Idempotent.

    Example: kctl cluster start
    """
    st = get_state(ctx)
    c = st.cluster()
    started = c.start(timeout=timeout)
    status = c.status()
    if st.is_json:
        st.emit_json({"started": started, "controller": status["controller"]})
        return
    if started:
        st.info(f"Started broker(s) {', '.join(map(str, started))}; controller is broker {status['controller']}")
    else:
        st.info(f"All brokers already running; controller is broker {status['controller']}")


@cluster_app.command("stop")
def cluster_stop(ctx: typer.Context) -> None:
    """Stop every broker gracefully (controlled shutdown).

    Example: kctl cluster stop
    """
    st = get_state(ctx)
    stopped = st.cluster().stop()
    if st.is_json:
        st.emit_json({"stopped": stopped})
    else:
        st.info(f"Stopped broker(s) {', '.join(map(str, stopped))}" if stopped else "No broker was running")


@cluster_app.command("status")
def cluster_status(ctx: typer.Context) -> None:
    """One row per broker: BROKER STATE PID CONTROLLER LEADERS REPLICAS.

    Example: kctl cluster status
    """
    st = get_state(ctx)
    s = st.cluster().status()
    brokers = s["brokers"]
    rows = [[b.broker_id, b.state, b.pid, b.controller, b.leaders, b.replicas] for b in brokers]
    doc = {"cluster_id": s["cluster_id"], "controller": s["controller"],
           "controller_epoch": s["controller_epoch"], "brokers": [b.to_json() for b in brokers]}
    down = [b.broker_id for b in brokers if b.state != "up"]
    notes = []
    if st.is_table:
        if s["controller"] is None:
            notes.append("[red]No active controller: no broker is running (kctl cluster start)[/]")
        if down:
            notes.append(f"[yellow]Broker(s) {', '.join(map(str, down))} not up: their partitions are "
                         "led by other in-sync replicas, or offline.[/]")
    st.emit_rows(["BROKER", "STATE", "PID", "CONTROLLER", "LEADERS", "REPLICAS"], rows, json_doc=doc,
                 title=f"Cluster {s['cluster_id']} (controller epoch {s['controller_epoch']})",
                 styler=lambda r: "red" if r[1] == "down" else ("yellow" if r[1] != "up" else
                                                                ("bold" if r[3] else None)),
                 notes=notes)


@cluster_app.command("destroy")
def cluster_destroy(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Really remove the data directory.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Kill running brokers first.")] = False,
) -> None:
    """Remove the data directory; refuses while brokers run unless --force.

    Example: kctl cluster destroy --yes
    """
    from kctl.errors import UsageError

    st = get_state(ctx)
    if not yes:
        raise UsageError("this removes every topic and record; pass --yes to confirm")
    c = st.cluster()
    root = c.layout.root
    c.destroy(force=force)
    if not st.is_json:
        st.info(f"Removed cluster in {root}")
    else:
        st.emit_json({"destroyed": root})


BrokerId = Annotated[int, typer.Argument(help="Broker id.", autocompletion=complete_broker)]


@broker_app.command("start")
def broker_start(
    ctx: typer.Context,
    broker_id: BrokerId,
    foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal (logs to stderr).")] = False,
) -> None:
    """Start one broker.

    Example: kctl broker start 1
    """
    st = get_state(ctx)
    c = st.cluster()
    c._check_broker(broker_id)
    if foreground:
        from kctl.cluster.broker import main as broker_main

        raise typer.Exit(broker_main(["--data-dir", c.layout.root, "--broker-id", str(broker_id)]))
    pid = c.start_broker(broker_id)
    if st.is_json:
        st.emit_json({"broker": broker_id, "pid": pid, "started": pid is not None})
    elif pid is None:
        st.info(f"Broker {broker_id} is already running")
    else:
        st.info(f"Started broker {broker_id} (pid {pid})")


@broker_app.command("stop")
def broker_stop(ctx: typer.Context, broker_id: BrokerId) -> None:
    """Controlled shutdown: leadership moves to other in-sync replicas first, then the process exits.

    Example: kctl broker stop 1
    """
    st = get_state(ctx)
    stopped = st.cluster().stop_broker(broker_id)
    if st.is_json:
        st.emit_json({"broker": broker_id, "stopped": stopped})
    else:
        st.info(f"Stopped broker {broker_id}" if stopped else f"Broker {broker_id} was not running")


@broker_app.command("kill")
def broker_kill(ctx: typer.Context, broker_id: BrokerId) -> None:
    """Crash a broker: SIGKILL to its process (verified to be that broker, not a reused PID).

    Example: kctl broker kill 1 && kctl describe
    """
    st = get_state(ctx)
    pid = st.cluster().kill_broker(broker_id)
    if st.is_json:
        st.emit_json({"broker": broker_id, "pid": pid, "signal": "SIGKILL"})
    else:
        st.info(f"Killed broker {broker_id} (pid {pid}) with SIGKILL")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(broker_app, name="broker")
