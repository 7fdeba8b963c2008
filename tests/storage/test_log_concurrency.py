"""Processes sharing one replica: two appenders under the append lock, a reader with no lock."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from kctl.cluster.locks import CriticalSection
from kctl.storage.log import Log, LogConfig, LogReader
from kctl.storage.records import crc_ok, decode_batch, encode_batch
from kctl.storage.verify import verify_replica

CONFIG = LogConfig(segment_bytes=16 * 1024, index_interval_bytes=512)
BATCHES = 100
DEADLINE = 60.0


def _appender(directory: str, lock_path: str, writer: int, batches: int) -> None:
    log = Log(directory, CONFIG)
    lock = CriticalSection(lock_path, "append")
    for seq in range(batches):
        count = 1 + (seq * 7 + writer) % 9
        values = [f"w{writer}-s{seq}-r{i}".encode() * (1 + i % 3) for i in range(count)]
        batch = encode_batch(values, keys=[f"w{writer}".encode()] * count, timestamp=1000 + seq)
        with lock.hold(timeout=30):
            log.refresh()
            log.append(batch, leader_epoch=writer)
            if seq % 40 == 39:
                log.roll()
    log.close()


def _reader(directory: str, total: int, results: multiprocessing.Queue) -> None:
    """Tail the log until ``total`` records were seen; report what went wrong (or nothing)."""
    problems: list[str] = []
    seen: list[tuple[int, bytes | None, bytes | None]] = []
    expected = 0
    batches = 0
    deadline = time.monotonic() + DEADLINE
    with LogReader(directory) as reader:
        reader.seek(0)
        while expected < total and time.monotonic() < deadline:
            chunk, headers = reader.read(1 << 62, 4096)
            if not headers:
                time.sleep(0.0005)
                continue
            for pos, header in headers:
                batches += 1
                if pos + header.size > len(chunk):
                    problems.append(f"partial batch at offset {header.base_offset}")
                if not crc_ok(chunk, pos, header):
                    problems.append(f"CRC failure at offset {header.base_offset}")
                if header.base_offset != expected:
                    problems.append(f"batch at {header.base_offset}, expected {expected}")
                records = decode_batch(chunk, pos)[1]
                seen.extend((r.offset, r.key, r.value) for r in records)
                expected = header.next_offset
    results.put((problems, seen, batches))


def test_two_appenders_and_a_reader(tmp_path: Path) -> None:
    directory = str(tmp_path / "topic-0")
    lock_path = str(tmp_path / "topic-0.append.lock")
    Log.create(directory, CONFIG).close()
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = ctx.Queue()
    total = sum(1 + (seq * 7 + w) % 9 for w in (1, 2) for seq in range(BATCHES))
    reader = ctx.Process(target=_reader, args=(directory, total, results))
    reader.start()
    writers = [ctx.Process(target=_appender, args=(directory, lock_path, w, BATCHES)) for w in (1, 2)]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(DEADLINE)
        assert proc.exitcode == 0
    problems, seen, batches = results.get(timeout=DEADLINE)
    reader.join(DEADLINE)
    assert reader.exitcode == 0
    assert problems == []
    assert batches == 2 * BATCHES
    assert [offset for offset, _k, _v in seen] == list(range(total))
    for writer in (1, 2):
        mine = [v for _o, k, v in seen if k == f"w{writer}".encode()]
        # each writer's records arrive whole and in its own order
        order = [(int(v.split(b"-")[1][1:]), int(v.split(b"-")[2].split(b"w")[0][1:])) for v in mine]
        assert order == sorted(order) and len(order) == sum(1 + (s * 7 + writer) % 9 for s in range(BATCHES))
    with Log.open(directory, CONFIG) as log:
        assert log.log_end_offset == total
        assert [e for e, _s in log.epoch_entries] == sorted({e for e, _s in log.epoch_entries})
        assert len(log.segment_bases) > 3
    assert verify_replica(directory) == []
    assert os.path.exists(lock_path)
