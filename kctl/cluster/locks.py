"""File locks: who is alive, and who may change what.

Two kinds, as the design asks:

* **Liveness locks** (``broker.lock``, ``controller.lock``, a group member's lock) are exclusive
  ``flock`` locks taken through portalocker and held for the whole life of a process. The kernel
  drops them when the process dies, SIGKILL included, so "is broker 2 alive?" is answered by a
  non-blocking probe, never by a timeout.
* **Critical sections** are short exclusive locks with timeouts: the metadata lock through
  ``filelock``; a replica's append lock (:class:`AppendLock`), taken for every batch by producers
  and fetchers, through ``flock`` directly so that waiting costs microseconds, not a 50 ms poll.

Lock files are never deleted while anyone may hold them: deleting a held lock file would let a
second process lock a new file of the same name and break mutual exclusion.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from kctl.errors import KctlTimeoutError


def _open_lock_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


class LivenessLock:
    """An exclusive lock held for as long as this process lives (or until :meth:`release`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def try_acquire(self) -> bool:
        import portalocker

        fd = _open_lock_file(self.path)
        try:
            portalocker.lock(fd, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        except (portalocker.LockException, OSError):
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire(self, timeout: float, interval: float = 0.01) -> bool:
        """Retry for ``timeout`` seconds: a prober may hold a shared lock for a microsecond."""
        deadline = time.monotonic() + timeout
        while True:
            if self.try_acquire():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def acquire_blocking(self) -> None:
        """Wait (in the kernel, no polling) until the lock is ours: a standby controller."""
        import portalocker

        fd = _open_lock_file(self.path)
        try:
            portalocker.lock(fd, portalocker.LockFlags.EXCLUSIVE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def write_owner(self, text: str) -> None:
        """Record who holds the lock (pid and a start time) inside the lock file itself."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)

    def touch(self) -> None:
        """Renew the heartbeat: the lock file's mtime is the holder's lease."""
        os.utime(self._fd)

    def release(self) -> None:
        if self._fd >= 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = -1


def is_held(path: str) -> bool:
    """Probe a liveness lock without disturbing its holder (a shared, non-blocking try)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class LockProbe:
    """A probe that keeps its file open: cheap enough to ask before every append."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def held(self) -> bool:
        if self._fd < 0:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_owner(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def lock_holder_pids(path: str) -> set[int]:
    """PIDs that hold an flock on ``path``, read from /proc/locks (Linux)."""
    try:
        st = os.stat(path)
    except OSError:
        return set()
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids: set[int] = set()
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                parts = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks a waiter
                if len(parts) < 6 or parts[1] != "FLOCK":
                    continue
                try:
                    major, minor, inode = parts[5].split(":")
                    if (int(major, 16), int(minor, 16), int(inode)) == want:
                        pids.add(int(parts[4]))
                except ValueError:
                    continue
    except OSError:
        pass
    return pids


def flock_exclusive(fd: int, timeout: float, what: str, path: str) -> None:
    """Take an exclusive ``flock`` on ``fd``: one try, then retries with a back-off growing from
    0.2 ms to 5 ms (not filelock's 50 ms poll) until ``timeout``, then a clear timeout error."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    deadline = time.monotonic() + timeout
    pause = 0.0002
    while True:
        time.sleep(pause)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise KctlTimeoutError(f"timed out after {timeout:g}s waiting for the {what} lock ({path})") from None
            pause = min(pause * 2, 0.005)


class AppendLock:
    """A replica's append lock: a short exclusive ``flock`` taken around every batch.

    It is on the hot path of every producer and follower, so it keeps its file open, waits with
    a short back-off (0.2 ms growing to 5 ms) instead of a 50 ms poll, and imports nothing.
    """

    def __init__(self, path: str, what: str = "append") -> None:
        self.path = path
        self.what = what
        self._fd = -1

    @contextlib.contextmanager
    def hold(self, timeout: float = 30.0) -> Iterator[None]:
        if self._fd < 0:
            self._fd = _open_lock_file(self.path)
        fd = self._fd
        flock_exclusive(fd, timeout, self.what, self.path)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class CriticalSection:
    """A short exclusive section on a lock file (filelock), with a timeout that names the lock."""

    def __init__(self, path: str, what: str) -> None:
        from filelock import FileLock

        self.what = what
        self._lock = FileLock(path, thread_local=False)

    @contextlib.contextmanager
    def hold(self, timeout: float = 30.0) -> Iterator[None]:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            raise KctlTimeoutError(f"timed out after {timeout:g}s waiting for the {self.what} lock") from None
        try:
            yield
        finally:
            self._lock.release()
