"""``kctl watch``: a live terminal view of brokers, partitions, group lag and recent events.

Two halves, kept apart so the picture can be tested without a terminal:

* :func:`take_snapshot` reads the cluster directory once (metadata, broker locks, each leader's
  ``replica.state``, the groups, the tail of ``events.jsonl``) into a :class:`WatchSnapshot`;
* :func:`render_snapshot` turns a snapshot into a rich renderable, and does nothing else.

The loop redraws four times a second and at once when the metadata changes (a rename into
``metadata/``, an event appended, a broker's lock closed by its dying process): a helper thread
sleeps in inotify and pokes a pipe that the loop waits on with ``select``, together with stdin for
the ``q`` key. Nothing spins while the cluster is idle.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kctl.cli.complete import complete_topic
from kctl.cli.state import State, get_state

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kctl.client.admin import Cluster

REFRESH_INTERVAL = 0.25
MIN_REDRAW_GAP = 0.05
EVENTS_SHOWN = 8


@dataclass
class PartitionView:
    """One partition as the view shows it; ``health`` is ``ok``, ``under-replicated`` or ``offline``."""

    topic: str
    partition: int
    leader: int | None
    replicas: list[int]
    isr: list[int]
    leader_epoch: int
    high_watermark: int | None
    log_end: int | None
    health: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "leader": self.leader, "replicas": self.replicas,
                "isr": self.isr, "leader_epoch": self.leader_epoch, "high_watermark": self.high_watermark,
                "log_end": self.log_end, "health": self.health, "why": self.why}


@dataclass
class GroupView:
    group: str
    state: str
    members: int
    total_lag: int | None
    lag_by_topic: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "state": self.state, "members": self.members, "total_lag": self.total_lag,
                "lag_by_topic": self.lag_by_topic}


@dataclass
class WatchSnapshot:
    """Everything one frame shows, read from disk at ``taken_at`` (epoch seconds)."""

    cluster_id: str
    controller: int | None
    controller_epoch: int
    brokers: list[Any]  # kctl.client.admin.BrokerInfo
    partitions: list[PartitionView]
    groups: list[GroupView] | None  # None: not read
    events: list[dict[str, Any]]
    taken_at: float
    topics: list[str] | None = None
    error: str | None = None

    @property
    def live_brokers(self) -> set[int]:
        return {b.broker_id for b in self.brokers if b.state == "up"}

    def count(self, health: str) -> int:
        return sum(1 for p in self.partitions if p.health == health)

    def to_json(self) -> dict[str, Any]:
        return {"cluster_id": self.cluster_id, "controller": self.controller,
                "controller_epoch": self.controller_epoch, "brokers": [b.to_json() for b in self.brokers],
                "partitions": [p.to_json() for p in self.partitions],
                "groups": [g.to_json() for g in self.groups] if self.groups is not None else [],
                "events": self.events, "error": self.error}


# -- reading ---------------------------------------------------------------------------------------
def partition_health(replicas: list[int], isr: list[int], leader: int | None, live: set[int]) -> tuple[str, str]:
    """(health, why): why a partition is offline or under-replicated, in words, naming brokers."""
    if leader is None:
        down = [r for r in replicas if r not in live]
        out_of_isr = [r for r in replicas if r in live and r not in isr]
        why = "offline: no live in-sync replica"
        if down:
            why += f" (replica{'s' if len(down) > 1 else ''} {', '.join(map(str, down))} down"
            why += f"; {', '.join(map(str, out_of_isr))} not in ISR)" if out_of_isr else ")"
        elif out_of_isr:
            why += f" ({', '.join(map(str, out_of_isr))} alive but not in ISR)"
        return "offline", why
    if leader not in live:
        # the leader's process is gone but the controller has not moved leadership (yet): between
        # a kill and the election, or after the last broker stopped
        others = [r for r in isr if r != leader and r in live]
        nxt = f"; next leader: broker {others[0]}" if others else "; no other live in-sync replica"
        return "offline", f"offline: leader broker {leader} down{nxt}"
    if len(isr) < len(replicas):
        missing = [r for r in replicas if r not in isr]
        reasons = [f"broker {r} {'down' if r not in live else 'catching up'}" for r in missing]
        return "under-replicated", f"ISR {len(isr)}/{len(replicas)}: {', '.join(reasons)}"
    return "ok", ""


def tail_events(path: str, n: int, chunk: int = 64 * 1024) -> list[dict[str, Any]]:
    """The last ``n`` events of ``events.jsonl`` without reading the whole history."""
    import json

    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - chunk)
            f.seek(start)
            data = f.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first line may be cut in half
    out: list[dict[str, Any]] = []
    for line in reversed(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn last line while it is being appended
        if len(out) >= n:
            break
    out.reverse()
    return out


def _group_views(cluster: Cluster, topics: list[str] | None) -> list[GroupView]:
    """State, members and lag of every group (only groups reading ``topics`` when given)."""
    from kctl.cluster.groups import GroupAdmin
    from kctl.errors import KctlError

    admin = GroupAdmin(cluster.layout.root)
    views: list[GroupView] = []
    for name in admin.group_names():
        try:
            doc = admin.describe_group(name)
        except (KctlError, OSError):
            continue  # deleted or being rewritten between the listing and now
        by_topic: dict[str, int] = {}
        for p in doc["partitions"]:
            if topics and p["topic"] not in topics:
                continue
            by_topic.setdefault(p["topic"], 0)
            if p["lag"] is not None:
                by_topic[p["topic"]] += int(p["lag"])
        if topics and not by_topic:
            continue
        views.append(GroupView(name, str(doc["state"]), len(doc["members"]), sum(by_topic.values()), by_topic))
    return views


def take_snapshot(cluster: Cluster, topics: list[str] | None = None, events: int = EVENTS_SHOWN) -> WatchSnapshot:
    """Read one consistent-enough picture of the cluster (each file is read atomically)."""
    status = cluster.status()
    live = {b.broker_id for b in status["brokers"] if b.state == "up"}
    wanted = None
    if topics:
        names = set(cluster.metadata().topics)
        wanted = [t for t in topics if t in names]
    parts: list[PartitionView] = []
    for t in cluster.describe(wanted) if wanted is None or wanted else []:
        for info in t["partitions"]:
            health, why = partition_health(info.replicas, info.isr, info.leader, live)
            parts.append(PartitionView(info.topic, info.partition, info.leader, list(info.replicas),
                                       list(info.isr), info.leader_epoch, info.high_watermark, info.log_end,
                                       health, why))
    missing = [t for t in topics or [] if t not in (wanted or [])]
    return WatchSnapshot(
        cluster_id=status["cluster_id"], controller=status["controller"],
        controller_epoch=status["controller_epoch"], brokers=status["brokers"], partitions=parts,
        groups=_group_views(cluster, topics), events=tail_events(cluster.layout.events_file, events),
        taken_at=time.time(), topics=topics,
        error=f"topic(s) {', '.join(missing)} do not exist (see: kctl topic list)" if missing else None)


# -- drawing ---------------------------------------------------------------------------------------
_HEALTH_STYLE = {"ok": "", "under-replicated": "yellow", "offline": "bold red"}


def _replicas_text(p: PartitionView, live: set[int]) -> Any:
    """Replica ids coloured by their state: red when down, yellow when alive but out of the ISR."""
    from rich.text import Text

    text = Text()
    for i, r in enumerate(p.replicas):
        if i:
            text.append(",")
        style = "red" if r not in live else ("" if r in p.isr else "yellow")
        text.append(str(r), style=style)
    return text


def _event_time(ev: dict[str, Any]) -> str:
    t = str(ev.get("time", ""))
    return t.split("T", 1)[1] if "T" in t else t


def render_snapshot(snap: WatchSnapshot, height: int | None = None, keys_hint: bool = True) -> RenderableType:
    """The frame for one snapshot. Pure: no I/O, so tests render it with a recording Console.

    ``height`` (terminal rows) trims the partition list, keeping unhealthy partitions first.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from kctl.cli.cmd_ops import describe_event, event_style

    live = snap.live_brokers
    urp, offline = snap.count("under-replicated"), snap.count("offline")
    stamp = time.strftime("%H:%M:%S", time.localtime(snap.taken_at))
    head = Text()
    head.append("kctl watch", style="bold")
    head.append(f"  cluster {snap.cluster_id}  ")
    if snap.controller is None:
        head.append("no controller", style="bold red")
    else:
        head.append(f"controller: broker {snap.controller} (epoch {snap.controller_epoch})")
    up = len(live)
    head.append("  brokers up ")
    head.append(f"{up}/{len(snap.brokers)}", style="green" if up == len(snap.brokers) else "bold red")
    head.append(f"  partitions {len(snap.partitions)}")
    if urp:
        head.append(f"  {urp} under-replicated", style="yellow")
    if offline:
        head.append(f"  {offline} offline", style="bold red")
    head.append(f"  {stamp}", style="dim")
    if keys_hint:
        head.append("  q: quit", style="dim")
    parts: list[Any] = [head]
    if snap.error:
        parts.append(Text(f"kctl: {snap.error}", style="bold red"))

    brokers = Table(title="Brokers", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold",
                    pad_edge=False)
    for col, right in (("BROKER", True), ("STATE", False), ("PID", True), ("ROLE", False), ("LEADERS", True),
                       ("REPLICAS", True), ("EPOCH", True)):
        brokers.add_column(col, justify="right" if right else "left")
    for b in snap.brokers:
        role = "controller" if b.controller else ""
        style = "red" if b.state == "down" else ("yellow" if b.state != "up" else ("bold" if b.controller else ""))
        brokers.add_row(str(b.broker_id), b.state, "-" if b.pid is None else str(b.pid),
                        ("* " + role) if role else "", str(b.leaders), str(b.replicas), str(b.epoch), style=style)
    parts.append(brokers)

    shown = snap.partitions
    hidden = 0
    if height is not None:
        budget = max(3, height - 14 - len(snap.brokers) - min(len(snap.events), EVENTS_SHOWN)
                     - (len(snap.groups) + 4 if snap.groups else 0))
        if len(shown) > budget:
            bad = [p for p in shown if p.health != "ok"]
            good = [p for p in shown if p.health == "ok"]
            keep = (bad + good)[:budget]
            keep_ids = {(p.topic, p.partition) for p in keep}
            hidden = len(shown) - len(keep)
            shown = [p for p in shown if (p.topic, p.partition) in keep_ids]
    ptitle = "Partitions" + (f" ({', '.join(snap.topics)})" if snap.topics else "")
    ptable = Table(title=ptitle, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold",
                   pad_edge=False, caption=f"... {hidden} more healthy partition(s)" if hidden else None,
                   caption_justify="left")
    for col, right in (("TOPIC", False), ("PARTITION", True), ("LEADER", True), ("REPLICAS", False),
                       ("ISR", False), ("EPOCH", True), ("HIGH-WATERMARK", True), ("LOG-END", True),
                       ("STATUS", False)):
        ptable.add_column(col, justify="right" if right else "left", no_wrap=col != "STATUS")
    for p in shown:
        ptable.add_row(p.topic, str(p.partition), "none" if p.leader is None else str(p.leader),
                       _replicas_text(p, live), ",".join(map(str, p.isr)), str(p.leader_epoch),
                       "-" if p.high_watermark is None else str(p.high_watermark),
                       "-" if p.log_end is None else str(p.log_end),
                       p.why or "ok", style=_HEALTH_STYLE[p.health] or None)
    if not snap.partitions:
        parts.append(Text("No partitions yet (kctl topic create NAME)", style="dim"))
    else:
        parts.append(ptable)

    if snap.groups:
        gtable = Table(title="Consumer groups", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold",
                       pad_edge=False)
        for col, right in (("GROUP", False), ("STATE", False), ("MEMBERS", True), ("LAG", True),
                           ("LAG BY TOPIC", False)):
            gtable.add_column(col, justify="right" if right else "left")
        for g in snap.groups:
            per_topic = ", ".join(f"{t}={lag}" for t, lag in sorted(g.lag_by_topic.items()))
            gtable.add_row(g.group, g.state, str(g.members), "-" if g.total_lag is None else str(g.total_lag),
                           per_topic, style="yellow" if g.total_lag else None)
        parts.append(gtable)

    etable = Table(title="Latest events", title_justify="left", box=box.SIMPLE_HEAD, header_style="bold",
                   pad_edge=False)
    etable.add_column("TIME (UTC)", no_wrap=True)
    etable.add_column("TYPE", no_wrap=True)
    etable.add_column("WHAT")
    for ev in snap.events:
        etable.add_row(_event_time(ev), str(ev.get("type", "")), describe_event(ev), style=event_style(ev))
    parts.append(etable)
    return Group(*parts)


