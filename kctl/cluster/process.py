"""Starting, stopping and killing broker processes, safely.

A signal is only ever sent to a process proven to be the broker: we open a pidfd for the PID
recorded in the lock file, then check (with the pidfd held, so the PID cannot be reused under
us) that /proc/locks shows that very process holding that broker's lock, and only then signal
through the pidfd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from kctl.cluster.layout import ClusterLayout
from kctl.cluster.locks import is_held, lock_holder_pids, read_owner
from kctl.errors import BrokerError


def broker_pid(layout: ClusterLayout, broker_id: int) -> int | None:
    """The PID of the live broker, or None if it is not running."""
    path = layout.broker_lock(broker_id)
    if not is_held(path):
        return None
    holders = lock_holder_pids(path)
    owner = read_owner(path).split()
    if owner and owner[0].isdigit():
        pid = int(owner[0])
        if not holders or pid in holders:
            return pid
    return min(holders) if holders else None


def spawn_broker(layout: ClusterLayout, broker_id: int) -> subprocess.Popen[bytes]:
    """Start a detached broker process (own session, output to its broker.log)."""
    bdir = layout.broker_dir(broker_id)
    os.makedirs(bdir, exist_ok=True)
    logf = open(layout.broker_log(broker_id), "ab")  # noqa: SIM115 - handed to the child
    try:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kctl.cluster.broker",
                "--data-dir",
                layout.root,
                "--broker-id",
                str(broker_id),
            ],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=layout.root,
        )
    finally:
        logf.close()


def signal_broker(layout: ClusterLayout, broker_id: int, sig: int) -> int:
    """Send ``sig`` to the broker's process, verified through a pidfd. Returns the PID."""
    path = layout.broker_lock(broker_id)
    pid = broker_pid(layout, broker_id)
    if pid is None:
        raise BrokerError(f"broker {broker_id} is not running")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise BrokerError(f"broker {broker_id} is not running") from None
    except (AttributeError, OSError):
        pidfd = -1
    try:
        # with the pidfd open the PID names this process for good; now prove it is the broker
        if pid not in lock_holder_pids(path):
            raise BrokerError(f"refusing to signal PID {pid}: it does not hold broker {broker_id}'s lock")
        if not is_broker_command(pid, broker_id):
            raise BrokerError(f"refusing to signal PID {pid}: it holds broker {broker_id}'s lock but is not a "
                              "kctl broker process")
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        raise BrokerError(f"broker {broker_id} exited before it could be signalled") from None
    finally:
        if pidfd >= 0:
            os.close(pidfd)
    return pid


def is_broker_command(pid: int, broker_id: int) -> bool:
    """True if ``pid``'s command line is a kctl broker for ``broker_id`` (the background process, or
    ``kctl broker start ID --foreground``)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return False
    if "kctl.cluster.broker" in args:
        return any(a == "--broker-id" and i + 1 < len(args) and args[i + 1] == str(broker_id)
                   for i, a in enumerate(args))
    if "--foreground" in args and "broker" in args and "start" in args:
        return str(broker_id) in args[args.index("start") + 1:]
    return False


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
        return bool(fields) and fields[0] in ("Z", "X")
    except OSError:
        return True


def wait_for_exit(layout: ClusterLayout, broker_id: int, timeout: float, pid: int | None = None) -> bool:
    """Wait until the broker's lock is free and (given its PID) the process itself has exited."""
    deadline = time.monotonic() + timeout
    path = layout.broker_lock(broker_id)
    while time.monotonic() < deadline:
        if not is_held(path) and (pid is None or process_gone(pid)):
            return True
        time.sleep(0.01)
    return not is_held(path)
