"""RecordBatch v2 codec: Kafka's vectors, round trips, kafka-python in both directions, fuzzing."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kctl.errors import CorruptRecordError, InvalidArgumentError, UsageError
from kctl.storage import compression as compression_module
from kctl.storage import records
from kctl.storage.crc import crc32c
from kctl.storage.records import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    NO_PRODUCER_ID,
    BatchHeader,
    Compression,
    Record,
    crc_ok,
    decode_batch,
    decode_values,
    encode_batch,
    iter_batches,
    read_header,
    read_zigzag_varint,
    restamp,
    zigzag_varint,
)

try:
    import cramjam  # noqa: F401

    CODECS = list(Compression)
except ImportError:  # pragma: no cover - cramjam is a test dependency
    CODECS = [Compression.NONE, Compression.GZIP]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# kafka_codecs patches the same codecs for every example, so a function-scoped fixture is fine
WITH_FIXTURE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# The reference batch: Kafka 0.11 broker bytes, value "123", null key.
REAL_BATCH = bytes.fromhex(
    "0000000000000000"  # baseOffset 0
    "0000003b"  # batchLength 59
    "00000001"  # partitionLeaderEpoch 1
    "02"  # magic
    "0318a270"  # crc
    "0000"  # attributes
    "00000000"  # lastOffsetDelta
    "0000015dff7b063c"  # baseTimestamp 1503229838908
    "0000015dff7b063c"  # maxTimestamp
    "ffffffffffffffff"  # producerId
    "ffff"  # producerEpoch
    "ffffffff"  # baseSequence
    "00000001"  # recordsCount
    "12000000010631323300"  # len=9 attr tsΔ offΔ key=null valueLen=3 "123" headers=0
)


def _with_attributes(batch: bytes, attributes: int) -> bytes:
    """The batch with other attributes and a CRC recomputed to match."""
    out = bytearray(batch)
    struct.pack_into(">h", out, 21, attributes)
    struct.pack_into(">I", out, 17, crc32c(memoryview(out)[21:]))
    return bytes(out)


def _with_records(template: bytes, records_section: bytes, count: int, attributes: int = 0) -> bytes:
    """A batch with ``template``'s header fields around arbitrary records bytes (valid CRC)."""
    out = bytearray(template[:HEADER_SIZE] + records_section)
    struct.pack_into(">i", out, 8, len(out) - LOG_OVERHEAD)
    struct.pack_into(">h", out, 21, attributes)
    struct.pack_into(">i", out, 57, count)
    struct.pack_into(">I", out, 17, crc32c(memoryview(out)[21:]))
    return bytes(out)


# -- vectors ----------------------------------------------------------------------------------
VARINT_VECTORS = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (-65, "8101"),
    (8191, "fe7f"),
    (-8192, "ff7f"),
    (8192, "808001"),
    (1048576, "80808001"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINT_VECTORS)