# -- the loop --------------------------------------------------------------------------------------
class _Wakeup:
    """A thread asleep in inotify that makes a pipe readable when the metadata or a broker lock changes."""

    def __init__(self, cluster: Cluster) -> None:
        import threading

        from kctl.cluster.watch import IN_CLOSE_WRITE, IN_MODIFY, IN_MOVED_TO, ChangeWatcher

        self.read_fd, self._write_fd = os.pipe()
        self._stop_r, self._stop_w = os.pipe()
        for fd in (self.read_fd, self._write_fd, self._stop_r, self._stop_w):
            os.set_blocking(fd, False)
        self._watcher = ChangeWatcher()
        self._watcher.watch(cluster.layout.metadata_dir, IN_MOVED_TO | IN_MODIFY)
        for b in cluster.broker_ids:
            self._watcher.watch(cluster.layout.broker_lock(b), IN_CLOSE_WRITE)
        self._watcher.add_wakeup_fd(self._stop_r)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-wakeup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._watcher.wait(1.0) and not self._stopping.is_set():
                try:
                    os.write(self._write_fd, b"!")
                except BlockingIOError:
                    pass  # already poked

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._stopping.set()
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout=2.0)
        self._watcher.close()
        for fd in (self.read_fd, self._write_fd, self._stop_r, self._stop_w):
            os.close(fd)


