"""``--exec``: one long-lived shell command that transforms records, one line per record.

The protocol (the same for every processor, chosen so that ordinary Unix filters work):

* kctl starts ``sh -c COMMAND`` once, in its own session (so a Ctrl-C meant for kctl does not kill
  it in the middle of a record), with stdin and stdout as pipes and stderr inherited.
* For each record it writes the value followed by a newline (or by a NUL byte with ``--null``).
* The command must answer every input line with exactly one output line, in order: for ``map``
  the new value, for ``filter`` a decision (``1``/``true``/``yes``/``keep`` keeps the record,
  ``0``/``false``/``no``/``drop`` or an empty line drops it).
* Values are sent in batches while answers are read at the same time (no deadlock on full pipes),
  so the command must not wait for the end of its input before answering. Output buffering is
  the usual trap: kctl runs the command under ``stdbuf -oL`` (``-o0`` with ``--null``) when
  coreutils has it, which fixes ``tr``, ``sed``, ``grep``, ``cut`` and other stdio programs, and
  sets ``PYTHONUNBUFFERED=1``. Some programs also buffer their *input* and wait for a full block
  before answering: mawk (Debian's ``awk``) needs ``-W interactive``. A command that gives no
  answer within the timeout (``--exec-timeout``, 30 s) is an error.
* A value that contains the delimiter cannot be sent: that record stops the processor with an
  error that suggests ``--null``. Tombstones (null values) are never sent; they pass through.
* When the command exits (or cannot be started), the processor stops with an error and commits
  nothing past the last record that was answered.
"""

from __future__ import annotations

import errno
import os
import selectors
import shutil
import subprocess
import time

from kctl.errors import InvalidArgumentError, StreamError

KEEP_WORDS = frozenset({"1", "true", "yes", "y", "keep"})
DROP_WORDS = frozenset({"0", "false", "no", "n", "drop", ""})


def parse_decision(answer: bytes, where: str) -> bool:
    """A filter command's answer line as keep (True) or drop (False)."""
    word = answer.strip().lower().decode("utf-8", "replace")
    if word in KEEP_WORDS:
        return True
    if word in DROP_WORDS:
        return False
    raise StreamError(f"the --exec command answered {answer[:40]!r} for {where}; a filter command must answer "
                      "1/true/yes/keep or 0/false/no/drop (or an empty line) for every record")


class ExecCommand:
    """The running command and its two pipes. Not thread-safe."""

    def __init__(self, command: str, *, null: bool = False, timeout: float = 30.0) -> None:
        if not command.strip():
            raise InvalidArgumentError("--exec is empty")
        if timeout <= 0:
            raise InvalidArgumentError("--exec-timeout must be more than 0 seconds")
        self.command = command
        self.delimiter = b"\0" if null else b"\n"
        self.timeout = timeout
        argv = ["sh", "-c", command]
        stdbuf = shutil.which("stdbuf")
        if stdbuf is not None:
            argv = [stdbuf, "-o0" if null else "-oL", *argv]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                         start_new_session=True, bufsize=0)
        except OSError as exc:
            raise StreamError(f"cannot start the --exec command {command!r}: {exc}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        try:
            code = self.proc.wait(0.1)  # a command that cannot run ends at once: say so before any record
        except subprocess.TimeoutExpired:
            return
        self.close()
        raise StreamError(f"the --exec command {command!r} exited with status {code} at start "
                          "(see its messages above)")

    def check_value(self, value: bytes, where: str) -> None:
        if self.delimiter in value:
            what = "a newline" if self.delimiter == b"\n" else "a NUL byte"
            hint = " (use --null for NUL-delimited values)" if self.delimiter == b"\n" else ""
            raise StreamError(f"record {where} contains {what}, which the --exec protocol cannot carry{hint}")

    def run(self, values: list[bytes]) -> list[bytes]:
        """Send ``values`` and return one answer per value, in order."""
        if not values:
            return []
        out = memoryview(self.delimiter.join(values) + self.delimiter)
        answers: list[bytes] = []
        want = len(values)
        sel = self._selector
        sel.register(self._out, selectors.EVENT_READ)
        if out:
            sel.register(self._in, selectors.EVENT_WRITE)
        last_progress = time.monotonic()
        try:
            while len(answers) < want:
                left = self.timeout - (time.monotonic() - last_progress)
                if left <= 0:
                    raise StreamError(
                        f"the --exec command {self.command!r} gave no answer for {self.timeout:g} s "
                        f"({len(answers)} of {want} answered); it must print one line per input line and "
                        "flush it (e.g. sed -u, python3 -u, mawk -W interactive)")
                for key, _mask in sel.select(min(left, 1.0)):
                    if key.fd == self._in:
                        try:
                            n = os.write(self._in, out[:65536])
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            raise self._exited(len(answers), want) from None
                        out = out[n:]
                        last_progress = time.monotonic()
                        if not out:
                            sel.unregister(self._in)
                    else:
                        try:
                            chunk = os.read(self._out, 65536)
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            if exc.errno == errno.EINTR:
                                continue
                            raise
                        if not chunk:
                            raise self._exited(len(answers), want)
                        last_progress = time.monotonic()
                        parts = (self._buffer + chunk).split(self.delimiter)
                        self._buffer = parts.pop()
                        answers.extend(parts)
                if self.proc.poll() is not None and not sel.select(0):
                    raise self._exited(len(answers), want)
        finally:
            for fd in (self._in, self._out):
                try:
                    sel.unregister(fd)
                except (KeyError, ValueError):
                    pass
        if len(answers) > want:
            raise StreamError(f"the --exec command {self.command!r} printed {len(answers)} lines for {want} "
                              "input lines; it must answer each input line with exactly one line")
        return answers

    def _exited(self, answered: int, want: int) -> StreamError:
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        status = f"with status {code}" if code is not None else "its output"
        return StreamError(f"the --exec command {self.command!r} closed {status} after answering "
                           f"{answered} of {want} records (see its messages above)")

    def close(self) -> None:
        """Close its stdin (a filter then ends by itself), wait briefly, then kill it."""
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        try:
            self.proc.stdout.close()  # type: ignore[union-attr]
        except OSError:
            pass
        self._selector.close()
