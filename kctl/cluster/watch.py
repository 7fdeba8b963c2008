"""Wait for files to change without spinning: Linux inotify through ctypes, polling elsewhere.

Brokers, producers waiting for a high watermark and consumers in follow mode all need "wake me
when that replica's state changes". Every publish is a ``pwrite`` to ``replica.state`` and every
metadata change is a rename into ``metadata/``, and the kernel reports both as inotify events, so
waiting costs nothing while the cluster is idle and reacts within microseconds when it is not.
A process's death closes its lock file, which inotify reports too (IN_CLOSE_WRITE): that is how
the controller learns of a crash at once.
"""

from __future__ import annotations

import os
import select
import time

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_libc = None


def _load_libc():  # type: ignore[no-untyped-def]
    global _libc
    if _libc is None:
        import ctypes

        try:
            try:
                lib = ctypes.CDLL("libc.so.6", use_errno=True)  # glibc: no library search needed
            except OSError:
                import ctypes.util  # slower: imports shutil and subprocess

                lib = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
            _libc = lib
        except (OSError, AttributeError):
            _libc = False
    return _libc


class ChangeWatcher:
    """A set of watched paths and a :meth:`wait` that returns when any of them changes."""

    def __init__(self) -> None:
        lib = _load_libc()
        self._fd = lib.inotify_init1(IN_NONBLOCK | IN_CLOEXEC) if lib else -1
        self._watches: dict[str, int] = {}
        self._poll: select.poll | None = None
        self._extra_fds: list[int] = []
        if self._fd >= 0:
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    @property
    def native(self) -> bool:
        return self._fd >= 0

    def watch(self, path: str, mask: int = IN_MODIFY) -> bool:
        """Add (or re-add) a watch; False if the path does not exist or inotify is missing."""
        if self._fd < 0:
            return False
        lib = _load_libc()
        wd = lib.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            return False
        self._watches[path] = wd
        return True

    def unwatch(self, path: str) -> None:
        wd = self._watches.pop(path, None)
        if wd is not None and self._fd >= 0:
            _load_libc().inotify_rm_watch(self._fd, wd)

    def add_wakeup_fd(self, fd: int) -> None:
        """Also wake on a readable file descriptor (a self-pipe written by a signal handler)."""
        if self._poll is None:
            self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._extra_fds.append(fd)

    def is_watching(self, path: str) -> bool:
        return path in self._watches

    def wait(self, timeout: float) -> bool:
        """Block until a watched path changes or ``timeout`` seconds pass; True on a change."""
        if self._poll is None:
            time.sleep(timeout)
            return False
        ready = self._poll.poll(max(0.0, timeout) * 1000.0)
        if not ready:
            return False
        for fd in self._extra_fds:
            try:
                os.read(fd, 4096)
            except (BlockingIOError, OSError):
                pass
        self.drain()
        return True

    def drain(self) -> None:
        if self._fd < 0:
            return
        while True:
            try:
                if not os.read(self._fd, 65536):
                    return
            except BlockingIOError:
                return
            except OSError:
                return

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._watches.clear()

    def __enter__(self) -> ChangeWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
