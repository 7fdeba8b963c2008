"""The stderr progress line for long produce/consume runs."""

from __future__ import annotations

import subprocess
import sys

from kctl.cli.progress import Progress


def test_progress_counts_and_draws_only_when_enabled(capsys):
    off = Progress("produced", enabled=False, delay=0)
    off.tick(5, 500)
    off.close()
    assert off.count == 5 and off._live is None
    on = Progress("produced", enabled=True, delay=0)
    on.tick(10, 1000)
    assert on._live is not None
    assert "produced 10 records" in on._line(on._start + 2)
    on.close()
    assert on._live is None
    assert capsys.readouterr().out == ""  # never on stdout


def test_progress_does_not_import_rich_until_it_draws():
    code = ("import sys; from kctl.cli.progress import Progress; p = Progress('x', enabled=True, delay=60); "
            "p.tick(1); print('rich' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "False"
