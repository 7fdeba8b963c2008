"""--expr: compiled at start (usage errors before any record), evaluated per record, results
converted to record bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kctl.errors import InvalidArgumentError, StreamError
from kctl.storage.records import Record
from kctl.streams.expr import RecordExpression, map_result, to_bytes

REC = Record(7, 1_700_000_000_000, b"alice", b'{"amount": 12.5, "tags": ["a"]}', (("src", b"web"), ("src", b"app")))


def test_names_available_to_an_expression():
    e = RecordExpression("(key, text, headers['src'], topic, partition, offset, timestamp, "
                         "json.loads(value)['amount'])")
    assert e.evaluate("orders", 2, REC) == (b"alice", REC.value.decode(), b"app", "orders", 2, 7,
                                            1_700_000_000_000, 12.5)


def test_comprehensions_and_lambdas_see_the_record():
    e = RecordExpression("[c for c in text if c not in value.decode()[:1]] and (lambda k: k + key)(b'>')")
    assert e.evaluate("t", 0, REC) == b">alice"


def test_tombstone_gives_none_text():
    e = RecordExpression("text is None and value is None")
    assert e.evaluate("t", 0, Record(0, 0, b"k", None, ())) is True


@pytest.mark.parametrize("source,fragment", [
    ("value.upper(", "never closed"),
    ("value +", "invalid --expr"),
    ("", "empty"),
    ("x = 1", "invalid --expr"),
    ("valu.upper()", "unknown name(s) valu"),
])
def test_bad_expressions_are_usage_errors_at_start(source, fragment):
    with pytest.raises(InvalidArgumentError) as info:
        RecordExpression(source)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2


def test_a_failure_names_the_record():
    e = RecordExpression("int(text)")
    with pytest.raises(StreamError) as info:
        e.evaluate("orders", 1, REC)
    assert "orders-1@7" in str(info.value) and "ValueError" in str(info.value)
    assert info.value.exit_code == 1


@pytest.mark.parametrize("result,expected", [
    (b"raw", b"raw"), ("héllo", "héllo".encode()), (None, None), (42, b"42"), (2.5, b"2.5"), (True, b"true"),
    ({"a": [1, 2]}, b'{"a":[1,2]}'), (bytearray(b"ba"), b"ba"),
])
def test_results_become_bytes(result, expected):
    assert to_bytes(result, "x") == expected


def test_unsupported_result_is_an_error():
    with pytest.raises(StreamError, match="is a set"):
        to_bytes({1}, "the result")


def test_map_result_tuple_changes_the_key():
    assert map_result((None, "v"), b"k", "t-0@1") == (None, b"v")
    assert map_result(("new", 3), b"k", "t-0@1") == (b"new", b"3")
    assert map_result("v", b"k", "t-0@1") == (b"k", b"v")
    with pytest.raises(StreamError, match="tuple of 3"):
        map_result((1, 2, 3), b"k", "t-0@1")


@given(st.binary(max_size=64))
def test_identity_map_round_trips_any_value(value):
    e = RecordExpression("value")
    rec = Record(0, 0, None, value, ())
    assert map_result(e.evaluate("t", 0, rec), None, "t-0@0") == (None, value)
