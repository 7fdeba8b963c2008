"""Finding the processes a test or a chaos run started (no pytest import: the chaos runner uses
it standalone)."""

from __future__ import annotations

import os


def pids_naming(path: str, also: bytes | None = None) -> list[int]:
    """Every process (but this one) whose command line names ``path`` (and ``also``, if given)."""
    needle = path.encode()
    pids = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if needle in cmd and (also is None or also in cmd):
            pids.append(int(entry))
    return pids
