"""Start positions, instants and durations as users type them on the command line.

``consume -o`` follows kcat (``beginning``, ``end``, ``stored``, ``N``, ``-N``, ``@TIMESTAMP``);
``group reset-offsets --to-datetime`` and ``--by-duration`` follow Kafka's reset tool, whose
durations are ISO-8601 (``PT1H30M``); short forms such as ``90s`` or ``1h30m`` are accepted too
because they are what people type. Naive datetimes are UTC so that a script means the same
instant on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from kctl.errors import InvalidArgumentError

__all__ = [
    "OffsetKind",
    "OffsetSpec",
    "parse_datetime_ms",
    "parse_duration",
    "parse_offset_spec",
    "parse_timestamp_ms",
]

OffsetKind = Literal["beginning", "end", "stored", "absolute", "relative_end", "timestamp"]

_MAX_OFFSET = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_OFFSET_FORMS = (
    "beginning | end | stored | N (an offset) | -N (N before the end) | "
    "@TIMESTAMP (epoch ms or ISO-8601 such as 2024-05-01T12:00:00Z)"
)
_DATETIME_FORMS = (
    "ISO-8601 such as 2024-05-01, 2024-05-01T12:00:00, 2024-05-01T12:00:00.250Z or "
    "2024-05-01T14:00:00+02:00 (no offset means UTC)"
)
_DURATION_FORMS = (
    "ISO-8601 such as PT1H30M, P1DT2H or PT0.5S, or short forms such as 1500ms, 90s, 5m, 2h, 1d, 1w, 1h30m"
)

_KEYWORDS: dict[str, OffsetKind] = {
    "beginning": "beginning",
    "earliest": "beginning",
    "end": "end",
    "latest": "end",
    "stored": "stored",
}

# Java's Duration.parse: an optional sign, P, days, then T with hours, minutes, seconds; only
# seconds may have a fraction. Letters are case-insensitive.
_ISO_DURATION = re.compile(
    r"(?P<sign>[-+]?)P(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)(?:[.,](?P<frac>\d{1,9}))?S)?)?",
    re.IGNORECASE | re.ASCII,
)
_SHORT_PART = re.compile(r"(\d+)(?:\.(\d+))?(ms|s|m|h|d|w)", re.IGNORECASE | re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


@dataclass(frozen=True, slots=True)
class OffsetSpec:
    """Where a consumer starts reading a partition.

    ``value`` is the offset for ``absolute``, the distance back from the log end for
    ``relative_end`` and epoch ms for ``timestamp``; None for the other kinds.
    """

    kind: OffsetKind
    value: int | None = None


def parse_offset_spec(spec: str) -> OffsetSpec:
    """Parse ``beginning|end|stored|N|-N|@TIMESTAMP`` (``earliest``/``latest`` are aliases)."""
    text = spec.strip()
    kind = _KEYWORDS.get(text.lower())
    if kind is not None:
        return OffsetSpec(kind)
    if text.startswith("@"):
        try:
            return OffsetSpec("timestamp", parse_timestamp_ms(text[1:]))
        except InvalidArgumentError:
            raise InvalidArgumentError(f"invalid offset {spec!r}: expected {_OFFSET_FORMS}") from None
    if text.isascii() and text.isdigit():
        return OffsetSpec("absolute", _bounded(int(text), spec))
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        return OffsetSpec("relative_end", _bounded(int(text[1:]), spec))
    raise InvalidArgumentError(f"invalid offset {spec!r}: expected {_OFFSET_FORMS}")


def parse_timestamp_ms(text: str) -> int:
    """Epoch milliseconds from either digits (already epoch ms) or an ISO-8601 datetime."""
    t = text.strip()
    if t.isascii() and t.isdigit():
        return int(t)
    return parse_datetime_ms(t)


def parse_datetime_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 datetime; naive means UTC, a trailing ``Z`` is UTC."""
    t = text.strip()
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise InvalidArgumentError(f"invalid datetime {text!r}: expected {_DATETIME_FORMS}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def parse_duration(text: str) -> int:
    """A duration in milliseconds from ISO-8601 (Kafka's ``--by-duration``) or a short form.

    ISO durations may carry a sign (``-PT1H``) as Java's ``Duration.parse`` allows; short forms
    are non-negative and may combine units (``1h30m``). Sub-millisecond fractions are truncated.
    """
    t = text.strip()
    if t[:1] in ("P", "p") or t[:2].upper() in ("-P", "+P"):
        return _parse_iso_duration(text, t)
    if not t:
        raise InvalidArgumentError(f"invalid duration {text!r}: expected {_DURATION_FORMS}")
    total = 0
    pos = 0
    for match in _SHORT_PART.finditer(t):
        if match.start() != pos:
            break
        whole, frac, unit = match.groups()
        total += _scaled(whole, frac, _UNIT_MS[unit.lower()])
        pos = match.end()
    if pos != len(t):
        hint = " (add a unit, e.g. ms or s)" if t.isdigit() else ""
        raise InvalidArgumentError(f"invalid duration {text!r}{hint}: expected {_DURATION_FORMS}")
    return total


def _parse_iso_duration(text: str, t: str) -> int:
    m = _ISO_DURATION.fullmatch(t)
    if m is None or not any(m.group(g) for g in ("d", "h", "m", "s")) or t.upper().endswith("T"):
        raise InvalidArgumentError(f"invalid duration {text!r}: expected {_DURATION_FORMS}")
    ms = (
        int(m.group("d") or 0) * 86_400_000
        + int(m.group("h") or 0) * 3_600_000
        + int(m.group("m") or 0) * 60_000
        + _scaled(m.group("s") or "0", m.group("frac"), 1000)
    )
    return -ms if m.group("sign") == "-" else ms


def _scaled(whole: str, frac: str | None, unit_ms: int) -> int:
    """``whole.frac`` units in ms, exactly (no float rounding), truncated to a whole ms."""
    ms = int(whole) * unit_ms
    if frac:
        ms += int(frac) * unit_ms // 10 ** len(frac)
    return ms


def _bounded(n: int, spec: str) -> int:
    if n > _MAX_OFFSET:
        raise InvalidArgumentError(f"invalid offset {spec!r}: larger than the largest offset {_MAX_OFFSET}")
    return n
