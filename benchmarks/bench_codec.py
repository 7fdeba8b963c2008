"""RecordBatch v2 codec throughput: encode, decode and decode-values, in records/s and MB/s.

    python benchmarks/bench_codec.py --records 1000000 --value-size 100 --batch-records 2000

Each phase runs over all records ``--repeat`` times and the best run counts (time.perf_counter;
``--clock cpu`` uses this process's CPU time instead, which a busy machine disturbs less).
MB/s counts batch bytes (what goes to disk). ``--key-size`` > 0 adds keys; ``--compression``
picks a codec.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kctl.storage.records import Compression, decode_batch, decode_values, encode_batch


def bench(
    records: int,
    value_size: int,
    batch_records: int,
    *,
    key_size: int = 0,
    compression: Compression = Compression.NONE,
    repeat: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Throughput figures for one record shape; keys are ``<phase>_records_per_s`` / ``_mb_per_s``."""
    batch_records = min(batch_records, records)
    # distinct values (a counter in front of filler) so nothing can be shared between records
    values = [(b"%010d" % i + b"x" * value_size)[:value_size] for i in range(batch_records)]
    keys = [(b"key-%d" % i).ljust(key_size, b"k")[:key_size] for i in range(batch_records)] if key_size else None
    batches_needed = -(-records // batch_records)
    timestamp = 1_700_000_000_000

    def encode_all() -> list[bytes]:
        return [
            encode_batch(values, keys=keys, timestamp=timestamp, base_offset=n * batch_records, compression=compression)
            for n in range(batches_needed)
        ]

    encoded = encode_all()
    total_records = batches_needed * batch_records
    total_bytes = sum(map(len, encoded))

    def decode_all() -> None:
        for batch in encoded:
            decode_batch(batch)

    def decode_values_all() -> None:
        for batch in encoded:
            decode_values(batch)

    assert decode_batch(encoded[-1])[1][-1].value == values[-1]
    assert decode_values(encoded[0])[1] == values
    phases: dict[str, Callable[[], object]] = {
        "encode": encode_all,
        "decode": decode_all,
        "decode_values": decode_values_all,
    }
    best = dict.fromkeys(phases, float("inf"))
    for _ in range(repeat):  # phases take turns, so a burst of load elsewhere hits them alike
        for phase, run in phases.items():
            start = clock()
            run()
            best[phase] = min(best[phase], clock() - start)
    figures: dict[str, float] = {"records": total_records, "batch_bytes": total_bytes}
    for phase, seconds in best.items():
        figures[f"{phase}_records_per_s"] = total_records / seconds
        figures[f"{phase}_mb_per_s"] = total_bytes / seconds / 1e6
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--batch-records", type=int, default=2000)
    parser.add_argument("--key-size", type=int, default=0)
    parser.add_argument("--compression", default="none", help="none, gzip, snappy, lz4 or zstd")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase; the best counts")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="perf_counter or process_time")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    figures = bench(
        args.records,
        args.value_size,
        args.batch_records,
        key_size=args.key_size,
        compression=Compression.parse(args.compression),
        repeat=args.repeat,
        clock=time.process_time if args.clock == "cpu" else time.perf_counter,
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"{int(figures['records']):,} records of {args.value_size} B values"
        f"{f', {args.key_size} B keys' if args.key_size else ', null keys'}, "
        f"{args.batch_records} per batch, compression {args.compression}, best of {args.repeat} ({args.clock} clock)"
    )
    for phase in ("encode", "decode", "decode_values"):
        print(
            f"  {phase:<14}{figures[f'{phase}_records_per_s']:>14,.0f} records/s"
            f"{figures[f'{phase}_mb_per_s']:>10,.1f} MB/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