def test_varint_vectors(value: int, encoded: str) -> None:
    assert zigzag_varint(value) == bytes.fromhex(encoded)
    assert read_zigzag_varint(bytes.fromhex(encoded) + b"\xff", 0) == (value, len(encoded) // 2)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varlong_round_trip(value: int) -> None:
    encoded = zigzag_varint(value)
    assert len(encoded) <= 10
    assert read_zigzag_varint(encoded, 0) == (value, len(encoded))


def test_varint_errors() -> None:
    with pytest.raises(ValueError):
        zigzag_varint(2**63)
    with pytest.raises(ValueError):
        zigzag_varint(-(2**63) - 1)
    with pytest.raises(CorruptRecordError):
        read_zigzag_varint(b"\x80\x80", 0)  # runs off the end
    with pytest.raises(CorruptRecordError):
        read_zigzag_varint(b"\x80" * 6 + b"\x01", 0, 5)  # longer than a varint may be


def test_encoder_tables_match_the_reference_encoder() -> None:
    records._tables_cover(9000)
    assert all(records._VARINT[n] == zigzag_varint(n) for n in range(len(records._VARINT)))
    assert records._PLAIN_PREFIX[300] == b"\x00\x00" + zigzag_varint(300) + b"\x01"


@pytest.mark.parametrize(
    ("data", "expected"), [(b"", 0x00000000), (b"a", 0xC1D04330), (b"123456789", 0xE3069283)]
)
def test_crc32c_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c(memoryview(bytearray(data))) == expected


def test_crc32c_continues_from_a_previous_value() -> None:
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283


# -- the real broker batch --------------------------------------------------------------------
def test_real_batch_header_fields() -> None:
    header = read_header(REAL_BATCH)
    assert header == BatchHeader(
        base_offset=0,
        batch_length=59,
        partition_leader_epoch=1,
        magic=2,
        crc=0x0318A270,
        attributes=0,
        last_offset_delta=0,
        base_timestamp=1503229838908,
        max_timestamp=1503229838908,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        records_count=1,
    )
    assert header.size == len(REAL_BATCH) == 71
    assert (header.last_offset, header.next_offset) == (0, 1)
    assert header.compression is Compression.NONE
    assert not (header.is_control or header.is_transactional or header.log_append_time)
    assert crc_ok(REAL_BATCH, 0, header)


def test_real_batch_records() -> None:
    header, batch_records = decode_batch(REAL_BATCH)
    assert batch_records == [Record(0, 1503229838908, None, b"123", ())]
    assert decode_values(REAL_BATCH) == (header, [b"123"])
    assert list(iter_batches(REAL_BATCH)) == [(0, header)]


def test_encoding_the_real_batch_reproduces_its_bytes() -> None:
    encoded = encode_batch([b"123"], timestamp=1503229838908, partition_leader_epoch=1)
    assert encoded == REAL_BATCH
    # the general encoder (per-record timestamps that differ elsewhere force it) agrees too
    assert records._encode_records([b"123"], None, [()], None) == REAL_BATCH[HEADER_SIZE:]


def test_crc_ok_rejects_a_flipped_bit_and_a_short_buffer() -> None:
    header = read_header(REAL_BATCH)
    for position in range(21, len(REAL_BATCH)):
        damaged = bytearray(REAL_BATCH)
        damaged[position] ^= 0x10
        assert not crc_ok(damaged, 0, header)
    assert not crc_ok(REAL_BATCH[:-1], 0, header)
    with pytest.raises(CorruptRecordError, match="CRC"):
        decode_batch(REAL_BATCH[:-1] + b"\x01")
    # without the check, damaged bytes that still parse are returned as they are
    damaged = REAL_BATCH[:-2] + b"4\x00"
    assert decode_batch(damaged, verify_crc=False)[1][0].value == b"124"


def test_restamp_changes_offsets_and_epoch_without_touching_the_crc() -> None:
    batch = bytearray(encode_batch([b"a", b"b", None], timestamp=5))
    crc_before = read_header(batch).crc
    restamp(batch, 0, 1000, 7)
    header, batch_records = decode_batch(batch)
    assert (header.base_offset, header.partition_leader_epoch, header.crc) == (1000, 7, crc_before)
    assert [record.offset for record in batch_records] == [1000, 1001, 1002]
    assert header.next_offset == 1003
    # and inside a larger buffer, through a memoryview
    log = bytearray(REAL_BATCH) + batch
    restamp(memoryview(log), len(REAL_BATCH), 42, 3)
    assert decode_batch(log, len(REAL_BATCH))[1][0].offset == 42


# -- round trips ------------------------------------------------------------------------------
payloads = st.one_of(
    st.none(), st.just(b""), st.binary(max_size=40), st.binary(min_size=60, max_size=300)
)
header_names = st.text(max_size=12)  # includes non-ASCII names
record_headers = st.lists(st.tuples(header_names, st.one_of(st.none(), st.binary(max_size=20))), max_size=4)
records_strategy = st.lists(
    st.tuples(payloads, payloads, record_headers, st.integers(-(2**31), 2**31)), min_size=1, max_size=40
)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(records_strategy)
    base_timestamp = draw(st.integers(-(2**40), 2**45))
    kwargs: dict[str, Any] = {
        "values": [row[1] for row in rows],
        "base_offset": draw(st.integers(0, 2**62)),
        "partition_leader_epoch": draw(st.integers(-1, 2**31 - 1)),
        "producer_id": draw(st.integers(-1, 2**63 - 1)),
        "producer_epoch": draw(st.integers(-1, 2**15 - 1)),
        "base_sequence": draw(st.integers(-1, 2**31 - 1)),
        "compression": draw(st.sampled_from(CODECS)),
    }
    key_mode = draw(st.sampled_from(["null", "drawn", "bytes"]))
    if key_mode == "drawn":
        kwargs["keys"] = [row[0] for row in rows]
    elif key_mode == "bytes":  # all keys non-null: the encoder's keyed fast path
        kwargs["keys"] = [row[0] or b"" for row in rows]
    if draw(st.booleans()):
        kwargs["headers"] = [row[2] for row in rows]
    if draw(st.booleans()):
        kwargs["timestamps"] = [base_timestamp + row[3] for row in rows]
    else:
        kwargs["timestamp"] = base_timestamp
    return kwargs


@ROUND_TRIP
@given(batches())
def test_round_trip(kwargs: dict[str, Any]) -> None:
    batch = encode_batch(**kwargs)
    values = kwargs["values"]
    count = len(values)
    keys = kwargs.get("keys") or [None] * count
    headers = [tuple(h) for h in kwargs["headers"]] if "headers" in kwargs else [()] * count
    timestamps = kwargs.get("timestamps") or [kwargs["timestamp"]] * count

    header = read_header(batch)
    assert header.size == len(batch)
    assert crc_ok(batch, 0, header)
    assert header.compression is kwargs["compression"]
    assert header.base_offset == kwargs["base_offset"]
    assert header.partition_leader_epoch == kwargs["partition_leader_epoch"]
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (
        kwargs["producer_id"],
        kwargs["producer_epoch"],
        kwargs["base_sequence"],
    )
    assert header.records_count == count and header.last_offset_delta == count - 1
    assert header.base_timestamp == timestamps[0] and header.max_timestamp == max(timestamps)

    decoded_header, decoded = decode_batch(batch)
    assert decoded_header == header
    base = kwargs["base_offset"]
    assert decoded == [
        Record(base + i, timestamps[i], keys[i], values[i], headers[i]) for i in range(count)
    ]
    assert decode_values(batch) == (header, list(values))

    # the same batch inside a larger buffer, decoded in place
    padded = b"\xaa" * 13 + batch + b"\xbb" * 5
    assert decode_batch(padded, 13)[1] == decoded
    assert decode_values(memoryview(padded), 13)[1] == list(values)


@ROUND_TRIP
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=50),
    st.one_of(st.none(), st.lists(st.binary(max_size=20), min_size=50, max_size=50)),
    st.one_of(st.none(), st.lists(st.integers(0, 300), min_size=50, max_size=50)),
)
def test_fast_encoder_agrees_with_the_general_encoder(
    values: list[bytes], keys: list[bytes] | None, deltas: list[int] | None
) -> None:
    count = len(values)
    keys = None if keys is None else keys[:count]
    deltas = None if deltas is None else deltas[:count]
    fast = records._records_after_zero(values, keys, deltas)
    assert fast is not None
    assert fast[1:] == records._encode_records(values, keys, None, deltas)


