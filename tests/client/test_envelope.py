from __future__ import annotations

import json
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.client.envelope import (
    EnvelopeRecord,
    bytes_to_json,
    dumps_envelope,
    dumps_record,
    json_to_bytes,
    parse_envelope_line,
    record_to_envelope,
)
from kctl.errors import InvalidArgumentError


class FakeRecord(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


# -- bytes <-> JSON value ------------------------------------------------------------------------


def test_bytes_to_json_forms() -> None:
    assert bytes_to_json(None) is None
    assert bytes_to_json(b"") == ""
    assert bytes_to_json("héllo ✓".encode()) == "héllo ✓"
    assert bytes_to_json(b"\xff\x00") == {"base64": "/wA="}
    # A lone surrogate encoded the lax way is not valid UTF-8: it must go through base64.
    assert bytes_to_json(b"\xed\xa0\x80") == {"base64": "7aCA"}
    assert bytes_to_json(bytearray(b"ab")) == "ab"
    assert bytes_to_json(memoryview(b"ab")) == "ab"


def test_json_to_bytes_forms() -> None:
    assert json_to_bytes(None) is None
    assert json_to_bytes("") == b""
    assert json_to_bytes("héllo") == "héllo".encode()
    assert json_to_bytes({"base64": "/wA="}) == b"\xff\x00"
    assert json_to_bytes({"base64": ""}) == b""


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (1, "got number 1"),
        (True, "got boolean true"),
        (1.5, "got number 1.5"),
        (["a"], "got array"),
        ({"b64": "AA=="}, "got object"),
        ({"base64": "AA==", "x": 1}, "got object"),
        ({"base64": 5}, "got object"),
    ],
)
def test_json_to_bytes_rejects_other_types(bad: object, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match="must be a string, null or") as info:
        json_to_bytes(bad, '"key"')
    assert fragment in str(info.value)
    assert '"key"' in str(info.value)


