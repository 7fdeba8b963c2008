"""Shared helpers for the log-layer tests: building batches, reading a replica back whole."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kctl.storage.log import LogReader
from kctl.storage.records import Record, crc_ok, decode_batch, encode_batch

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class Rec:
    """One record as a test wrote it (offset assigned by the log)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def simple_batch(count: int, *, start: int = 0, timestamp: int = 1_000, size: int = 20,
                 base_offset: int = 0, epoch: int = -1) -> bytes:
    """A batch of ``count`` recognisable values ``v<start+i>`` padded to ``size`` bytes."""
    values = [f"v{start + i}".encode().ljust(size, b".") for i in range(count)]
    return encode_batch(values, timestamp=timestamp, base_offset=base_offset, partition_leader_epoch=epoch)


def read_all(directory: str, start: int | None = None, max_bytes: int = 1 << 20) -> list[Record]:
    """Every record a LogReader serves from ``start`` (default the log start), CRC-checked,
    with records below ``start`` (in a batch that straddles it) dropped."""
    out: list[Record] = []
    with LogReader(directory) as reader:
        state = reader.log_end()
        begin = state.log_start_offset if start is None else start
        reader.seek(begin)
        while True:
            chunk, headers = reader.read(1 << 62, max_bytes)
            if not headers:
                break
            for pos, header in headers:
                assert crc_ok(chunk, pos, header)
                _h, records = decode_batch(chunk, pos)
                out.extend(r for r in records if r.offset >= begin)
    return out


def segment_files(directory: str, suffix: str = ".log") -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(suffix))
