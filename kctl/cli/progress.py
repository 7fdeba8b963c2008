"""A progress line on stderr for long produce and consume runs, on a terminal only.

It costs nothing until a run has lasted a second (rich is imported then, not before), and it
never writes to stdout, so pipelines see only their data.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``tick(n)`` as records move; ``close()`` at the end. Inert unless stderr is a terminal."""

    def __init__(self, verb: str, *, enabled: bool | None = None, delay: float = 1.0) -> None:
        self.verb = verb
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.count = 0
        self.bytes = 0
        self._start = time.monotonic()
        self._delay = delay
        self._next = self._start + delay
        self._live: Any = None

    def tick(self, records: int, nbytes: int = 0) -> None:
        self.count += records
        self.bytes += nbytes
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.25
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(stderr=True), refresh_per_second=4, transient=True)
            self._live.start()
        self._live.update(self._line(now))

    def _line(self, now: float) -> str:
        secs = max(now - self._start, 1e-9)
        mb = self.bytes / 1e6
        return (f"[dim]{self.verb} {self.count:,} records ({self.count / secs:,.0f}/s"
                + (f", {mb / secs:.1f} MB/s" if self.bytes else "") + f") in {secs:.1f} s[/]")

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
