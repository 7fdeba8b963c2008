"""The JSON record envelope: one record per line, lossless for any bytes.

``consume -o json`` prints it and ``produce --input json`` reads it back unchanged, so the
mapping between bytes and JSON must round-trip exactly: valid UTF-8 becomes a JSON string, a null
key or value (a tombstone) becomes ``null`` and anything else becomes ``{"base64": "..."}``.
Headers are an ordered list of ``[name, value]`` pairs, duplicates kept, as Kafka allows.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

from kctl.errors import InvalidArgumentError

__all__ = [
    "EnvelopeRecord",
    "RecordLike",
    "bytes_to_json",
    "dumps_envelope",
    "dumps_record",
    "json_to_bytes",
    "parse_envelope_line",
    "record_to_envelope",
]

Headers = Iterable[tuple[str, bytes | None]]

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode = _ENCODER.encode
_b2a = binascii.b2a_base64


class RecordLike(Protocol):
    """What the envelope needs from a stored record (``kctl.storage.records.Record`` fits)."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


class EnvelopeRecord(NamedTuple):
    """One parsed input line. ``offset`` is parsed for validation only: the log assigns offsets."""

    topic: str | None
    partition: int | None
    offset: int | None
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def bytes_to_json(b: bytes | None) -> str | dict[str, str] | None:
    """The JSON form of a key, value or header value: str if valid UTF-8, None, else base64."""
    if b is None:
        return None
    try:
        return str(b, "utf-8")
    except UnicodeDecodeError:
        return {"base64": _b2a(b, newline=False).decode("ascii")}


def json_to_bytes(v: Any, field: str = "value") -> bytes | None:
    """The bytes a JSON key, value or header value stands for; ``field`` names it in errors."""
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(
                f"{field} is not valid Unicode text (a lone surrogate escape?); "
                'send arbitrary bytes as {"base64": "..."}'
            ) from None
    if isinstance(v, dict) and len(v) == 1 and isinstance(v.get("base64"), str):
        try:
            return binascii.a2b_base64(v["base64"], strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgumentError(f"{field} holds invalid base64: {exc}") from None
    raise InvalidArgumentError(f'{field} must be a string, null or {{"base64": "..."}}, got {_describe(v)}')


def record_to_envelope(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
) -> dict[str, Any]:
    """The envelope as a dict whose keys are in the documented order."""
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
        "key": bytes_to_json(key),
        "value": bytes_to_json(value),
        "headers": [[name, bytes_to_json(hv)] for name, hv in headers] if headers else [],
    }


def dumps_envelope(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
) -> str:
    """One compact JSON line (no trailing newline) for a record; called once per consumed record."""
    return _encode(record_to_envelope(topic, partition, offset, timestamp, key, value, headers))


def dumps_record(topic: str, partition: int, record: RecordLike) -> str:
    """:func:`dumps_envelope` for a stored record object."""
    return _encode(
        record_to_envelope(
            topic, partition, record.offset, record.timestamp, record.key, record.value, record.headers
        )
    )


def parse_envelope_line(line: str | bytes, *, lineno: int | None = None) -> EnvelopeRecord:
    """Parse one ``produce --input json`` line; ``value`` is required, every other field optional.

    Unknown fields are ignored (the envelope may grow). ``lineno`` prefixes error messages.
    """
    where = f"line {lineno}: " if lineno is not None else ""
    try:
        obj = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidArgumentError(f"{where}invalid JSON record envelope: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidArgumentError(f"{where}a record envelope must be a JSON object, got {_describe(obj)}")
    if "value" not in obj:
        raise InvalidArgumentError(
            f'{where}the record envelope has no "value" field (use null for a tombstone)'
        )
    try:
        topic = obj.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise InvalidArgumentError(f'"topic" must be a string, got {_describe(topic)}')
        partition = _optional_int(obj, "partition", minimum=0)
        offset = _optional_int(obj, "offset", minimum=0)
        timestamp = _optional_int(obj, "timestamp", minimum=-1)
        key = json_to_bytes(obj.get("key"), '"key"')
        value = json_to_bytes(obj["value"], '"value"')
        headers = _parse_headers(obj.get("headers"))
    except InvalidArgumentError as exc:
        if where:
            raise InvalidArgumentError(f"{where}{exc}") from None
        raise
    return EnvelopeRecord(topic, partition, offset, timestamp, key, value, headers)


def _optional_int(obj: dict[str, Any], name: str, minimum: int) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidArgumentError(f'"{name}" must be an integer, got {_describe(v)}')
    if v < minimum:
        raise InvalidArgumentError(f'"{name}" must be >= {minimum}, got {v}')
    return v


def _parse_headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidArgumentError(f'"headers" must be a list of [name, value] pairs, got {_describe(raw)}')
    headers: list[tuple[str, bytes | None]] = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str):
            raise InvalidArgumentError(
                f'"headers"[{i}] must be a [name, value] pair with a string name, got {_describe(pair)}'
            )
        headers.append((pair[0], json_to_bytes(pair[1], f'"headers"[{i}] value')))
    return headers


def _describe(v: Any) -> str:
    """A short, safe rendering of an offending JSON value for an error message."""
    try:
        text = json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(v), type(v).__name__)
    return f"{kind} {text}" if v is not None else "null"
