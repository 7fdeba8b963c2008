"""Storage-layer throughput: encode + Log.append, LogReader.read + decode, and recovery time.

Writes ``--records`` records of ``--value-size`` bytes in batches of ``--batch`` records to a fresh
log in a temporary directory, reads them all back through a LogReader, then reopens the log with
full recovery. Prints records/s and MB/s (of record values) for each phase. Not a test: it asserts
only that what was read back is what was written.

    python benchmarks/bench_storage.py [--records N] [--batch N] [--value-size N] [--profile PHASE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kctl.storage.log import Log, LogConfig, LogReader
from kctl.storage.records import decode_batch, decode_values, encode_batch


def _figures(label: str, records: int, payload: int, seconds: float) -> None:
    print(f"{label:<22} {records / seconds:>13,.0f} records/s {payload / seconds / 1e6:>9.1f} MB/s"
          f"   ({seconds:.3f} s)")


def bench_append(directory: str, records: int, batch: int, values: list[bytes], segment_bytes: int) -> float:
    log = Log.create(directory, LogConfig(segment_bytes=segment_bytes))
    timestamp = 1_700_000_000_000
    started = time.perf_counter()
    done = 0
    while done < records:
        n = min(batch, records - done)
        encoded = encode_batch(values[:n], timestamp=timestamp + done)
        log.append(encoded, leader_epoch=1)
        done += n
    elapsed = time.perf_counter() - started
    assert log.log_end_offset == records, log.log_end_offset
    log.close()
    return elapsed


def bench_append_only(directory: str, records: int, batch: int, values: list[bytes], segment_bytes: int
                      ) -> float:
    """Log.append alone, batches encoded beforehand (the storage engine's share of the cost)."""
    encoded = encode_batch(values[:batch], timestamp=1_700_000_000_000)
    log = Log.create(directory, LogConfig(segment_bytes=segment_bytes))
    started = time.perf_counter()
    for _ in range(records // batch):
        log.append(encoded, leader_epoch=1)
    elapsed = time.perf_counter() - started
    log.close()
    return elapsed


def bench_read(directory: str, records: int, value_size: int, fetch_bytes: int) -> float:
    started = time.perf_counter()
    seen = 0
    with LogReader(directory) as reader:
        reader.seek(0)
        while True:
            chunk, headers = reader.read(records, fetch_bytes)
            if not headers:
                break
            for pos, _header in headers:
                _h, batch_records = decode_batch(chunk, pos)
                seen += len(batch_records)
                last = batch_records[-1]
    elapsed = time.perf_counter() - started
    assert seen == records, seen
    assert last.offset == records - 1 and len(last.value or b"") == value_size
    return elapsed


def bench_read_values(directory: str, records: int) -> float:
    """LogReader.read + decode_values: the consumer's path when it prints values only."""
    started = time.perf_counter()
    seen = 0
    with LogReader(directory) as reader:
        reader.seek(0)
        while True:
            chunk, headers = reader.read(records)
            if not headers:
                break
            for pos, _header in headers:
                seen += len(decode_values(chunk, pos)[1])
    assert seen == records, seen
    return time.perf_counter() - started


def bench_read_only(directory: str, records: int, fetch_bytes: int) -> float:
    """LogReader.read alone, no decoding (the storage engine's share of the cost)."""
    started = time.perf_counter()
    with LogReader(directory) as reader:
        reader.seek(0)
        while reader.read(records, fetch_bytes)[1]:
            pass
        assert reader.next_offset == records
    return time.perf_counter() - started


def bench_recover(directory: str, records: int, segment_bytes: int) -> float:
    started = time.perf_counter()
    log = Log.open(directory, LogConfig(segment_bytes=segment_bytes), recover=True)
    elapsed = time.perf_counter() - started
    assert log.log_end_offset == records
    log.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2_000, help="records per batch")
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--segment-bytes", type=int, default=64 << 20)
    parser.add_argument("--fetch-bytes", type=int, default=1 << 20, help="max bytes per LogReader.read")
    parser.add_argument("--dir", default=None, help="parent directory for the temporary log")
    parser.add_argument("--profile", choices=["append", "read", "recover"], default=None,
                        help="run one phase under cProfile and print the top functions")
    args = parser.parse_args(argv)

    values = [bytes([65 + i % 26]) * args.value_size for i in range(args.batch)]
    payload = args.records * args.value_size
    root = tempfile.mkdtemp(prefix="kctl-bench-", dir=args.dir)
    directory = os.path.join(root, "bench-0")
    try:
        print(f"{args.records:,} records of {args.value_size} bytes, {args.batch:,} per batch, "
              f"segment.bytes={args.segment_bytes:,}")
        if args.profile:
            return _profile(args, values, directory)
        _figures("encode + append", args.records,
                 payload, bench_append(directory, args.records, args.batch, values, args.segment_bytes))
        log_bytes = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
                        if f.endswith(".log"))
        segments = sum(1 for f in os.listdir(directory) if f.endswith(".log"))
        print(f"{'':<22} log: {log_bytes:,} bytes in {segments} segment(s)")
        _figures("read + decode", args.records, payload,
                 bench_read(directory, args.records, args.value_size, args.fetch_bytes))
        _figures("read + decode_values", args.records, payload, bench_read_values(directory, args.records))
        _figures("read only", args.records, payload, bench_read_only(directory, args.records, args.fetch_bytes))
        seconds = bench_recover(directory, args.records, args.segment_bytes)
        print(f"{'reopen with recovery':<22} {seconds:.3f} s ({log_bytes / seconds / 1e6:,.0f} MB/s)")
        other = os.path.join(root, "bench-1")
        _figures("append only", args.records, payload,
                 bench_append_only(other, args.records, args.batch, values, args.segment_bytes))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _profile(args: argparse.Namespace, values: list[bytes], directory: str) -> int:
    import cProfile
    import pstats

    if args.profile != "append":
        bench_append(directory, args.records, args.batch, values, args.segment_bytes)
    profiler = cProfile.Profile()
    profiler.enable()
    if args.profile == "append":
        bench_append(directory, args.records, args.batch, values, args.segment_bytes)
    elif args.profile == "read":
        bench_read(directory, args.records, args.value_size, args.fetch_bytes)
    else:
        bench_recover(directory, args.records, args.segment_bytes)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
