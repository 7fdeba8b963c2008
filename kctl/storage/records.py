"""RecordBatch v2 (magic 2): the bytes of a Kafka log segment, written and read.

A batch is a 61-byte header followed by its records, either raw or compressed as one stream::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 | crc uint32 |
    attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 | maxTimestamp int64 |
    producerId int64 | producerEpoch int16 | baseSequence int32 | recordsCount int32 | records

The CRC-32C covers everything from ``attributes`` to the end, so the leader can stamp
``baseOffset`` and ``partitionLeaderEpoch`` on append without recomputing it (:func:`restamp`).

Each record is ``length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
keyLength varint | key | valueLength varint | value | headerCount varint | headers``, with
zig-zag varints and -1 lengths meaning null.

Encoding and decoding are the producer's and consumer's hot paths, so both have fast paths for
the common shapes (no headers, one timestamp per batch, keys all null or all short): the encoder
assembles the records from precomputed varint tables with ``map``/``zip`` so that the per-record
work runs in C; the decoder walks only the record lengths, slices keys and values out, and then
proves its reading by re-encoding it and comparing bytes (a batch of another shape, or a
malformed one, falls through to the general decoder). The general paths handle every field and
are slower. Every malformed input raises :class:`~kctl.errors.CorruptRecordError` and nothing
else; the encoder raises ValueError for arguments Kafka's format cannot hold.
"""

from __future__ import annotations

import struct
import time
from _thread import allocate_lock
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add
from typing import NamedTuple

from kctl.errors import CorruptRecordError
from kctl.storage.compression import Compression, compress, decompress
from kctl.storage.crc import crc32c

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "NO_PRODUCER_ID",
    "BatchHeader",
    "Compression",
    "Record",
    "crc_ok",
    "decode_batch",
    "decode_values",
    "encode_batch",
    "iter_batches",
    "read_header",
    "read_zigzag_varint",
    "restamp",
    "zigzag_varint",
]

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes batchLength does not count
MAGIC = 2
NO_PRODUCER_ID = -1
CRC_START = 21  # the CRC covers [attributes, end of batch)
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
MIN_RECORD_SIZE = 7  # length, attributes, timestampDelta, offsetDelta, key, value, headerCount

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08  # 1 = LogAppendTime
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

_HEADER = struct.Struct(">qiibIhiqqqhii")
_HEAD = struct.Struct(">qiibI")  # the part before the CRC'd bytes
_TAIL = struct.Struct(">hiqqqhii")  # attributes .. recordsCount
_BASE_OFFSET = struct.Struct(">q")
_LEADER_EPOCH = struct.Struct(">i")
_LEADER_EPOCH_POSITION = 12

assert _HEADER.size == HEADER_SIZE and _HEAD.size == CRC_START


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The 61 fixed bytes at the start of every batch."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies in the log."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        """The offset after this batch (not base + count: compaction may empty a batch)."""
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        codec = self.attributes & COMPRESSION_MASK
        try:
            return Compression(codec)
        except ValueError:
            raise CorruptRecordError(
                f"batch at offset {self.base_offset} has unknown compression codec {codec}"
            ) from None

    @property
    def is_control(self) -> bool:
        """A transaction marker, not user data; consumers skip these."""
        return bool(self.attributes & CONTROL_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def log_append_time(self) -> bool:
        """Records carry the broker's append time (``max_timestamp``) instead of their own."""
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)


class Record(NamedTuple):
    """One record with its absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


_tuple_new = tuple.__new__  # map(_tuple_new, repeat(Record), rows) builds records in C


# -- header -----------------------------------------------------------------------------------
def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header at ``pos``; checks length and magic, not the CRC."""
    if pos < 0 or len(buf) - pos < HEADER_SIZE:
        raise CorruptRecordError(
            f"batch header at position {pos} is truncated ({max(len(buf) - pos, 0)} of {HEADER_SIZE} bytes)"
        )
    fields = _HEADER.unpack_from(buf, pos)
    if fields[3] != MAGIC:
        raise CorruptRecordError(f"batch at position {pos} has magic {fields[3]}, expected {MAGIC}")
    if fields[1] < MIN_BATCH_LENGTH:
        raise CorruptRecordError(
            f"batch at position {pos} has batchLength {fields[1]}, below the minimum {MIN_BATCH_LENGTH}"
        )
    return BatchHeader(*fields)


