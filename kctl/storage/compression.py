"""Kafka's four compression codecs for the records section of a batch.

gzip comes from the standard library; snappy, lz4 and zstd from the optional package ``cramjam``,
imported only when a batch actually uses one of them so that ``kctl`` starts fast.

The stream formats are the ones Kafka's Java clients write and read:

- gzip: an RFC 1952 stream (several members are accepted on read, as ``GZIPInputStream`` does).
- snappy: xerial framing: a 16-byte header (0x82 ``SNAPPY`` 0x00, int32 version 1, int32
  compatible 1) then ``[int32 length][raw snappy block]`` per 32 KiB of input. A plain snappy
  block without the header is accepted on read (some non-Java clients write that).
- lz4: an LZ4 frame with independent 64 KiB blocks (Kafka refuses linked blocks) and a correct
  header checksum.
- zstd: a standard frame.
"""

from __future__ import annotations

import enum
import struct
from types import ModuleType

from kctl.errors import CorruptRecordError, InvalidArgumentError, UsageError


class Compression(enum.IntEnum):
    """The codec id stored in bits 0-2 of a batch's attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def parse(cls, name: str) -> Compression:
        """The codec for a ``compression.type`` value such as ``"lz4"`` (case-insensitive)."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            choices = ", ".join(member.name.lower() for member in cls)
            raise InvalidArgumentError(
                f"unknown compression type {name!r} (choose one of: {choices})"
            ) from None


GZIP_LEVEL = 6  # java.util.zip.Deflater's default, what Kafka's producer uses for gzip
ZSTD_LEVEL = 3  # Kafka's default compression.zstd.level
SNAPPY_BLOCK_SIZE = 32 * 1024
XERIAL_MAGIC = b"\x82SNAPPY\x00"
XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_BLOCK_LENGTH = struct.Struct(">i")


def _cramjam(codec: Compression) -> ModuleType:
    """The optional ``cramjam`` package, or a UsageError saying how to install it."""
    try:
        import cramjam
    except ImportError:
        raise UsageError(
            f"compression '{codec.name.lower()}' needs the optional package cramjam "
            "(pip install 'kctl[compression]')"
        ) from None
    return cramjam


def compress(codec: Compression, data: bytes | memoryview) -> bytes:
    """Compress a batch's records section as one stream in ``codec``'s Kafka format."""
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        import zlib

        compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31 = gzip wrapper
        return compressor.compress(data) + compressor.flush()
    cramjam = _cramjam(codec)
    if codec == Compression.SNAPPY:
        view = memoryview(data)
        parts = [XERIAL_HEADER]
        for start in range(0, len(view), SNAPPY_BLOCK_SIZE):
            block = bytes(cramjam.snappy.compress_raw(view[start : start + SNAPPY_BLOCK_SIZE]))
            parts.append(_BLOCK_LENGTH.pack(len(block)))
            parts.append(block)
        return b"".join(parts)
    if codec == Compression.LZ4:
        compressor = cramjam.lz4.Compressor(content_checksum=False, block_linked=False)
        compressor.compress(data if isinstance(data, bytes) else bytes(data))  # it takes bytes only
        return bytes(compressor.finish())
    if codec == Compression.ZSTD:
        return bytes(cramjam.zstd.compress(data, level=ZSTD_LEVEL))
    raise InvalidArgumentError(f"unknown compression codec id {int(codec)}")


def decompress(codec: Compression, data: bytes | memoryview) -> bytes:
    """Inverse of :func:`compress`; malformed input raises CorruptRecordError."""
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        return _gunzip(data)
    cramjam = _cramjam(codec)
    try:
        if codec == Compression.SNAPPY:
            return _unsnappy(cramjam, data)
        if codec == Compression.LZ4:
            return bytes(cramjam.lz4.decompress(data))
        if codec == Compression.ZSTD:
            return bytes(cramjam.zstd.decompress(data))
    except CorruptRecordError:
        raise
    except Exception as exc:  # cramjam.DecompressionError and friends
        raise CorruptRecordError(f"{codec.name.lower()} decompression failed: {exc}") from None
    raise CorruptRecordError(f"unknown compression codec id {int(codec)}")


def _gunzip(data: bytes | memoryview) -> bytes:
    import zlib

    parts = []
    rest = bytes(data)
    try:
        while True:
            inflater = zlib.decompressobj(31)
            parts.append(inflater.decompress(rest))
            if not inflater.eof:
                raise CorruptRecordError("gzip stream is truncated")
            rest = inflater.unused_data
            if not rest:
                return b"".join(parts)
    except zlib.error as exc:
        raise CorruptRecordError(f"gzip decompression failed: {exc}") from None


def _unsnappy(cramjam: ModuleType, data: bytes | memoryview) -> bytes:
    view = memoryview(data)
    if bytes(view[:8]) != XERIAL_MAGIC:
        return bytes(cramjam.snappy.decompress_raw(view))
    if len(view) < 16:
        raise CorruptRecordError("snappy xerial header is truncated")
    parts = []
    position = 16
    end = len(view)
    while position < end:
        if position + 4 > end:
            raise CorruptRecordError("snappy xerial block length is truncated")
        (length,) = _BLOCK_LENGTH.unpack_from(view, position)
        position += 4
        if length < 0 or position + length > end:
            raise CorruptRecordError(f"snappy xerial block length {length} runs past the data")
        parts.append(bytes(cramjam.snappy.decompress_raw(view[position : position + length])))
        position += length
    return b"".join(parts)
