"""Run every benchmark in this folder, one after another: ``make bench`` (or ``python benchmarks/run.py``).

Each ``bench_*.py`` script prints its own figures; ``--only NAME`` runs a subset, ``--quick`` passes
``--quick`` to the scripts that support a smaller configuration.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="run only bench_NAME.py (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smaller runs where a script supports it")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    scripts = sorted(glob.glob(os.path.join(here, "bench_*.py")))
    if args.only:
        scripts = [s for s in scripts if os.path.basename(s)[6:-3] in args.only]
    print(f"# kctl benchmarks, {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
          f"({os.cpu_count()} cores, Python {platform.python_version()})")
    failed = []
    for script in scripts:
        print(f"\n## {os.path.basename(script)}", flush=True)
        with open(script, encoding="utf-8") as f:
            supports_quick = '"--quick"' in f.read()
        cmd = [sys.executable, script] + (["--quick"] if args.quick and supports_quick else [])
        rc = subprocess.call(cmd)
        if rc != 0:
            failed.append(os.path.basename(script))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