@ROUND_TRIP
@given(
    st.lists(st.one_of(st.none(), st.binary(max_size=200)), min_size=1, max_size=50),
    st.sampled_from(["null", "short", "long", "mixed"]),
    st.data(),
)
def test_common_shape_decoder_agrees_with_the_general_decoder(
    values: list[bytes | None], key_mode: str, data: st.DataObject
) -> None:
    """The fast path either declines or returns exactly what the general decoder finds."""
    keys: list[bytes | None] | None = {
        "null": None,
        "short": [b"k%d" % i for i in range(len(values))],
        "long": [b"k" * (60 + i) for i in range(len(values))],
        "mixed": [None if i % 2 else b"key" for i in range(len(values))],
    }[key_mode]
    batch = bytearray(encode_batch(values, keys=keys, timestamp=1))
    for _ in range(data.draw(st.integers(0, 3))):
        position = data.draw(st.integers(HEADER_SIZE, len(batch) - 1))
        batch[position] = data.draw(st.integers(0, 255))
    header = read_header(batch)
    section = bytes(batch[HEADER_SIZE:])
    shape = records._common_shape(section, header.records_count)
    try:
        general = records._decode_records(header, section)
    except CorruptRecordError:
        assert shape is None
        return
    if shape is not None:
        found_keys, found_values = shape
        assert found_values == [record.value for record in general]
        assert (found_keys or [None] * len(general)) == [record.key for record in general]
        assert all(record.headers == () for record in general)
        assert [record.offset for record in general] == list(range(len(general)))
        assert all(record.timestamp == 1 for record in general)
    assert decode_batch(batch, verify_crc=False)[1] == general
    assert decode_values(batch, verify_crc=False)[1] == [record.value for record in general]


