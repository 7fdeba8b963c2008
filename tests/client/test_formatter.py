from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.client.formatter import DEFAULT_FORMAT, TOKENS, compile_format
from kctl.errors import InvalidArgumentError

HEADERS = (("trace", b"abc"), ("trace", None), ("ü", b"\xff"))
RECORD = ("orders", 3, 1234, 1700000000123, b"k\x00ey", b"va\xfflue", HEADERS)
NULLS = ("orders", 0, 0, -1, None, None, ())


def render(fmt: str, record: tuple = RECORD, **kwargs: bytes) -> bytes:
    return compile_format(fmt, **kwargs)(*record)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%t", b"orders"),
        ("%p", b"3"),
        ("%o", b"1234"),
        ("%k", b"k\x00ey"),
        ("%s", b"va\xfflue"),
        ("%T", b"1700000000123"),
        ("%h", "trace=abc,trace=,ü=".encode() + b"\xff"),
        ("%K", b"4"),
        ("%S", b"6"),
        ("%%", b"%"),
    ],
)
def test_every_token(fmt: str, expected: bytes) -> None:
    assert render(fmt) == expected


def test_every_token_is_tested() -> None:
    assert set(TOKENS) == set("tpokshTKS%")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("\\n", b"\n"),
        ("\\t", b"\t"),
        ("\\r", b"\r"),
        ("\\\\", b"\\"),
        ("\\0", b"\x00"),
        ("\\x1f", b"\x1f"),
        ("\\xFF", b"\xff"),
        ("a\\tb\\nc", b"a\tb\nc"),
    ],
)
def test_every_escape(fmt: str, expected: bytes) -> None:
    assert render(fmt) == expected


def test_null_key_and_value() -> None:
    assert render("[%k][%s][%K][%S][%h]", NULLS) == b"[][][-1][-1][]"
    assert render("[%k][%s][%h]", ("t", 0, 0, 0, None, None, (("h", None),)), null=b"NULL") == (
        b"[NULL][NULL][h=NULL]"
    )


def test_empty_key_and_value_are_not_null() -> None:
    assert render("%K %S|%k|%s", ("t", 0, 0, 0, b"", b"", ())) == b"0 0||"


def test_combined_format_kcat_style() -> None:
    assert render("%t [%p] at %o: %k=%s (%T) 100%%\\n") == (
        b"orders [3] at 1234: k\x00ey=va\xfflue (1700000000123) 100%\n"
    )


def test_literal_percent_signs_survive_bytes_formatting() -> None:
    # Literal text is inserted into a bytes % template: its own % must not be read as a conversion.
    assert render("%%d %%s %p %%") == b"%d %s 3 %"


def test_non_ascii_literal_and_topic_are_utf8() -> None:
    assert render("→%t←", ("tøpic", 0, 0, 0, None, b"", ())) == "→tøpic←".encode()


def test_default_format_fast_path() -> None:
    fmt = compile_format(DEFAULT_FORMAT)
    assert DEFAULT_FORMAT == "%s\\n"
    assert fmt(*RECORD) == b"va\xfflue\n"
    assert fmt(*NULLS) == b"\n"
    assert compile_format(DEFAULT_FORMAT, null=b"NULL")(*NULLS) == b"NULL\n"


def test_value_only_and_literal_only() -> None:
    assert render("%s") == b"va\xfflue"
    assert render("%s", NULLS) == b""
    assert render("") == b""
    assert render("just text\\n") == b"just text\n"


@pytest.mark.parametrize(
    ("fmt", "fragment"),
    [
        ("%x", "unknown token '%x'"),
        ("%s %Z", "unknown token '%Z'"),
        ("abc%", "lone '%'"),
        ("\\q", "unknown escape '\\q'"),
        ("\\x4", "unknown escape '\\x'"),
        ("\\xg0", "unknown escape '\\x'"),
        ("abc\\", "lone '\\'"),
    ],
)
def test_invalid_formats(fmt: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        compile_format(fmt)
    message = str(info.value)
    assert fragment in message
    assert "%t %p %o" in message  # the message lists what is accepted


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=20)),
    value=st.one_of(st.none(), st.binary(max_size=20)),
    partition=st.integers(min_value=0, max_value=1000),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    timestamp=st.integers(min_value=-1, max_value=2**50),
)
def test_tokens_agree_with_a_direct_rendering(
    key: bytes | None, value: bytes | None, partition: int, offset: int, timestamp: int
) -> None:
    fmt = compile_format("%t|%p|%o|%T|%K|%S|%k|%s\\n")
    expected = b"|".join(
        [
            b"t",
            str(partition).encode(),
            str(offset).encode(),
            str(timestamp).encode(),
            str(-1 if key is None else len(key)).encode(),
            str(-1 if value is None else len(value)).encode(),
            key or b"",
            value or b"",
        ]
    )
    assert fmt("t", partition, offset, timestamp, key, value, ()) == expected + b"\n"