def _keys_pressed(fd: int) -> bytes:
    try:
        return os.read(fd, 64)
    except (BlockingIOError, OSError):
        return b""


def run_watch(st: State, topics: list[str] | None, once: bool, interval: float = REFRESH_INTERVAL) -> None:
    from rich.console import Console

    from kctl.cluster.config import validate_topic_name
    from kctl.errors import UsageError

    for t in topics or []:
        validate_topic_name(t)
    cluster = st.cluster()
    md = cluster.metadata()  # a clear error (exit 3) for a missing cluster, before any screen switch
    for t in topics or []:
        md.topic(t)
    if once:
        snap = take_snapshot(cluster, topics)
        if st.is_json:
            st.emit_json(snap.to_json())
            return
        tty = sys.stdout.isatty()
        console = Console(highlight=False, width=None if tty else int(os.environ.get("COLUMNS", "132")))
        console.print(render_snapshot(snap, keys_hint=False))
        return
    if not sys.stdout.isatty():
        raise UsageError("kctl watch draws a live screen and needs a terminal; for scripts use "
                         "kctl describe, kctl events --follow, or kctl watch --once")
    if interval <= 0:
        raise UsageError("--interval must be more than 0")
    _live_loop(cluster, topics, interval)


def _live_loop(cluster: Cluster, topics: list[str] | None, interval: float) -> None:
    import select

    from rich.console import Console
    from rich.live import Live

    from kctl.errors import KctlError

    console = Console(highlight=False)
    stdin_fd: int | None = None
    saved_tty: Any = None
    if sys.stdin.isatty():
        import termios
        import tty

        stdin_fd = sys.stdin.fileno()
        saved_tty = termios.tcgetattr(stdin_fd)
    wake = _Wakeup(cluster)
    last_snap: WatchSnapshot | None = None
    last_key: Any = None
    last_second = -1

    def frame() -> RenderableType | None:
        """The next frame, or None when nothing visible changed (drawing is the costly part)."""
        nonlocal last_snap, last_key, last_second
        try:
            last_snap = take_snapshot(cluster, topics)
        except KctlError as exc:  # the directory vanished or is being rewritten: say so, keep watching
            from rich.text import Text

            if last_snap is None:
                return Text(f"kctl: {exc}", style="bold red")
            last_snap.error = str(exc)
        key = (repr(last_snap.to_json()), console.size)
        second = int(last_snap.taken_at)
        if key == last_key and second == last_second:
            return None
        last_key, last_second = key, second
        return render_snapshot(last_snap, height=console.height)

    try:
        if stdin_fd is not None:
            import tty

            tty.setcbreak(stdin_fd)  # keys arrive one by one, unechoed; Ctrl-C still raises SIGINT
        with Live(frame() or "", console=console, screen=True, auto_refresh=False, transient=True) as live:
            next_at = time.monotonic() + interval
            last_draw = time.monotonic()
            watched = [wake.read_fd] + ([stdin_fd] if stdin_fd is not None else [])
            while True:
                timeout = max(0.0, next_at - time.monotonic())
                ready, _, _ = select.select(watched, [], [], timeout)
                if stdin_fd is not None and stdin_fd in ready:
                    keys = _keys_pressed(stdin_fd)
                    if not keys or any(k in keys for k in (b"q", b"Q", b"\x03", b"\x04")):
                        return
                changed = wake.read_fd in ready
                if changed:
                    wake.drain()
                    # a burst of changes redraws at most every MIN_REDRAW_GAP seconds
                    gap = MIN_REDRAW_GAP - (time.monotonic() - last_draw)
                    if gap > 0:
                        time.sleep(gap)
                        wake.drain()
                now = time.monotonic()
                if changed or now >= next_at:
                    renderable = frame()
                    if renderable is not None:
                        live.update(renderable, refresh=True)
                    last_draw = time.monotonic()
                    next_at = last_draw + interval
    except KeyboardInterrupt:
        pass
    finally:
        if stdin_fd is not None and saved_tty is not None:
            import termios

            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved_tty)
        wake.close()


def register(app: typer.Typer) -> None:
    @app.command("watch")
    def watch(
        ctx: typer.Context,
        topics: Annotated[list[str] | None, typer.Argument(help="Only these topics (default: all).",
                                                           autocompletion=complete_topic)] = None,
        once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (works without a terminal; "
                                                           "-o json prints the snapshot).")] = False,
        interval: Annotated[float, typer.Option("--interval", help="Seconds between redraws (changes to the "
                                                                   "metadata redraw at once).")] = REFRESH_INTERVAL,
    ) -> None:
        """A live view of brokers (controller marked), partitions (leader, ISR, high watermark, why a partition is
        under-replicated or offline), consumer group lag and the latest events. q or Ctrl-C quits.

        Example: kctl watch orders   (in another terminal: kctl broker kill 1)
        """
        run_watch(get_state(ctx), topics, once, interval)
