"""kcat's ``-f`` output format, compiled once and applied to every consumed record.

A format such as ``'%t [%p] @%o: %k=%s\\n'`` is parsed once into a ``bytes`` template plus one
small getter per token; rendering a record is a single ``template % values``. The default
``%s\\n`` skips even that: it is the value plus a newline. Output is bytes because keys and
values are arbitrary bytes and are written to stdout unchanged.

Tokens: ``%t`` topic, ``%p`` partition, ``%o`` offset, ``%k`` key, ``%s`` value, ``%T`` timestamp
(epoch ms), ``%h`` headers as ``name=value`` joined by ``,``, ``%K``/``%S`` key/value length (-1
for null), ``%%`` a percent sign. Escapes: ``\\n`` ``\\t`` ``\\r`` ``\\\\`` ``\\0`` and ``\\xHH``.
A null key or value prints as ``null`` (empty by default, like kcat without ``-Z``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import Any

from kctl.errors import InvalidArgumentError

__all__ = ["DEFAULT_FORMAT", "TOKENS", "Formatter", "compile_format"]

DEFAULT_FORMAT = "%s\\n"

Headers = Iterable[tuple[str, bytes | None]]
Formatter = Callable[[str, int, int, int, "bytes | None", "bytes | None", Headers], bytes]
"""``(topic, partition, offset, timestamp, key, value, headers) -> bytes``."""

TOKENS: dict[str, str] = {
    "t": "topic",
    "p": "partition",
    "o": "offset",
    "k": "key",
    "s": "value",
    "T": "timestamp (epoch ms)",
    "h": "headers (name=value,...)",
    "K": "key length (-1 for null)",
    "S": "value length (-1 for null)",
    "%": "a literal %",
}

_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", "0": b"\0"}
_HEX = frozenset("0123456789abcdefABCDEF")

# One compiled format: literal bytes and token letters, in order.
_Part = bytes | str


def compile_format(fmt: str, *, null: bytes = b"") -> Formatter:
    """Compile a kcat ``-f`` format into a function rendering one record as bytes.

    ``null`` is what a null key, value or header value prints as. Unknown tokens or escapes
    raise :class:`~kctl.errors.InvalidArgumentError`.
    """
    parts = _parse(fmt)
    if parts == ["s", b"\n"]:
        line_null = null + b"\n"

        def value_line(
            topic: str,
            partition: int,
            offset: int,
            timestamp: int,
            key: bytes | None,
            value: bytes | None,
            headers: Headers,
        ) -> bytes:
            return line_null if value is None else value + b"\n"

        return value_line
    if parts == ["s"]:

        def value_only(
            topic: str,
            partition: int,
            offset: int,
            timestamp: int,
            key: bytes | None,
            value: bytes | None,
            headers: Headers,
        ) -> bytes:
            return null if value is None else value

        return value_only

    template_parts: list[bytes] = []
    getters: list[Callable[[tuple[Any, ...]], Any]] = []
    for part in parts:
        if isinstance(part, bytes):
            template_parts.append(part.replace(b"%", b"%%"))
            continue
        spec, getter = _token(part, null)
        template_parts.append(spec)
        getters.append(getter)
    template = b"".join(template_parts)

    if not getters:
        constant = template % ()

        def literal(
            topic: str,
            partition: int,
            offset: int,
            timestamp: int,
            key: bytes | None,
            value: bytes | None,
            headers: Headers,
        ) -> bytes:
            return constant

        return literal
    if len(getters) == 1:
        (only,) = getters

        def render_one(*record: Any) -> bytes:
            return template % (only(record),)

        return render_one

    def render(*record: Any) -> bytes:
        return template % tuple([g(record) for g in getters])

    return render


def _parse(fmt: str) -> list[_Part]:
    """Split ``fmt`` into literal bytes (escapes resolved, adjacent literals merged) and tokens."""
    parts: list[_Part] = []
    buf = bytearray()
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c == "%":
            if i + 1 >= n:
                raise InvalidArgumentError(_format_error(fmt, "a lone '%' at the end (write %% for '%')"))
            t = fmt[i + 1]
            if t == "%":
                buf += b"%"
            elif t in TOKENS:
                if buf:
                    parts.append(bytes(buf))
                    buf.clear()
                parts.append(t)
            else:
                raise InvalidArgumentError(_format_error(fmt, f"unknown token '%{t}'"))
            i += 2
        elif c == "\\":
            if i + 1 >= n:
                raise InvalidArgumentError(_format_error(fmt, "a lone '\\' at the end (write \\\\)"))
            e = fmt[i + 1]
            if e in _ESCAPES:
                buf += _ESCAPES[e]
                i += 2
            elif e == "x" and i + 3 < n and fmt[i + 2] in _HEX and fmt[i + 3] in _HEX:
                buf.append(int(fmt[i + 2 : i + 4], 16))
                i += 4
            else:
                raise InvalidArgumentError(_format_error(fmt, f"unknown escape '\\{e}'"))
        else:
            buf += c.encode("utf-8", "surrogateescape")
            i += 1
    if buf:
        parts.append(bytes(buf))
    return parts


def _token(letter: str, null: bytes) -> tuple[bytes, Callable[[tuple[Any, ...]], Any]]:
    """The ``bytes %`` conversion and the getter (over the record's argument tuple) of a token."""
    if letter == "t":
        return b"%b", _topic
    if letter == "p":
        return b"%d", itemgetter(1)
    if letter == "o":
        return b"%d", itemgetter(2)
    if letter == "T":
        return b"%d", itemgetter(3)
    if letter == "K":
        return b"%d", _key_len
    if letter == "S":
        return b"%d", _value_len
    if letter == "k":
        return b"%b", lambda r: null if r[4] is None else r[4]
    if letter == "s":
        return b"%b", lambda r: null if r[5] is None else r[5]
    if letter == "h":
        return b"%b", lambda r: _headers(r[6], null)
    raise AssertionError(letter)  # _parse only yields known tokens


def _topic(r: tuple[Any, ...]) -> bytes:
    return r[0].encode("utf-8")


def _key_len(r: tuple[Any, ...]) -> int:
    return -1 if r[4] is None else len(r[4])


def _value_len(r: tuple[Any, ...]) -> int:
    return -1 if r[5] is None else len(r[5])


def _headers(headers: Headers, null: bytes) -> bytes:
    if not headers:
        return b""
    return b",".join([name.encode("utf-8") + b"=" + (null if v is None else v) for name, v in headers])


def _format_error(fmt: str, problem: str) -> str:
    accepted = " ".join(f"%{t}" for t in TOKENS)
    return f"invalid format {fmt!r}: {problem}; tokens: {accepted}; escapes: \\n \\t \\r \\\\ \\0 \\xHH"