def test_large_values_and_many_records_take_the_general_paths() -> None:
    big = bytes(range(256)) * 400  # 100 KiB: beyond the encoder's tables
    values: list[bytes | None] = [b"x", big, None, b""]
    batch = encode_batch(values, keys=[big, None, b"k", b""], timestamp=9)
    assert [(r.key, r.value) for r in decode_batch(batch)[1]] == [
        (big, b"x"),
        (None, big),
        (b"k", None),
        (b"", b""),
    ]
    many = [b"%d" % i for i in range(70_000)]  # more records than the tables cover
    batch = encode_batch(many, timestamp=1)
    assert decode_values(batch)[1] == many
    header, decoded = decode_batch(batch)
    assert header.last_offset_delta == 69_999 and decoded[-1] == Record(69_999, 1, None, b"69999", ())


def test_timestamps_may_go_backwards_within_a_batch() -> None:
    stamps = [1_000, 400, 2**40, -5]
    header, decoded = decode_batch(encode_batch([b"a", b"b", b"c", b"d"], timestamps=stamps))
    assert [record.timestamp for record in decoded] == stamps
    assert (header.base_timestamp, header.max_timestamp) == (1_000, 2**40)


def test_default_timestamp_is_now() -> None:
    import time

    before = time.time_ns() // 1_000_000
    header, decoded = decode_batch(encode_batch([b"v"]))
    after = time.time_ns() // 1_000_000
    assert before <= header.base_timestamp == decoded[0].timestamp <= after


def test_headers_keep_order_duplicates_and_nulls() -> None:
    headers = [("trace", b"1"), ("trace", None), ("é-名", b""), ("", b"\x00")]
    decoded = decode_batch(encode_batch([b"v", b"w"], headers=[headers, []], timestamp=0))[1]
    assert decoded[0].headers == tuple(headers)
    assert decoded[1].headers == ()


def test_encode_batch_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_batch([])
    with pytest.raises(ValueError):
        encode_batch([b"a"], keys=[b"a", b"b"])
    with pytest.raises(ValueError):
        encode_batch([b"a"], headers=[[], []])
    with pytest.raises(ValueError):
        encode_batch([b"a"], timestamps=[1, 2])
    with pytest.raises(ValueError):
        encode_batch([b"a"], producer_epoch=2**15)
    with pytest.raises(ValueError):
        encode_batch([b"a"], base_offset=2**63)
    with pytest.raises(TypeError):
        encode_batch(["text is not bytes"])  # type: ignore[list-item]


def test_log_append_time_reports_the_batch_max_timestamp() -> None:
    batch = encode_batch([b"a", b"b"], keys=[b"k", None], timestamps=[10, 30])
    stamped = _with_attributes(batch, 0x08)
    header, decoded = decode_batch(stamped)
    assert header.log_append_time
    assert [record.timestamp for record in decoded] == [30, 30]
    plain = _with_attributes(encode_batch([b"a", b"b"], timestamp=10), 0x08)
    assert [record.timestamp for record in decode_batch(plain)[1]] == [10, 10]


