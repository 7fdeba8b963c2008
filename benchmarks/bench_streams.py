"""Records per second through ``kctl stream map --expr 'value.upper()'`` (acks=all, RF 3).

The input topic is filled first; the processor then runs with ``--exit-at-end``, so the figure is
the whole job: join the group, scan the output for earlier results, transform, produce, wait for
acknowledgements, commit. "processing" excludes process start-up (it is measured between the
processor's stream_started and stream_stopped events). A second run of the same group after a
reset of its offsets measures the duplicate check: every record is recognised as already produced.
A third run pipes the values through ``--exec 'tr a-z A-Z'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

KCTL = [sys.executable, "-m", "kctl"]


def kctl(data_dir: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*KCTL, "--data-dir", data_dir, *args], check=True, capture_output=True)


def events(data_dir: str, kind: str) -> list[dict]:
    with open(os.path.join(data_dir, "metadata", "events.jsonl"), encoding="utf-8") as f:
        return [e for e in map(json.loads, f) if e.get("type") == kind]


def run_map(data_dir: str, records: int, label: str, *transform: str, output: str = "out") -> dict:
    start = time.perf_counter()
    res = kctl(data_dir, "-o", "json", "stream", "map", "--from", "in", "--to", output,
               *(transform or ("--expr", "value.upper()")), "-e")
    wall = time.perf_counter() - start
    doc = json.loads(res.stdout)
    began = events(data_dir, "stream_started")[-1]["ts_ms"]
    ended = events(data_dir, "stream_stopped")[-1]["ts_ms"]
    busy = max((ended - began) / 1000, 1e-6)
    print(f"{label}: {records / wall:,.0f} records/s wall ({wall:.2f} s), {records / busy:,.0f} records/s "
          f"processing ({busy:.2f} s); in={doc['records_in']:,} out={doc['records_out']:,} "
          f"skipped={doc['duplicates']:,}")
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--record-size", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 records")
    args = parser.parse_args()
    if args.quick:
        args.records = 20_000
    tmp = tempfile.mkdtemp(prefix="kctl-bench-streams-")
    data = os.path.join(tmp, "cluster")
    try:
        kctl(data, "cluster", "init", "--brokers", "3")
        kctl(data, "cluster", "start")
        for t in ("in", "out", "out-exec"):
            kctl(data, "topic", "create", t, "-p", str(args.partitions), "-r", "3")
        from kctl.client.producer import Producer

        value = b"x" * args.record_size
        with Producer(data, acks="all") as p:
            p.send_values("in", [value] * args.records)
        print(f"# {args.records:,} records of {args.record_size} B, {args.partitions} partitions, RF 3, acks=all")
        doc = run_map(data, args.records, "map --expr 'value.upper()'")
        if doc["records_out"] != args.records:
            print(f"FAILED: {doc['records_out']} outputs for {args.records} inputs")
            return 1
        kctl(data, "group", "reset-offsets", "stream-in-out", "--topic", "in", "--to-earliest", "--execute")
        doc = run_map(data, args.records, "same group again after reset (all duplicates)")
        if doc["records_out"] != 0 or doc["duplicates"] != args.records:
            print("FAILED: the rerun produced records again")
            return 1
        doc = run_map(data, args.records, "map --exec 'tr a-z A-Z'", "--exec", "tr a-z A-Z", output="out-exec")
        if doc["records_out"] != args.records:
            print(f"FAILED: {doc['records_out']} outputs for {args.records} inputs")
            return 1
        return 0
    finally:
        subprocess.run([*KCTL, "--data-dir", data, "cluster", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