def crc_ok(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> bool:
    """Whether the batch at ``pos`` is complete and its CRC-32C matches ``header.crc``."""
    end = pos + header.size
    if pos < 0 or end > len(buf):
        return False
    with memoryview(buf) as view:
        return crc32c(view[pos + CRC_START : end]) == header.crc


def iter_batches(
    buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` for each whole batch in ``buf[start:end]``.

    Stops quietly at a torn tail (a header or batch cut short, as a crash leaves the end of a
    segment); raises CorruptRecordError on a header that cannot be a batch. CRCs are not checked.
    """
    limit = len(buf) if end is None else min(end, len(buf))
    pos = start
    while limit - pos >= HEADER_SIZE:
        header = read_header(buf, pos)
        next_pos = pos + header.batch_length + LOG_OVERHEAD
        if next_pos > limit:
            return
        yield pos, header
        pos = next_pos


def restamp(batch: bytearray | memoryview, pos: int, base_offset: int, partition_leader_epoch: int) -> None:
    """Write ``baseOffset`` and ``partitionLeaderEpoch`` in place; both lie outside the CRC."""
    _BASE_OFFSET.pack_into(batch, pos, base_offset)
    _LEADER_EPOCH.pack_into(batch, pos + _LEADER_EPOCH_POSITION, partition_leader_epoch)


# -- varints ----------------------------------------------------------------------------------
def zigzag_varint(value: int) -> bytes:
    """Kafka's zig-zag base-128 encoding of a signed (up to 64-bit) integer."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"{value} does not fit a varlong")
    unsigned = (value << 1) ^ (value >> 63)
    if unsigned < 0x80:
        return bytes((unsigned,))
    out = bytearray()
    while unsigned >= 0x80:
        out.append((unsigned & 0x7F) | 0x80)
        unsigned >>= 7
    out.append(unsigned)
    return bytes(out)


def read_zigzag_varint(buf: bytes, pos: int, max_bytes: int = 10) -> tuple[int, int]:
    """Decode a zig-zag varint at ``pos``; returns ``(value, next position)``."""
    unsigned, pos = _read_unsigned(buf, pos, max_bytes)
    return (unsigned >> 1) ^ -(unsigned & 1), pos


def _read_unsigned(buf: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    result = 0
    shift = 0
    try:
        for index in range(pos, pos + max_bytes):
            byte = buf[index]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, index + 1
            shift += 7
    except IndexError:
        raise CorruptRecordError(f"varint at position {pos} runs past the end of the records") from None
    raise CorruptRecordError(f"varint at position {pos} is longer than {max_bytes} bytes")


# Lookup tables, built on first use and grown on demand (to the next power of two that covers
# the batch's count and largest field), so a process pays only for the sizes it meets:
# _VARINT[n] = varint bytes of n, _VARINT_SIZE[n] = len(_VARINT[n]),
# _VARINT_SPAN[n] = len(_VARINT[n]) + n (a length prefix plus the bytes it counts),
# _ZERO_VARINT[n] = a zero byte + varint(n): a record's attributes and timestampDelta, or the
#     previous record's headerCount 0 and this record's length,
# _PLAIN_PREFIX[n] = attributes 0, timestampDelta 0, offsetDelta n, null key: record n's fields
#     before its value length in the common shape, and _PLAIN_FIXED[n] = len(_PLAIN_PREFIX[n]) + 1
#     (its body size apart from the value's span: the + 1 is headerCount 0).
_MIN_TABLE_SIZE = 1 << 8
_MAX_TABLE_SIZE = 1 << 16  # larger counts or fields take the general path
_VARINT: list[bytes] = []
_VARINT_SIZE: list[int] = []
_VARINT_SPAN: list[int] = []
_ZERO_VARINT: list[bytes] = []
_PLAIN_PREFIX: list[bytes] = []
_PLAIN_FIXED: list[int] = []
_LAST_HEADER_COUNT = (b"\x00",)
_TABLES_LOCK = allocate_lock()


def _tables_cover(need: int) -> bool:
    """Grow the tables to more than ``need`` entries if that is reasonable; False if not."""
    if need >= len(_VARINT):
        if need >= _MAX_TABLE_SIZE:
            return False
        _grow_tables(max(_MIN_TABLE_SIZE, 1 << need.bit_length()))
    return True


def _grow_tables(size: int) -> None:
    """Extend every table to ``size`` entries with C-level loops.

    Thread-safe: growth is serialised, and ``_VARINT`` (whose length :func:`_tables_cover`
    checks) grows last, so a reader never sees it longer than the tables zipped with it.
    """
    with _TABLES_LOCK:
        start = len(_VARINT)
        if size <= start:
            return
        encoded = [bytes((n << 1,)) for n in range(start, min(size, 64))]
        encoded += [bytes(((n << 1) & 0x7F | 0x80, n >> 6)) for n in range(max(start, 64), min(size, 1 << 13))]
        encoded += [zigzag_varint(n) for n in range(max(start, 1 << 13), size)]
        sizes = list(map(len, encoded))
        _VARINT_SIZE.extend(sizes)
        _VARINT_SPAN.extend(map(add, sizes, range(start, size)))
        _ZERO_VARINT.extend(map(add, repeat(b"\x00"), encoded))
        _PLAIN_PREFIX.extend(map(add, map(add, repeat(b"\x00\x00"), encoded), repeat(b"\x01")))
        _PLAIN_FIXED.extend(map(add, sizes, repeat(4)))
        _VARINT.extend(encoded)


# -- encoding ---------------------------------------------------------------------------------
def encode_batch(
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Sequence[tuple[str, bytes | None]]] | None = None,
    timestamps: Sequence[int] | None = None,
    timestamp: int | None = None,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    compression: Compression = Compression.NONE,
) -> bytes:
    """One complete batch holding ``values`` (with optional keys, headers and timestamps).

    ``keys=None`` makes every key null and ``headers=None`` gives no record headers. Timestamps
    come from ``timestamps`` (one per record), else ``timestamp`` for all, else the current time.
    """
    count = len(values)
    if count == 0:
        raise ValueError("a record batch needs at least one record")
    if keys is not None and len(keys) != count:
        raise ValueError(f"{len(keys)} keys for {count} values")
    if headers is not None:
        if len(headers) != count:
            raise ValueError(f"{len(headers)} header lists for {count} values")
        if not any(headers):
            headers = None
    deltas: list[int] | None = None
    if timestamps is not None:
        if len(timestamps) != count:
            raise ValueError(f"{len(timestamps)} timestamps for {count} values")
        base_timestamp = timestamps[0]
        max_timestamp = max(timestamps)
        if max_timestamp != base_timestamp or min(timestamps) != base_timestamp:
            deltas = [ts - base_timestamp for ts in timestamps]
    else:
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        base_timestamp = max_timestamp = timestamp

    records: bytes | memoryview | None = None
    if headers is None and (deltas is None or min(deltas) >= 0):
        after_zero = _records_after_zero(values, keys, deltas)
        if after_zero is not None:
            records = memoryview(after_zero)[1:]
    if records is None:
        records = _encode_records(values, keys, headers, deltas)
    attributes = int(compression) & COMPRESSION_MASK
    if attributes != int(compression):
        raise ValueError(f"unknown compression codec {compression!r}")
    if attributes:
        records = compress(compression, records)
    try:
        tail = _TAIL.pack(
            attributes,
            count - 1,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        )
        head = _HEAD.pack(
            base_offset,
            MIN_BATCH_LENGTH + len(records),
            partition_leader_epoch,
            MAGIC,
            crc32c(records, crc32c(tail)),
        )
    except struct.error as exc:
        raise ValueError(f"batch header field out of range: {exc}") from None
    return b"".join((head, tail, records))


def _records_after_zero(
    values: Sequence[bytes | None], keys: Sequence[bytes | None] | None, deltas: list[int] | None
) -> bytes | None:
    """A zero byte followed by the records section, built by C-level ``map``/``zip`` over tables.

    Each record's trailing headerCount 0 is emitted together with the next record's length (one
    table entry), hence the extra zero byte in front. Handles no headers, non-null values, keys
    all null or all non-null and small non-negative timestamp deltas; returns None when anything
    falls outside the tables, so that the caller takes the general path.
    """
    try:
        value_lengths = list(map(len, values))  # type: ignore[arg-type]  # TypeError on a None
        key_lengths = None if keys is None else list(map(len, keys))  # type: ignore[arg-type]
    except TypeError:
        return None
    # a record body is at most 14 bytes more than its key and value while the tables apply
    need = max(len(values), max(value_lengths) + (max(key_lengths) if key_lengths else 0) + 16)
    if deltas is not None:
        need = max(need, max(deltas) + 1)
    if not _tables_cover(need):
        return None
    varint = _VARINT.__getitem__
    span = _VARINT_SPAN.__getitem__
    zero_varint = _ZERO_VARINT.__getitem__
    try:
        pieces: Iterator[tuple[bytes | None, ...]]
        if keys is None and deltas is None:
            heads = map(zero_varint, map(add, map(span, value_lengths), _PLAIN_FIXED))
            # strict=False: the tables run longer than the batch; ``heads`` ends the zip
            pieces = zip(heads, _PLAIN_PREFIX, map(varint, value_lengths), values, strict=False)
        else:
            # body size = attributes + timestampDelta + offsetDelta + key + value + headerCount
            sizes = map(add, map(span, value_lengths), _VARINT_SIZE)
            if deltas is None:
                fixed = 3  # attributes, timestampDelta 0, headerCount 0
                ts_parts: Iterator[bytes] = repeat(b"\x00\x00")
            else:
                fixed = 2
                sizes = map(add, sizes, map(_VARINT_SIZE.__getitem__, deltas))
                ts_parts = map(zero_varint, deltas)
            if keys is None:
                heads = map(zero_varint, map(add, sizes, repeat(fixed + 1)))
                value_varints = map(varint, value_lengths)
                pieces = zip(heads, ts_parts, _VARINT, repeat(b"\x01"), value_varints, values, strict=False)
            else:
                heads = map(zero_varint, map(add, map(add, sizes, map(span, key_lengths)), repeat(fixed)))
                key_varints = map(varint, key_lengths)
                value_varints = map(varint, value_lengths)
                pieces = zip(heads, ts_parts, _VARINT, key_varints, keys, value_varints, values, strict=False)
        return b"".join(chain(chain.from_iterable(pieces), _LAST_HEADER_COUNT))  # type: ignore[arg-type]
    except (TypeError, IndexError):
        return None


def _encode_record(timestamp_delta: int, offset_delta: int, key: bytes | None, value: bytes | None,
                   headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    """One record, length prefix included, for any field values (the general, slow path)."""
    parts = [b"\x00", zigzag_varint(timestamp_delta), zigzag_varint(offset_delta)]
    for field_bytes in (key, value):
        if field_bytes is None:
            parts.append(b"\x01")
        else:
            parts.append(zigzag_varint(len(field_bytes)))
            parts.append(bytes(field_bytes))
    parts.append(zigzag_varint(len(headers)))
    for name, header_value in headers:
        encoded_name = name.encode()
        parts.append(zigzag_varint(len(encoded_name)))
        parts.append(encoded_name)
        if header_value is None:
            parts.append(b"\x01")
        else:
            parts.append(zigzag_varint(len(header_value)))
            parts.append(bytes(header_value))
    body = b"".join(parts)
    return zigzag_varint(len(body)) + body


def _encode_records(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[tuple[str, bytes | None]]] | None,
    deltas: Sequence[int] | None,
) -> bytes:
    """The records section for any field values (one record at a time)."""
    return b"".join(
        _encode_record(0 if deltas is None else deltas[index], index, None if keys is None else keys[index],
                       value, () if headers is None else headers[index])
        for index, value in enumerate(values))


# -- decoding ---------------------------------------------------------------------------------
def _batch_records(
    buf: bytes | bytearray | memoryview, pos: int, verify_crc: bool
) -> tuple[BatchHeader, bytes]:
    """The header and the (decompressed) records section of the batch at ``pos``."""
    header = read_header(buf, pos)
    end = pos + header.batch_length + LOG_OVERHEAD
    if end > len(buf):
        raise CorruptRecordError(
            f"batch at position {pos} is truncated ({len(buf) - pos} of {header.size} bytes)"
        )
    with memoryview(buf) as view:
        if verify_crc and crc32c(view[pos + CRC_START : end]) != header.crc:
            raise CorruptRecordError(
                f"batch at offset {header.base_offset} (position {pos}) fails its CRC-32C check"
            )
        data = bytes(view[pos + HEADER_SIZE : end])
    codec = header.attributes & COMPRESSION_MASK
    if codec:
        data = decompress(header.compression, data)
    count = header.records_count
    if count < 0 or count * MIN_RECORD_SIZE > len(data):
        raise CorruptRecordError(
            f"batch at offset {header.base_offset} claims {count} records in {len(data)} bytes"
        )
    return header, data


def _corrupt(header: BatchHeader, problem: str) -> CorruptRecordError:
    return CorruptRecordError(f"batch at offset {header.base_offset} is malformed: {problem}")


def _varint_bytes(value: int) -> bytes:
    """Unsigned base-128 varint of an already zig-zagged value."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_OFFSET_DELTA_COLUMNS: dict[tuple[int, int], tuple[bytes, ...]] = {}


def _offset_delta_columns(first: int, n: int) -> tuple[bytes, ...]:
    """Column j of the offset-delta varints of records first..first+n-1 (all the same width)."""
    key = (first, n)
    cols = _OFFSET_DELTA_COLUMNS.get(key)
    if cols is None:
        encoded = [_varint_bytes(2 * i) for i in range(first, first + n)]
        width = len(encoded[0])
        cols = tuple(bytes(e[j] for e in encoded) for j in range(width))
        if len(_OFFSET_DELTA_COLUMNS) < 256:
            _OFFSET_DELTA_COLUMNS[key] = cols
    return cols


def _uniform_values(data: bytes, count: int) -> list[bytes] | None:
    """The values of a records section whose records are all alike: null keys, no headers, one
    timestamp, offset deltas 0, 1, 2..., and values of one length (fixed-size payloads).

    Such records sit at a fixed stride within each run of equal-width offset deltas (0-63 take
    one varint byte, 64-8191 two), so every fixed field is checked with one strided slice per
    column (a comparison in C, no per-record Python) and the values are sliced at the stride.
    Anything else returns None and takes the general fast path.
    """
    if count < 2 or count > 8192 or len(data) < 9:
        return None
    try:
        # the first record: length varint (1 or 2 bytes), attributes, timestampDelta,
        # offsetDelta 0, a null key, then the value length
        lb = 1 if data[0] < 0x80 else (2 if data[1] < 0x80 else 0)
        if not lb or data[lb] != 0 or data[lb + 1] != 0 or data[lb + 2] != 0 or data[lb + 3] != 1:
            return None
        vbyte = data[lb + 4]
        if vbyte < 0x80:
            zz_v, vl = vbyte, 1
        elif data[lb + 5] < 0x80:
            zz_v, vl = (vbyte & 0x7F) | (data[lb + 5] << 7), 2
        else:
            return None
    except IndexError:
        return None
    if zz_v & 1:
        return None
    vlen = zz_v >> 1
    vlen_bytes = _varint_bytes(zz_v)
    values: list[bytes] = []
    base = 0
    for first, last in ((0, min(count, 64)), (64, count)):
        n = last - first
        if n <= 0:
            continue
        od = len(_varint_bytes(2 * first))
        body = 4 + od + vl + vlen
        length_bytes = _varint_bytes(2 * body)
        stride = len(length_bytes) + body
        end = base + n * stride
        if end > len(data):
            return None
        fixed = length_bytes + b"\x00\x00"
        for j, byte in enumerate(fixed):
            if data[base + j:end:stride] != bytes((byte,)) * n:
                return None
        col = base + len(fixed)
        for j, expected in enumerate(_offset_delta_columns(first, n)):
            if data[col + j:end:stride] != expected:
                return None
        col += od
        for j, byte in enumerate(b"\x01" + vlen_bytes):
            if data[col + j:end:stride] != bytes((byte,)) * n:
                return None
        col += 1 + vl
        if data[col + vlen:end:stride] != bytes(n):  # headerCount 0 after each value
            return None
        values.extend(map(data.__getitem__, map(slice, range(col, end, stride), range(col + vlen, end + vlen, stride))))
        base = end
    return values if base == len(data) else None


def _common_shape(data: bytes, count: int) -> tuple[list[bytes] | None, list[bytes]] | None:
    """``(keys, values)`` of a records section in a common shape, or None if it is in neither.

    The common shapes are what :func:`encode_batch` writes for a producer: no headers, one
    timestamp, offset deltas 0, 1, 2..., non-null values, and keys either all null (``keys`` is
    then None) or all non-null and shorter than 64 bytes. Only the record lengths (and key
    lengths) are walked; each value is taken from the end of its record. The result is then
    proven by re-encoding it and comparing the bytes, so a batch of another shape (or a malformed
    one) costs time here, never a wrong answer.
    """
    if not count or len(data) < 5 or not _tables_cover(count):
        return None
    first = 1 if data[0] < 0x80 else 2
    if not data.startswith(b"\x00\x00\x00", first):  # attributes, timestampDelta 0, offsetDelta 0
        return None
    keys: list[bytes] | None = None
    values: list[bytes] = []
    add_value = values.append
    pos = 0
    try:
        if data[first + 3] == 1:  # null keys
            for fixed in _PLAIN_FIXED[:count]:
                # record length in one or two bytes; ``start`` is where the value length should be
                byte = data[pos]
                if byte < 0x80:
                    start = pos + fixed
                    pos += 1 + (byte >> 1)
                else:
                    start = pos + fixed + 1
                    pos += 2 + (((byte & 0x7F) | (data[pos + 1] << 7)) >> 1)
                add_value(data[start + 1 if data[start] < 0x80 else start + 2 : pos - 1])
        else:
            keys = []
            add_key = keys.append
            for offset_size in _VARINT_SIZE[:count]:
                # ``start`` is where the key length should be: one byte for a short key
                byte = data[pos]
                if byte < 0x80:
                    start = pos + 3 + offset_size
                    pos += 1 + (byte >> 1)
                else:
                    start = pos + 4 + offset_size
                    pos += 2 + (((byte & 0x7F) | (data[pos + 1] << 7)) >> 1)
                key_end = start + 1 + (data[start] >> 1)
                add_key(data[start + 1 : key_end])
                add_value(data[key_end + 1 if data[key_end] < 0x80 else key_end + 2 : pos - 1])
    except IndexError:
        return None
    if pos != len(data):
        return None
    encoded = _records_after_zero(values, keys, None)
    if encoded is None or len(encoded) != pos + 1 or not encoded.endswith(data):
        return None
    return keys, values


def decode_batch(
    buf: bytes | bytearray | memoryview, pos: int = 0, *, verify_crc: bool = True
) -> tuple[BatchHeader, list[Record]]:
    """The header and every record of the batch at ``pos`` (control batches included).

    With LogAppendTime set, every record's timestamp is the batch's ``max_timestamp``, as in Kafka.
    """
    header, data = _batch_records(buf, pos, verify_crc)
    uniform = _uniform_values(data, header.records_count)
    shape = (None, uniform) if uniform is not None else _common_shape(data, header.records_count)
    if shape is None:
        return header, _decode_records(header, data)
    keys, values = shape
    count = len(values)
    base_offset = header.base_offset
    timestamp = header.max_timestamp if header.attributes & TIMESTAMP_TYPE_MASK else header.base_timestamp
    rows = zip(
        range(base_offset, base_offset + count),
        repeat(timestamp, count),
        repeat(None, count) if keys is None else keys,
        values,
        repeat((), count),
        strict=True,
    )
    return header, list(map(_tuple_new, repeat(Record), rows))


def _decode_records(header: BatchHeader, data: bytes) -> list[Record]:
    """Every record of a (decompressed) records section, any shape: the general path."""
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    offsets: list[int] = []
    timestamps: list[int] = []
    keys: list[bytes | None] = []
    values: list[bytes | None] = []
    headers: list[tuple[tuple[str, bytes | None], ...]] = []
    add_offset = offsets.append
    add_timestamp = timestamps.append
    add_key = keys.append
    add_value = values.append
    add_headers = headers.append
    no_headers: tuple[tuple[str, bytes | None], ...] = ()
    size = len(data)
    pos = 0
    try:
        for _ in range(header.records_count):
            # length: one or two bytes in the common case
            byte = data[pos]
            if byte < 0x80:
                length = byte >> 1
                pos += 1
            elif data[pos + 1] < 0x80:
                length = ((byte & 0x7F) | (data[pos + 1] << 7)) >> 1
                pos += 2
            else:
                length, pos = _read_unsigned(data, pos, 5)
                length >>= 1
            if byte & 1:
                raise _corrupt(header, "negative record length")
            end = pos + length
            if length < MIN_RECORD_SIZE - 1 or end > size:
                raise _corrupt(header, f"record length {length} does not fit the batch")
            # attributes (unused), then timestampDelta
            byte = data[pos + 1]
            if byte < 0x80:
                add_timestamp(base_timestamp + ((byte >> 1) ^ -(byte & 1)))
                pos += 2
            else:
                unsigned, pos = _read_unsigned(data, pos + 1, 10)
                add_timestamp(base_timestamp + ((unsigned >> 1) ^ -(unsigned & 1)))
            # offsetDelta
            byte = data[pos]
            if byte < 0x80:
                add_offset(base_offset + ((byte >> 1) ^ -(byte & 1)))
                pos += 1
            else:
                unsigned, pos = _read_unsigned(data, pos, 5)
                add_offset(base_offset + ((unsigned >> 1) ^ -(unsigned & 1)))
            # key
            byte = data[pos]
            if byte == 1:
                add_key(None)
                pos += 1
            else:
                if byte < 0x80:
                    pos += 1
                else:
                    byte, pos = _read_unsigned(data, pos, 5)
                if byte & 1:
                    raise _corrupt(header, "negative key length")
                start = pos
                pos += byte >> 1
                add_key(data[start:pos])
            # value
            byte = data[pos]
            if byte == 1:
                add_value(None)
                pos += 1
            else:
                if byte < 0x80:
                    pos += 1
                elif data[pos + 1] < 0x80:
                    byte = (byte & 0x7F) | (data[pos + 1] << 7)
                    pos += 2
                else:
                    byte, pos = _read_unsigned(data, pos, 5)
                if byte & 1:
                    raise _corrupt(header, "negative value length")
                start = pos
                pos += byte >> 1
                add_value(data[start:pos])
            # headers
            if data[pos] == 0:
                add_headers(no_headers)
                pos += 1
            else:
                record_headers, pos = _read_headers(data, pos, end, header)
                add_headers(record_headers)
            if pos != end:
                raise _corrupt(header, f"record fields end at {pos}, its length says {end}")
    except IndexError:
        raise _corrupt(header, "a record runs past the end of the batch") from None
    if pos != size:
        raise _corrupt(header, f"{size - pos} bytes after the last of {header.records_count} records")
    if header.attributes & TIMESTAMP_TYPE_MASK:
        timestamps = [header.max_timestamp] * len(offsets)
    rows = zip(offsets, timestamps, keys, values, headers, strict=True)
    return list(map(_tuple_new, repeat(Record), rows))


def _read_headers(
    data: bytes, pos: int, end: int, header: BatchHeader
) -> tuple[tuple[tuple[str, bytes | None], ...], int]:
    count, pos = read_zigzag_varint(data, pos, 5)
    if count < 0 or count * 2 > end - pos:
        raise _corrupt(header, f"record claims {count} headers")
    out = []
    for _ in range(count):
        name_length, pos = read_zigzag_varint(data, pos, 5)
        if name_length < 0 or pos + name_length > end:
            raise _corrupt(header, f"header name length {name_length}")
        try:
            name = data[pos : pos + name_length].decode()
        except UnicodeDecodeError:
            raise _corrupt(header, "header name is not UTF-8") from None
        pos += name_length
        value_length, pos = read_zigzag_varint(data, pos, 5)
        if value_length == -1:
            out.append((name, None))
        elif value_length < 0 or pos + value_length > end:
            raise _corrupt(header, f"header value length {value_length}")
        else:
            out.append((name, data[pos : pos + value_length]))
            pos += value_length
    return tuple(out), pos


def decode_values(
    buf: bytes | bytearray | memoryview, pos: int = 0, *, verify_crc: bool = True
) -> tuple[BatchHeader, list[bytes | None]]:
    """The header and just the record values, in order (the consumer's plain-output path)."""
    header, data = _batch_records(buf, pos, verify_crc)
    uniform = _uniform_values(data, header.records_count)
    if uniform is not None:
        return header, uniform  # type: ignore[return-value]
    shape = _common_shape(data, header.records_count)
    if shape is not None:
        return header, shape[1]  # type: ignore[return-value]
    values: list[bytes | None] = []
    add_value = values.append
    size = len(data)
    pos = 0
    try:
        for _ in range(header.records_count):
            byte = data[pos]
            if byte < 0x80:
                length = byte >> 1
                pos += 1
            elif data[pos + 1] < 0x80:
                length = ((byte & 0x7F) | (data[pos + 1] << 7)) >> 1
                pos += 2
            else:
                length, pos = _read_unsigned(data, pos, 5)
                length >>= 1
            if byte & 1:
                raise _corrupt(header, "negative record length")
            end = pos + length
            if length < MIN_RECORD_SIZE - 1 or end > size:
                raise _corrupt(header, f"record length {length} does not fit the batch")
            # skip attributes; timestampDelta and offsetDelta: skip their bytes
            pos += 1
            if data[pos] < 0x80:
                pos += 1
            else:
                pos = _read_unsigned(data, pos, 10)[1]
            if data[pos] < 0x80:
                pos += 1
            else:
                pos = _read_unsigned(data, pos, 5)[1]
            byte = data[pos]
            if byte == 1:
                pos += 1
            else:
                if byte < 0x80:
                    pos += 1
                else:
                    byte, pos = _read_unsigned(data, pos, 5)
                if byte & 1:
                    raise _corrupt(header, "negative key length")
                pos += byte >> 1
            byte = data[pos]
            if byte == 1:
                add_value(None)
                pos += 1
            else:
                if byte < 0x80:
                    pos += 1
                elif data[pos + 1] < 0x80:
                    byte = (byte & 0x7F) | (data[pos + 1] << 7)
                    pos += 2
                else:
                    byte, pos = _read_unsigned(data, pos, 5)
                if byte & 1:
                    raise _corrupt(header, "negative value length")
                start = pos
                pos += byte >> 1
                add_value(data[start:pos])
            if data[pos] == 0:
                pos += 1
            else:
                pos = _read_headers(data, pos, end, header)[1]
            if pos != end:
                raise _corrupt(header, f"record fields end at {pos}, its length says {end}")
    except IndexError:
        raise _corrupt(header, "a record runs past the end of the batch") from None
    if pos != size:
        raise _corrupt(header, f"{size - pos} bytes after the last of {header.records_count} records")
    return header, values


# -- re-encoding with explicit offset deltas (the log cleaner) --------------------------------
DeltaRecord = tuple[int, int, bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]
"""(offsetDelta, timestamp, key, value, headers): one record of a batch being rewritten."""


def encode_batch_with_deltas(
    records: Sequence[DeltaRecord],
    *,
    base_offset: int,
    last_offset_delta: int,
    attributes: int = 0,
    partition_leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    max_timestamp: int | None = None,
) -> bytes:
    """One batch whose records keep the offset deltas they had, as compaction leaves them.

    Unlike :func:`encode_batch`, the offsets may have gaps: each record carries its own
    ``offsetDelta`` (strictly increasing, within ``[0, last_offset_delta]``), and the header keeps
    ``last_offset_delta``, so the batch still ends where the original did. ``attributes`` are the
    original batch's (compression codec, timestamp type, transactional and control bits).
    ``max_timestamp`` None means the largest record timestamp; pass the original for a
    LogAppendTime batch, whose records all read as its max timestamp.

    No records gives Kafka's empty batch: recordsCount 0, baseTimestamp -1, ``max_timestamp`` as
    given, and no compression (there is nothing to compress).
    """
    if not 0 <= last_offset_delta <= 0x7FFFFFFF:
        raise ValueError(f"lastOffsetDelta {last_offset_delta} is out of range")
    previous = -1
    for record in records:
        delta = record[0]
        if not previous < delta <= last_offset_delta:
            raise ValueError(f"offset delta {delta} is not increasing within [0, {last_offset_delta}]")
        previous = delta
    if not records:
        if max_timestamp is None:
            raise ValueError("an empty batch keeps the original batch's max timestamp: pass it")
        attributes &= ~COMPRESSION_MASK
        base_timestamp = -1
        section: bytes = b""
    else:
        base_timestamp = records[0][1]
        if max_timestamp is None:
            max_timestamp = max(record[1] for record in records)
        section = b"".join(_encode_record(timestamp - base_timestamp, delta, key, value, record_headers)
                           for delta, timestamp, key, value, record_headers in records)
        codec = attributes & COMPRESSION_MASK
        if codec:
            section = compress(Compression(codec), section)
    try:
        tail = _TAIL.pack(attributes, last_offset_delta, base_timestamp, max_timestamp, producer_id,
                          producer_epoch, base_sequence, len(records))
        head = _HEAD.pack(base_offset, MIN_BATCH_LENGTH + len(section), partition_leader_epoch, MAGIC,
                          crc32c(section, crc32c(tail)))
    except struct.error as exc:
        raise ValueError(f"batch header field out of range: {exc}") from None
    return b"".join((head, tail, section))
