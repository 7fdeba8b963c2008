"""End-to-end shell pipelines: ``kctl produce`` from a file through a pipe, ``kctl consume -e``
to /dev/null, and the wall time of a one-shot ``echo x | kctl produce``.

Targets on a 2-core machine: produce RF=1 acks=1 >= 1,000,000 records/s, RF=3 acks=all >= 500,000
records/s, consume >= 1,000,000 records/s, one-shot produce <= 120 ms median.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# the console script users run (python -m kctl when it is not installed next to this interpreter)
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "kctl")
KCTL = [_SCRIPT] if os.path.exists(_SCRIPT) else [sys.executable, "-m", "kctl"]


def kctl(data_dir: str, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*KCTL, "--data-dir", data_dir, *args], check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def timed_shell(cmd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--oneshot-runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="200,000 records, 10 one-shot runs")
    args = parser.parse_args()
    if args.quick:
        args.records, args.oneshot_runs = 200_000, 10
    tmp = tempfile.mkdtemp(prefix="kctl-bench-")
    data = os.path.join(tmp, "cluster")
    src = os.path.join(tmp, "records.txt")
    line = b"x" * (args.record_size - 1) + b"\n"
    with open(src, "wb") as f:
        f.write(line * args.records)
    mb = args.records * args.record_size / 1e6
    try:
        kctl(data, "cluster", "init", "--brokers", "3")
        kctl(data, "cluster", "start")
        kctl(data, "topic", "create", "rf1", "-r", "1")
        kctl(data, "topic", "create", "rf3", "-r", "3")
        k = " ".join(KCTL) + f" --data-dir {data}"
        for topic, acks in (("rf1", "1"), ("rf3", "all")):
            secs = timed_shell(f"cat {src} | {k} produce {topic} --acks {acks}")
            print(f"produce {topic} acks={acks}: {args.records / secs:,.0f} records/s, {mb / secs:.1f} MB/s "
                  f"({secs:.2f} s for {args.records:,} x {args.record_size} B)")
        secs = timed_shell(f"{k} consume rf1 -e > /dev/null")
        print(f"consume -e > /dev/null: {args.records / secs:,.0f} records/s, {mb / secs:.1f} MB/s ({secs:.2f} s)")
        walls = [timed_shell(f"echo x | {k} produce rf1") for _ in range(args.oneshot_runs)]
        print(f"one-shot 'echo x | kctl produce': median {statistics.median(walls) * 1000:.0f} ms, "
              f"min {min(walls) * 1000:.0f} ms over {len(walls)} runs")
    finally:
        subprocess.run([*KCTL, "--data-dir", data, "cluster", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
