"""The guided story behind ``kctl demo``, run with real processes on a fresh directory.

Three broker processes, a replicated topic, an idempotent ``acks=all`` producer, two consumer
group members (real ``kctl consume -g`` processes writing to files), the leader of partition 0
killed with SIGKILL while records keep flowing, the re-election, the broker restarted and back in
the ISR, and at the end the counts: every produced value read, none twice.

Everything started here is stopped in ``finally`` (members, then brokers), on success, on an error
and on Ctrl-C or SIGTERM alike; the temporary directory goes too unless ``--keep``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kctl.client.admin import Cluster
from kctl.errors import KctlError

TOPIC = "orders"
GROUP = "demo-group"
MEMBERS = 2
VALUE_RE = re.compile(r"^(\d+)\t(\d+)\t(order-\d+)$")


class DemoInterrupted(KctlError):
    """The demo was stopped by Ctrl-C or SIGTERM (everything it started has been stopped)."""

    exit_code = 130


@dataclass
class DemoResult:
    produced: int = 0
    consumed: int = 0
    unique: int = 0
    duplicates: int = 0
    missing: int = 0
    members_clean: bool = False
    failover_ms: float | None = None
    rejoin_s: float | None = None
    wall_s: float = 0.0
    by_member: dict[str, dict[int, int]] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "produced": self.produced, "consumed": self.consumed, "unique": self.unique,
                "duplicates": self.duplicates, "missing": self.missing, "members_exited_cleanly": self.members_clean,
                "failover_ms": None if self.failover_ms is None else round(self.failover_ms, 1),
                "isr_rejoin_s": None if self.rejoin_s is None else round(self.rejoin_s, 2),
                "wall_s": round(self.wall_s, 2),
                "records_by_member": {m: {str(p): n for p, n in sorted(c.items())}
                                      for m, c in sorted(self.by_member.items())},
                "checks": [{"check": name, "ok": ok} for name, ok in self.checks]}


class Narrator:
    """Tells the story: rich on a terminal, plain text otherwise (same words either way)."""

    def __init__(self, stream: Any, styled: bool) -> None:
        self.stream = stream
        self.styled = styled
        self._console: Any = None
        self._step = 0
        if styled:
            from rich.console import Console

            self._console = Console(file=stream, highlight=False)

    def _plain(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def title(self, text: str) -> None:
        if self._console is not None:
            from rich.panel import Panel

            self._console.print(Panel(text, style="bold", expand=False))
        else:
            self._plain(f"*** {text} ***")

    def step(self, text: str) -> None:
        self._step += 1
        if self._console is not None:
            self._console.rule(f"[bold cyan]{self._step}. {text}[/]", align="left")
        else:
            self._plain(f"\n== {self._step}. {text}")

    def say(self, text: str, style: str = "") -> None:
        if self._console is not None:
            from rich.text import Text

            self._console.print(Text(text, style=style))
        else:
            self._plain(text)

    def check(self, text: str, ok: bool) -> None:
        self.say(("  [ok]   " if ok else "  [FAIL] ") + text, style="green" if ok else "bold red")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              styles: Sequence[str | None] | None = None) -> None:
        cells = [["none" if v is None else str(v) for v in row] for row in rows]
        if self._console is not None:
            from rich import box
            from rich.table import Table

            t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, header_style="bold")
            for c in columns:
                t.add_column(c)
            for i, row in enumerate(cells):
                t.add_row(*row, style=(styles[i] if styles and i < len(styles) else None))
            self._console.print(t)
            return
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        self._plain(title)
        self._plain("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for r in cells:
            self._plain("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


class _Member:
    """One consumer group member: a real ``kctl consume -g`` process writing ``partition offset value``."""

    def __init__(self, name: str, data_dir: str, work: str) -> None:
        self.name = name
        self.out_path = os.path.join(work, f"{name}.out")
        self.err_path = os.path.join(work, f"{name}.err")
        out = open(self.out_path, "wb")  # noqa: SIM115 - handed to the child
        err = open(self.err_path, "wb")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kctl", "--data-dir", data_dir, "-o", "plain", "consume", TOPIC,
                 "-g", GROUP, "--client-id", name, "-f", "%p\\t%o\\t%s\\n"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, close_fds=True)
        finally:
            out.close()
            err.close()

    def records(self) -> list[tuple[int, int, str]]:
        try:
            with open(self.out_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        out = []
        for line in text.split("\n")[:-1]:  # a last line without its newline is still being written
            m = VALUE_RE.match(line)
            if m:
                out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
        return out

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            with open(self.err_path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (the member commits its offsets and leaves the group), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class _BackgroundProducer:
    """Keeps producing keyed records (acks=all) in a thread while the main thread kills a broker."""

    def __init__(self, data_dir: str, start: int, count: int, chunk: int, pause: float) -> None:
        self.data_dir = data_dir
        self.start = start
        self.count = count
        self.chunk = chunk
        self.pause = pause
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-producer", daemon=True)

    def run_async(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        from kctl.client.producer import Producer

        try:
            with Producer(self.data_dir, acks="all", timeout=30.0) as p:
                i = self.start
                end = self.start + self.count
                while i < end and not self._stop.is_set():
                    for j in range(i, min(end, i + self.chunk)):
                        p.send(TOPIC, _value(j), key=_key(j))
                    p.flush()
                    p.raise_if_failed()
                    i = min(end, i + self.chunk)
                    self.sent = i - self.start
                    time.sleep(self.pause)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise KctlError(f"the producer did not finish within {timeout:g}s")
        if self.error is not None:
            raise KctlError(f"producing failed: {self.error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _key(i: int) -> bytes:
    return f"customer-{i % 17}".encode()


def _value(i: int) -> bytes:
    return f"order-{i:06d}".encode()


class DemoStory:
    """Run the story once. ``fast`` drops the pauses meant for a human reader."""

    def __init__(self, narrator: Narrator, data_dir: str | None = None, fast: bool = False,
                 keep: bool = False, records: int | None = None) -> None:
        self.n = narrator
        self.fast = fast
        self.keep = keep
        self.records = records or (300 if fast else 600)
        self.work = ""  # made in run(), inside the try that removes it
        self.own_data_dir = data_dir is None or not os.path.exists(data_dir)
        self.data_dir = os.path.abspath(data_dir) if data_dir else ""
        self.cluster: Cluster | None = None
        self.members: list[_Member] = []
        self.producer: _BackgroundProducer | None = None
        self.result = DemoResult()

    # -- pacing -----------------------------------------------------------------------------------
    def pause(self, seconds: float) -> None:
        if not self.fast:
            time.sleep(seconds)

    # -- the story ----------------------------------------------------------------------------------
    def run(self) -> DemoResult:
        began = time.monotonic()
        old_term = signal.getsignal(signal.SIGTERM)

        def on_term(_signum: int, _frame: Any) -> None:
            raise DemoInterrupted("stopped by SIGTERM")

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_term)
        try:
            self.work = tempfile.mkdtemp(prefix="kctl-demo-")
            if not self.data_dir:
                self.data_dir = os.path.join(self.work, "cluster")
            self._story()
        except KeyboardInterrupt:
            raise DemoInterrupted("interrupted") from None
        finally:
            try:
                self.cleanup()
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, old_term)
                self.result.wall_s = time.monotonic() - began
        return self.result

    def _story(self) -> None:
        n = self.n
        r = self.result
        n.title("kctl demo: a broker dies, the partition's leader moves, and nothing is lost")

        n.step("A cluster of three brokers")
        c = self.cluster = Cluster.init(self.data_dir, brokers=3)
        n.say(f"kctl cluster init --brokers 3   (in {self.data_dir})")
        c.start(timeout=30)
        status = c.status()
        n.table("kctl cluster status", ["BROKER", "STATE", "PID", "CONTROLLER"],
                [[b.broker_id, b.state, b.pid, "yes" if b.controller else ""] for b in status["brokers"]])
        n.say("Each broker is an OS process holding brokers/broker-N/broker.lock; the one holding "
              "controller.lock is the controller.", style="dim")
        self.pause(1.5)

        n.step(f"A replicated topic: {TOPIC}, 3 partitions, replication factor 3, min.insync.replicas=2")
        c.create_topic(TOPIC, partitions=3, replication_factor=3, config={"min.insync.replicas": 2})
        n.say(f"kctl topic create {TOPIC} -p 3 -r 3 -c min.insync.replicas=2")
        self.show_partitions("Partitions")
        self.pause(1.5)

        n.step(f"Two consumers join the group {GROUP} and split the partitions")
        for i in range(MEMBERS):
            self.members.append(_Member(f"member-{i + 1}", self.data_dir, self.work))
            n.say(f"kctl consume {TOPIC} -g {GROUP} --client-id member-{i + 1}   (pid {self.members[-1].proc.pid})")
        assignment = self.wait_for_assignment(timeout=20.0)
        if assignment:
            n.table("Group assignment", ["MEMBER", "PARTITIONS"],
                    [[m, ",".join(map(str, ps)) or "-"] for m, ps in sorted(assignment.items())])
        self.pause(1.5)

        half = self.records // 2
        n.step(f"Produce {half} keyed records with acks=all")
        first = _BackgroundProducer(self.data_dir, 0, half, chunk=max(1, half), pause=0.0)
        first.run_async()
        first.wait(60)
        r.produced = half
        n.say(f"{half} records keyed customer-0..customer-16, acknowledged by every in-sync replica (what "
              f"kctl produce {TOPIC} -K : --acks all does with lines like customer-3:order-000042)")
        self.wait_consumed(set(range(half)), timeout=30)
        before = self.show_partitions("Before the failure")
        self.pause(1.5)

        p0_leader = next(p for p in before if p.partition == 0).leader
        if p0_leader is None:
            raise KctlError("partition 0 has no leader before the failure")
        rest = self.records - half
        n.step(f"Kill broker {p0_leader}, the leader of {TOPIC}-0, with SIGKILL, while producing {rest} more")
        self.producer = _BackgroundProducer(self.data_dir, half, rest, chunk=max(1, rest // 20), pause=0.01)
        self.producer.run_async()
        self.wait_until(lambda: self.producer is not None and self.producer.sent >= rest // 4, 30,
                        "the producer to get going")
        was_controller = c.controller_id() == p0_leader
        kill_ms = int(time.time() * 1000)
        t0 = time.monotonic()
        pid = c.kill_broker(p0_leader, wait=False)
        n.say(f"kctl broker kill {p0_leader}   (SIGKILL to pid {pid}"
              + ("; it is the controller too, so a new controller is elected first)" if was_controller else ")"),
              style="bold red")
        new_leader = self.wait_until(lambda: self.new_leader(0, p0_leader), 30, "a new leader for partition 0")
        r.failover_ms = (time.monotonic() - t0) * 1000.0
        n.say(f"Partition 0 has a new leader: broker {new_leader}, elected {r.failover_ms:.0f} ms after the kill "
              "(the controller saw the dead broker's lock released; no timeout involved).", style="bold")
        # the metadata is renamed into place just before its events are appended: wait for them too
        self.wait_until(lambda: self.leader_event_after(kill_ms), 10, "the leader change to be recorded")
        self.show_partitions("After the failure")
        self.show_events("What happened (kctl events)", since_ms=kill_ms)
        self.producer.wait(60)
        r.produced += rest
        n.say(f"The producer kept going through the failover: {rest} more records, acks=all; batches caught "
              "by the kill were retried on the new leader (the counts below check for loss and duplicates).")
        self.pause(1.5)

        n.step("The consumers read everything, across the failover")
        consumed = self.wait_consumed(set(range(r.produced)), timeout=30)
        n.check(f"every one of the {r.produced} produced values was read at least once "
                f"({len(consumed)} distinct seen)", set(range(r.produced)) <= consumed)
        self.pause(1.5)

        n.step(f"Restart broker {p0_leader}: it catches up and rejoins the ISR")
        t1 = time.monotonic()
        c.start_broker(p0_leader)
        n.say(f"kctl broker start {p0_leader}")
        self.wait_until(lambda: self.all_in_sync(), 60, f"broker {p0_leader} to rejoin every ISR")
        r.rejoin_s = time.monotonic() - t1
        n.say(f"Broker {p0_leader} is back in every ISR after {r.rejoin_s:.1f} s.")
        moved = c.elect("preferred")
        if moved:
            n.say(f"kctl elect --type preferred   (leadership back to the preferred replicas: "
                  f"{len(moved)} partition(s))")
        self.show_partitions("Healed")
        self.pause(1.5)

        n.step("Stop the consumers (they commit and leave the group) and count")
        codes = [m.stop(15.0) for m in self.members]
        r.members_clean = all(code == 0 for code in codes)
        self.count()
        r.checks = [
            ("every produced record consumed at least once", r.missing == 0 and r.produced > 0),
            ("no record consumed twice", r.duplicates == 0),
            ("both members exited cleanly (exit 0)", r.members_clean),
            ("partition 0 was re-elected", r.failover_ms is not None),
            (f"broker {p0_leader} rejoined the ISR", r.rejoin_s is not None),
        ]
        n.table("Records read per member", ["MEMBER", "PARTITION", "RECORDS"],
                [[m, p, cnt] for m, per in sorted(r.by_member.items()) for p, cnt in sorted(per.items())])
        if not r.members_clean:
            for m, code in zip(self.members, codes, strict=True):
                if code != 0:
                    n.say(f"{m.name} exited with {code}: {m.stderr_tail()}", style="red")
        for name, ok in r.checks:
            n.check(name, ok)
        n.say(f"Counts: produced {r.produced}, consumed {r.consumed}, unique {r.unique}, "
              f"duplicates {r.duplicates}, missing {r.missing}", style="bold")

    # -- helpers ------------------------------------------------------------------------------------
    def wait_until(self, probe: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise KctlError(f"gave up after {timeout:g}s waiting for {what}")
            time.sleep(0.01)

    def new_leader(self, partition: int, old: int) -> int | None:
        assert self.cluster is not None
        part = self.cluster.metadata().topic(TOPIC).partitions[partition]
        return part.leader if part.leader is not None and part.leader != old else None

    def leader_event_after(self, since_ms: float) -> bool:
        assert self.cluster is not None
        return any(e.get("type") == "leader_changed" and e.get("topic") == TOPIC and e.get("partition") == 0
                   and e.get("ts_ms", 0) >= since_ms for e in self.cluster.store.read_events(50))

    def all_in_sync(self) -> bool:
        assert self.cluster is not None
        return all(len(p.isr) == len(p.replicas) and p.leader is not None
                   for p in self.cluster.metadata().topic(TOPIC).partitions)

    def wait_for_assignment(self, timeout: float) -> dict[str, list[int]]:
        """Each member's partitions, from the group's state (empty if it cannot be read)."""
        deadline = time.monotonic() + timeout
        last: dict[str, list[int]] = {}
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc.poll() is not None:
                    raise KctlError(f"{m.name} exited early (code {m.proc.returncode}): {m.stderr_tail()}")
            last = _group_assignment(self.data_dir)
            assigned = sorted(p for ps in last.values() for p in ps)
            if len(last) >= MEMBERS and assigned == [0, 1, 2] and all(last.values()):
                return last
            time.sleep(0.05)
        if not last:
            self.n.say("(the group's assignment could not be read; the members' output below shows the split)",
                       style="dim")
        return last

    def consumed_values(self) -> set[int]:
        seen: set[int] = set()
        for m in self.members:
            for _, _, v in m.records():
                seen.add(int(v.split("-", 1)[1]))
        return seen

    def wait_consumed(self, wanted: set[int], timeout: float) -> set[int]:
        deadline = time.monotonic() + timeout
        while True:
            seen = self.consumed_values()
            if wanted <= seen or time.monotonic() > deadline:
                return seen
            for m in self.members:
                if m.proc.poll() is not None:
                    raise KctlError(f"{m.name} exited early (code {m.proc.returncode}): {m.stderr_tail()}")
            time.sleep(0.05)

    def count(self) -> None:
        r = self.result
        values: list[int] = []
        r.by_member = {}
        for m in self.members:
            per: dict[int, int] = {}
            for p, _, v in m.records():
                values.append(int(v.split("-", 1)[1]))
                per[p] = per.get(p, 0) + 1
            r.by_member[m.name] = per
        produced = set(range(r.produced))
        r.consumed = len(values)
        r.unique = len(set(values) & produced)
        r.duplicates = r.consumed - len(set(values))
        r.missing = len(produced - set(values))

    def show_partitions(self, title: str) -> list[Any]:
        from kctl.cli.cmd_watch import partition_health

        assert self.cluster is not None
        c = self.cluster
        live = {b.broker_id for b in c.status()["brokers"] if b.state == "up"}
        parts = c.describe([TOPIC])[0]["partitions"]
        rows, styles = [], []
        for p in parts:
            health, why = partition_health(p.replicas, p.isr, p.leader, live)
            rows.append([p.partition, p.leader, ",".join(map(str, p.replicas)), ",".join(map(str, p.isr)),
                         p.leader_epoch, p.high_watermark, p.log_end, why or "ok"])
            styles.append({"ok": None, "under-replicated": "yellow", "offline": "bold red"}[health])
        self.n.table(f"{title} (kctl describe {TOPIC})",
                     ["PARTITION", "LEADER", "REPLICAS", "ISR", "LEADER-EPOCH", "HIGH-WATERMARK", "LOG-END",
                      "STATUS"], rows, styles)
        return parts

    def show_events(self, title: str, since_ms: float) -> None:
        from kctl.cli.cmd_ops import describe_event, event_style

        assert self.cluster is not None
        evs = [e for e in self.cluster.events() if e.get("ts_ms", 0) >= since_ms]
        self.n.table(title, ["TIME (UTC)", "TYPE", "WHAT"],
                     [[str(e.get("time", "")).split("T")[-1], e.get("type"), describe_event(e)] for e in evs],
                     [event_style(e) for e in evs])

    # -- cleanup ------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Stop everything this demo started; remove what it created unless ``keep``.

        A second Ctrl-C must not cut the cleanup short, so SIGINT and SIGTERM are ignored while it
        runs (in the main thread).
        """
        main = threading.current_thread() is threading.main_thread()
        saved = [(sig, signal.signal(sig, signal.SIG_IGN)) for sig in (signal.SIGINT, signal.SIGTERM)] if main else []
        try:
            self._cleanup()
        finally:
            for sig, handler in saved:
                signal.signal(sig, handler)

    def _cleanup(self) -> None:
        if self.producer is not None:
            self.producer.stop()
        for m in self.members:
            m.kill()
        c = self.cluster
        if c is not None:
            try:
                c.stop(timeout=10)
            except (KctlError, OSError):
                pass
            for b in c.broker_ids:
                try:
                    if c.broker_alive(b):
                        c.kill_broker(b)
                except (KctlError, OSError):
                    pass
        # an interrupt between a fork and its bookkeeping (a member not yet listed, a broker not
        # yet holding its lock) would leave a process behind: find those by their --data-dir
        for _ in range(3 if self.data_dir else 0):
            if not _kill_stragglers(self.data_dir):
                break
            time.sleep(0.05)
        if self.keep and c is not None:
            self.n.say(f"Kept the cluster in {self.data_dir} and the members' output in {self.work} "
                       f"(try: kctl --data-dir {self.data_dir} events)", style="dim")
            return
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)
        if self.own_data_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        elif c is not None:
            try:
                c.destroy(force=True)
            except (KctlError, OSError):
                pass


def _group_assignment(data_dir: str) -> dict[str, list[int]]:
    """member client id -> its partitions of the demo topic, from the group's state."""
    from kctl.cluster.groups import GroupAdmin

    try:
        doc = GroupAdmin(data_dir).describe_group(GROUP)
    except (KctlError, OSError):
        return {}  # the group does not exist yet
    out: dict[str, list[int]] = {}
    for m in doc["members"]:
        out[m["client_id"]] = sorted(a["partition"] for a in m["assignment"] if a["topic"] == TOPIC)
    return out


def _kill_stragglers(data_dir: str) -> list[int]:
    """SIGKILL every other process started with ``--data-dir data_dir`` (this demo's own)."""
    killed = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if any(a == "--data-dir" and i + 1 < len(args) and os.path.abspath(args[i + 1]) == data_dir
               for i, a in enumerate(args)):
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return killed