@pytest.mark.parametrize("bad", ["not base64!", "AAA", "AA==AA", "é"])
def test_json_to_bytes_rejects_invalid_base64(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid base64"):
        json_to_bytes({"base64": bad})


def test_json_to_bytes_rejects_lone_surrogate() -> None:
    with pytest.raises(InvalidArgumentError, match="base64"):
        json_to_bytes(json.loads('"\\ud800"'))


# -- output --------------------------------------------------------------------------------------


def test_record_to_envelope_key_order_and_values() -> None:
    env = record_to_envelope(
        "orders", 2, 17, 1700000000000, b"k", b"\x80", [("a", b"1"), ("a", None), ("b", b"\xfe")]
    )
    assert list(env) == ["topic", "partition", "offset", "timestamp", "key", "value", "headers"]
    assert env == {
        "topic": "orders",
        "partition": 2,
        "offset": 17,
        "timestamp": 1700000000000,
        "key": "k",
        "value": {"base64": "gA=="},
        "headers": [["a", "1"], ["a", None], ["b", {"base64": "/g=="}]],
    }


def test_dumps_envelope_is_one_compact_line() -> None:
    line = dumps_envelope("t", 0, 5, 123, None, "ü\n\u2028".encode(), ())
    assert line == (
        '{"topic":"t","partition":0,"offset":5,"timestamp":123,"key":null,"value":"ü\\n\u2028","headers":[]}'
    )
    assert "\n" not in line


def test_dumps_record_takes_a_record_object() -> None:
    rec = FakeRecord(9, 42, b"key", None, (("h", b"v"),))
    assert dumps_record("t", 1, rec) == dumps_envelope("t", 1, 9, 42, b"key", None, (("h", b"v"),))
    assert json.loads(dumps_record("t", 1, rec))["value"] is None


# -- input ---------------------------------------------------------------------------------------


def test_parse_minimal_line() -> None:
    rec = parse_envelope_line('{"value": "hello"}')
    assert rec == EnvelopeRecord(None, None, None, None, None, b"hello", [])


def test_parse_full_line_bytes_input_and_trailing_newline() -> None:
    line = (
        b'{"topic":"t","partition":3,"offset":8,"timestamp":99,"key":{"base64":"AAE="},'
        b'"value":null,"headers":[["x","1"],["x",null]]}\n'
    )
    rec = parse_envelope_line(line)
    assert rec.topic == "t"
    assert rec.partition == 3
    assert rec.offset == 8
    assert rec.timestamp == 99
    assert rec.key == b"\x00\x01"
    assert rec.value is None
    assert rec.headers == [("x", b"1"), ("x", None)]


def test_parse_ignores_unknown_fields_and_accepts_nulls() -> None:
    rec = parse_envelope_line(
        '{"value":"v","extra":{"a":1},"topic":null,"partition":null,"timestamp":null,"headers":null}'
    )
    assert rec == EnvelopeRecord(None, None, None, None, None, b"v", [])


def test_parse_what_consume_prints_round_trips() -> None:
    line = dumps_envelope("t", 4, 10, 77, b"\xff", "✓".encode(), [("n", b"\x00"), ("n", None)])
    rec = parse_envelope_line(line)
    assert rec == EnvelopeRecord("t", 4, 10, 77, b"\xff", "✓".encode(), [("n", b"\x00"), ("n", None)])


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("", "invalid JSON"),
        ("{not json", "invalid JSON"),
        (b'{"value": "\xff"}', "invalid JSON"),
        ("[1, 2]", "must be a JSON object, got array"),
        ('"text"', "must be a JSON object, got string"),
        ('{"key": "k"}', 'no "value" field'),
        ('{"value": 5}', '"value" must be a string, null or'),
        ('{"value": "v", "key": []}', '"key" must be a string, null or'),
        ('{"value": "v", "topic": 1}', '"topic" must be a string'),
        ('{"value": "v", "partition": "0"}', '"partition" must be an integer'),
        ('{"value": "v", "partition": true}', '"partition" must be an integer'),
        ('{"value": "v", "partition": -1}', '"partition" must be >= 0'),
        ('{"value": "v", "offset": 1.0}', '"offset" must be an integer'),
        ('{"value": "v", "timestamp": -2}', '"timestamp" must be >= -1'),
        ('{"value": "v", "timestamp": 1.5e12}', '"timestamp" must be an integer'),
        ('{"value": "v", "headers": {"a": "b"}}', '"headers" must be a list'),
        ('{"value": "v", "headers": [["a"]]}', '"headers"[0] must be a [name, value] pair'),
        ('{"value": "v", "headers": [["a", "b"], [1, "b"]]}', '"headers"[1] must be'),
        ('{"value": "v", "headers": [["a", 3]]}', '"headers"[0] value must be'),
        ('{"value": {"base64": "%%%"}}', "invalid base64"),
    ],
)
def test_parse_errors_name_the_problem(line: str | bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_envelope_line(line)
    assert fragment in str(info.value)


def test_parse_error_carries_line_number() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^line 7: .*\"partition\" must be an integer"):
        parse_envelope_line('{"value":"v","partition":"x"}', lineno=7)
    with pytest.raises(InvalidArgumentError, match=r"^line 3: invalid JSON"):
        parse_envelope_line("{", lineno=3)


def test_error_message_truncates_huge_values() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_envelope_line(json.dumps({"value": ["x" * 10_000]}))
    assert len(str(info.value)) < 200


# -- round trip ----------------------------------------------------------------------------------

maybe_bytes = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.text(max_size=32).map(lambda s: s.encode("utf-8")),
)
headers = st.lists(st.tuples(st.text(max_size=12), maybe_bytes), max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    topic=st.text(alphabet="abcXYZ09._-", min_size=1, max_size=20),
    partition=st.integers(min_value=0, max_value=10_000),
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    timestamp=st.integers(min_value=-1, max_value=2**53),
    key=maybe_bytes,
    value=maybe_bytes,
    hdrs=headers,
)
def test_round_trip_is_lossless(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int,
    key: bytes | None,
    value: bytes | None,
    hdrs: list[tuple[str, bytes | None]],
) -> None:
    line = dumps_envelope(topic, partition, offset, timestamp, key, value, hdrs)
    assert "\n" not in line
    rec = parse_envelope_line(line.encode("utf-8"))
    assert rec == EnvelopeRecord(topic, partition, offset, timestamp, key, value, hdrs)
    # And what a consumer prints out of the re-parsed record is the same line again.
    assert dumps_envelope(topic, partition, offset, timestamp, rec.key, rec.value, rec.headers) == line