def test_control_batches_are_returned_with_their_records() -> None:
    # an end-transaction marker: key (version 0, type 1 = commit), value (version 0, epoch 3)
    marker = encode_batch(
        [struct.pack(">hi", 0, 3)], keys=[struct.pack(">hh", 0, 1)], timestamp=7, producer_id=9, producer_epoch=0
    )
    control = _with_attributes(marker, 0x30)  # transactional + control
    header, decoded = decode_batch(control)
    assert header.is_control and header.is_transactional
    assert decoded == [Record(0, 7, b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x03", ())]


def test_empty_batch_left_by_compaction() -> None:
    batch = _with_records(encode_batch([b"x", b"y", b"z"], timestamp=1), b"", 0)
    header, decoded = decode_batch(batch)
    assert decoded == [] and header.records_count == 0
    assert header.last_offset_delta == 2 and header.next_offset == 3


# -- compression ------------------------------------------------------------------------------
def test_compression_parse() -> None:
    assert [Compression.parse(name) for name in ["none", "GZIP", "Snappy", " lz4", "zstd"]] == list(Compression)
    for bad in ["", "zip", "producer", "5"]:
        with pytest.raises(InvalidArgumentError, match="compression"):
            Compression.parse(bad)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("size", [0, 1, 1000, 200_000])
def test_compress_round_trip(codec: Compression, size: int) -> None:
    data = (b"kafka log segment " * (size // 18 + 1))[:size]
    packed = compression_module.compress(codec, data)
    assert compression_module.decompress(codec, packed) == data
    if codec and size >= 1000:
        assert len(packed) < size


def test_stream_formats() -> None:
    data = bytes(range(256)) * 1000  # 256 KB: several snappy and lz4 blocks
    gz = compression_module.compress(Compression.GZIP, data)
    assert gz[:2] == b"\x1f\x8b"
    import gzip

    assert gzip.decompress(gz) == data
    # two gzip members, as a concatenating writer may leave
    assert compression_module.decompress(Compression.GZIP, gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    pytest.importorskip("cramjam")
    snappy = compression_module.compress(Compression.SNAPPY, data)
    assert snappy[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    first_block = struct.unpack_from(">i", snappy, 16)[0]
    assert 0 < first_block < 32 * 1024 + 2000
    lz4 = compression_module.compress(Compression.LZ4, data)
    assert lz4[:4] == bytes.fromhex("04224d18")
    flags, block_descriptor = lz4[4], lz4[5]
    assert flags >> 6 == 1  # frame version 01
    assert flags & 0x20  # independent blocks: Kafka's reader refuses linked ones
    assert not flags & 0x03  # reserved bits
    assert block_descriptor == 0x40  # 64 KiB blocks
    zstd = compression_module.compress(Compression.ZSTD, data)
    assert zstd[:4] == bytes.fromhex("28b52ffd")


def test_snappy_accepts_an_unframed_block() -> None:
    cramjam = pytest.importorskip("cramjam")
    raw = bytes(cramjam.snappy.compress_raw(b"plain snappy block" * 10))
    assert compression_module.decompress(Compression.SNAPPY, raw) == b"plain snappy block" * 10


@pytest.mark.parametrize("codec", [c for c in CODECS if c])
def test_damaged_compressed_data_is_a_corrupt_record(codec: Compression) -> None:
    packed = compression_module.compress(codec, b"some records " * 500)
    for damaged in [packed[: len(packed) // 2], b"\x00" * 40, packed[:3], b""]:
        with pytest.raises(CorruptRecordError):
            compression_module.decompress(codec, damaged)


def test_missing_cramjam_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cramjam", None)  # makes `import cramjam` fail
    with pytest.raises(UsageError, match=r"compression 'zstd' needs the optional package cramjam"):
        encode_batch([b"a"], compression=Compression.ZSTD)
    with pytest.raises(UsageError, match="kctl\\[compression\\]"):
        compression_module.decompress(Compression.LZ4, b"")
    # gzip needs no optional package
    assert decode_values(encode_batch([b"a"], compression=Compression.GZIP))[1] == [b"a"]


def test_compressed_batch_keeps_its_header_raw() -> None:
    values = [b"value %d" % (i % 7) for i in range(500)]
    for codec in CODECS:
        batch = encode_batch(values, timestamp=3, compression=codec)
        header = read_header(batch)
        assert header.compression is codec and header.records_count == 500
        if codec:
            assert len(batch) < len(encode_batch(values, timestamp=3))
        assert decode_values(batch)[1] == values


# -- kafka-python in both directions ----------------------------------------------------------
kafka_default_records = pytest.importorskip("kafka.record.default_records")
kafka_memory_records = pytest.importorskip("kafka.record.memory_records")


@pytest.fixture
def kafka_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give kafka-python block codecs for snappy, lz4 and zstd when their libraries are absent.

    kafka-python needs python-snappy, lz4 and zstandard, which kctl does not depend on. Where one
    is missing, cramjam stands in for the raw codec only: for snappy that still runs
    kafka-python's own xerial framing code; for lz4 and zstd it checks the batch framing around
    the compressed bytes (attributes, lengths, CRC over the compressed section).
    """
    cramjam = pytest.importorskip("cramjam")
    import kafka.codec

    if kafka.codec.snappy is None:

        class Snappy:
            compress = staticmethod(lambda data: bytes(cramjam.snappy.compress_raw(data)))
            decompress = staticmethod(lambda data: bytes(cramjam.snappy.decompress_raw(data)))

        monkeypatch.setattr(kafka.codec, "snappy", Snappy)
    if not kafka.codec.has_lz4():
        monkeypatch.setattr(kafka.codec, "lz4", object())
        monkeypatch.setattr(kafka_default_records, "lz4_decode", lambda data: bytes(cramjam.lz4.decompress(data)))
        monkeypatch.setattr(
            kafka_default_records,
            "lz4_encode",
            lambda data: compression_module.compress(Compression.LZ4, data),
        )
    if kafka.codec.zstd is None:
        monkeypatch.setattr(kafka.codec, "zstd", object())
        monkeypatch.setattr(kafka_default_records, "zstd_decode", lambda data: bytes(cramjam.zstd.decompress(data)))
        monkeypatch.setattr(kafka_default_records, "zstd_encode", lambda data: bytes(cramjam.zstd.compress(data)))


def _kafka_records(batch: bytes | bytearray) -> tuple[Any, list[Record]]:
    parsed = kafka_default_records.DefaultRecordBatch(bytes(batch))
    assert parsed.validate_crc()
    found = [
        Record(r.offset, r.timestamp, r.key, r.value, tuple((k, v) for k, v in r.headers)) for r in parsed
    ]
    return parsed, found


@pytest.mark.usefixtures("kafka_codecs")
@WITH_FIXTURE
@given(batches())
def test_kafka_python_reads_our_batches(kwargs: dict[str, Any]) -> None:
    batch = encode_batch(**kwargs)
    ours = decode_batch(batch)[1]
    parsed, theirs = _kafka_records(batch)
    assert theirs == ours
    assert parsed.base_offset == kwargs["base_offset"]
    assert parsed.leader_epoch == kwargs["partition_leader_epoch"]
    assert parsed.compression_type == kwargs["compression"]
    assert parsed.producer_id == kwargs["producer_id"]
    assert parsed.records_count == len(kwargs["values"])


@pytest.mark.usefixtures("kafka_codecs")
@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_reads_a_whole_segment(codec: Compression) -> None:
    """A .log file is batches end to end; MemoryRecords walks it with valid CRCs."""
    segment = bytearray()
    next_offset = 0
    for size in (1, 500, 3):
        batch = bytearray(encode_batch([b"record %d" % i for i in range(size)], timestamp=100, compression=codec))
        restamp(batch, 0, next_offset, 4)
        segment += batch
        next_offset += size
    walked = kafka_memory_records.MemoryRecords(bytes(segment))
    offsets = []
    while walked.has_next():
        kafka_batch = walked.next_batch()
        assert kafka_batch.validate_crc()
        assert kafka_batch.leader_epoch == 4
        offsets += [record.offset for record in kafka_batch]
    assert offsets == list(range(504))
    assert [h.base_offset for _, h in iter_batches(segment)] == [0, 1, 501]


@pytest.mark.usefixtures("kafka_codecs")
@WITH_FIXTURE
@given(batches())
def test_we_read_kafka_python_batches(kwargs: dict[str, Any]) -> None:
    codec = kwargs["compression"]
    builder = kafka_default_records.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=kwargs["producer_id"],
        producer_epoch=kwargs["producer_epoch"],
        base_sequence=kwargs["base_sequence"],
        batch_size=2**30,
    )
    values = kwargs["values"]
    keys = kwargs.get("keys") or [None] * len(values)
    headers = kwargs.get("headers") or [[] for _ in values]
    timestamps = kwargs.get("timestamps") or [kwargs["timestamp"]] * len(values)
    for i, value in enumerate(values):
        assert builder.append(i, timestamps[i], keys[i], value, list(headers[i])) is not None
    batch = bytes(builder.build())
    parsed, theirs = _kafka_records(batch)
    header, ours = decode_batch(batch)
    assert ours == theirs
    assert [r.value for r in ours] == list(values) and [r.key for r in ours] == list(keys)
    assert [r.timestamp for r in ours] == timestamps
    assert decode_values(batch)[1] == list(values)
    assert header.compression == parsed.compression_type  # kafka-python drops useless compression
    assert (header.producer_id, header.base_sequence) == (kwargs["producer_id"], kwargs["base_sequence"])


@pytest.mark.usefixtures("kafka_codecs")
@pytest.mark.parametrize("codec", CODECS)
def test_we_read_a_compressed_kafka_python_batch(codec: Compression) -> None:
    builder = kafka_default_records.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=2**30,
    )
    values = [b"compressible value %d" % (i % 10) for i in range(3000)]
    for i, value in enumerate(values):
        builder.append(i, 1_700_000_000_000 + i, None, value, [])
    batch = bytes(builder.build())
    header, ours = decode_batch(batch)
    assert header.compression is codec
    assert [r.value for r in ours] == values
    assert [r.timestamp for r in ours] == [1_700_000_000_000 + i for i in range(3000)]


# -- walking a log ----------------------------------------------------------------------------
def _segment() -> tuple[bytes, list[int]]:
    log = bytearray()
    starts = []
    for base, values in ((0, [b"a"]), (1, [b"b", b"c", None]), (4, [b"d" * 300])):
        starts.append(len(log))
        log += encode_batch(values, base_offset=base, timestamp=1)
    return bytes(log), starts


def test_iter_batches_walks_whole_batches() -> None:
    log, starts = _segment()
    walked = list(iter_batches(log))
    assert [pos for pos, _ in walked] == starts
    assert [header.next_offset for _, header in walked] == [1, 4, 5]
    assert [pos for pos, _ in iter_batches(log, starts[1])] == starts[1:]
    assert [pos for pos, _ in iter_batches(log, 0, starts[2])] == starts[:2]


def test_iter_batches_stops_quietly_at_every_torn_tail() -> None:
    log, starts = _segment()
    ends = [*starts[1:], len(log)]
    for cut in range(len(log) + 1):
        walked = [pos for pos, _ in iter_batches(log[:cut])]
        assert walked == [start for start, end in zip(starts, ends, strict=True) if end <= cut]
        assert [pos for pos, _ in iter_batches(log, 0, cut)] == walked


def test_iter_batches_raises_on_a_header_that_cannot_be_a_batch() -> None:
    log, starts = _segment()
    bad_magic = bytearray(log)
    bad_magic[starts[1] + 16] = 1
    with pytest.raises(CorruptRecordError, match="magic"):
        list(iter_batches(bad_magic))
    bad_length = bytearray(log)
    struct.pack_into(">i", bad_length, starts[1] + 8, 48)
    with pytest.raises(CorruptRecordError, match="batchLength"):
        list(iter_batches(bad_length))
    zeros = log + bytes(100)  # an untrimmed preallocated tail
    with pytest.raises(CorruptRecordError):
        list(iter_batches(zeros))


def test_read_header_errors() -> None:
    with pytest.raises(CorruptRecordError, match="truncated"):
        read_header(REAL_BATCH[:60])
    with pytest.raises(CorruptRecordError, match="truncated"):
        read_header(REAL_BATCH, 11)
    with pytest.raises(CorruptRecordError):
        read_header(REAL_BATCH, -1)
    with pytest.raises(CorruptRecordError, match="truncated"):
        decode_batch(REAL_BATCH[:70])
    with pytest.raises(CorruptRecordError, match="compression codec 7"):
        decode_batch(_with_attributes(REAL_BATCH, 7))
    assert (MAGIC, NO_PRODUCER_ID, HEADER_SIZE, LOG_OVERHEAD) == (2, -1, 61, 12)


@pytest.mark.parametrize(
    ("records_section", "count"),
    [
        (b"\x12\x00\x00\x00\x01\x06123\x00", 2),  # fewer records than the count
        (b"\x12\x00\x00\x00\x01\x06123\x00\x00", 1),  # a byte after the last record
        (b"\x13\x00\x00\x00\x01\x06123\x00", 1),  # negative record length
        (b"\x12\x00\x00\x00\x01\x08123\x00", 1),  # value longer than the record
        (b"\x12\x00\x00\x00\x03\x06123\x00", 1),  # key length -2
        (b"\x12\x00\x00\x00\x01\x05123\x00", 1),  # value length -3
        (b"\x12\x00\x00\x00\x01\x06123\x03", 1),  # header count -2
        (b"\x12\x00\x00\x00\x01\x06123\x02", 1),  # a header that is not there
        (b"\x14\x00\x00\x00\x01\x06123\x02\x02\xff\x01", 1),  # header name not UTF-8
        (b"\x14\x00\x00\x00\x01\x06123\x02\x01\x01", 1),  # null header name
        (b"\x16\x00\x00\x00\x01\x06123\x00\x00", 1),  # record length past its fields
        (b"\x12\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 1),  # varlong longer than 10 bytes
        (b"\x12\x00\x00\xff\xff\xff\xff\xff\x01\x06123\x00", 1),  # varint longer than 5 bytes
        (b"\x80", 1),  # varint cut short
        (b"", -1),  # negative count
    ],
)
def test_malformed_records_are_corrupt(records_section: bytes, count: int) -> None:
    batch = _with_records(REAL_BATCH, records_section, count)
    for decode in (decode_batch, decode_values):
        with pytest.raises(CorruptRecordError):
            decode(batch)


# -- fuzzing: only CorruptRecordError ever escapes --------------------------------------------
def _only_corrupt(call: Callable[[], object]) -> None:
    try:
        call()
    except CorruptRecordError:
        pass


def _exercise(data: bytes | bytearray) -> None:
    for verify in (True, False):
        _only_corrupt(lambda verify=verify: decode_batch(data, verify_crc=verify))
        _only_corrupt(lambda verify=verify: decode_values(data, verify_crc=verify))
    _only_corrupt(lambda: read_header(data))
    _only_corrupt(lambda: list(iter_batches(data)))


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _exercise(data)
    _exercise(REAL_BATCH[:HEADER_SIZE] + data)


@FUZZ
@given(st.binary(max_size=300), st.integers(-3, 60), st.integers(0, 0x7F))
def test_fuzz_random_records_behind_a_valid_header(section: bytes, count: int, attributes: int) -> None:
    """Valid header and CRC, arbitrary records bytes, count and attributes (codecs 0-7)."""
    _exercise(_with_records(REAL_BATCH, section, count, attributes))


@FUZZ
@given(batches(), st.data())
def test_fuzz_damaged_batches(kwargs: dict[str, Any], data: st.DataObject) -> None:
    batch = bytearray(encode_batch(**kwargs))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        position = data.draw(st.integers(HEADER_SIZE, len(batch)))
        if action == "insert":
            batch[position:position] = data.draw(st.binary(min_size=1, max_size=3))
        elif position < len(batch):
            if action == "flip":
                batch[position] ^= 1 << data.draw(st.integers(0, 7))
            else:
                del batch[position]
    records_section = bytes(batch[HEADER_SIZE:])
    fixed = _with_records(bytes(batch), records_section, read_header(batch).records_count, batch[22])
    _exercise(batch)
    _exercise(fixed)


# -- import cost ------------------------------------------------------------------------------
def test_importing_the_codec_stays_light() -> None:
    """No importlib.metadata (the crc32c package __init__) and no cramjam until compression."""
    code = (
        "import sys, kctl.storage.records as r\n"
        "assert r.crc32c(b'123456789') == 0xE3069283\n"
        "heavy = {'importlib.metadata', 'cramjam', 'zlib', 'crc32c'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tables_grow_safely_under_threads() -> None:
    """Encoders racing to grow the lookup tables never see a half-grown table."""
    import threading

    with records._TABLES_LOCK:
        for table in (
            records._VARINT,
            records._VARINT_SIZE,
            records._VARINT_SPAN,
            records._ZERO_VARINT,
            records._PLAIN_PREFIX,
            records._PLAIN_FIXED,
        ):
            table.clear()
    failures: list[str] = []

    def work(seed: int) -> None:
        for step in range(12):
            size = (seed * 977 + step * 1553) % 9000
            values = [b"v" * (size + i) for i in range(1 + step * 40)]
            batch = encode_batch(values, timestamp=seed)
            expected = records._encode_records(values, None, None, None)
            if batch[HEADER_SIZE:] != expected or decode_values(batch)[1] != values:
                failures.append(f"thread {seed} step {step}")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert len(records._VARINT) == len(records._PLAIN_FIXED) == len(records._ZERO_VARINT)
