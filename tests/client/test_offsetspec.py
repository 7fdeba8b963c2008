from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kctl.client.offsetspec import (
    OffsetSpec,
    parse_datetime_ms,
    parse_duration,
    parse_offset_spec,
    parse_timestamp_ms,
)
from kctl.errors import InvalidArgumentError

# 2024-05-01T12:00:00Z
NOON = 1714564800000


# -- offset specs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("beginning", OffsetSpec("beginning")),
        ("earliest", OffsetSpec("beginning")),
        ("end", OffsetSpec("end")),
        ("latest", OffsetSpec("end")),
        ("stored", OffsetSpec("stored")),
        (" END ", OffsetSpec("end")),
        ("0", OffsetSpec("absolute", 0)),
        ("42", OffsetSpec("absolute", 42)),
        ("-10", OffsetSpec("relative_end", 10)),
        ("-0", OffsetSpec("relative_end", 0)),
        ("@1714564800000", OffsetSpec("timestamp", NOON)),
        ("@0", OffsetSpec("timestamp", 0)),
        ("@2024-05-01T12:00:00Z", OffsetSpec("timestamp", NOON)),
        ("@2024-05-01T12:00:00", OffsetSpec("timestamp", NOON)),
        ("@2024-05-01T14:00:00+02:00", OffsetSpec("timestamp", NOON)),
        ("@2024-05-01T12:00:00.250Z", OffsetSpec("timestamp", NOON + 250)),
        ("@2024-05-01", OffsetSpec("timestamp", NOON - 12 * 3_600_000)),
    ],
)
def test_offset_specs(text: str, expected: OffsetSpec) -> None:
    assert parse_offset_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "begin", "+5", "5.0", "--5", "-", "@", "@yesterday", "@-5", "1e3", "٣", "@2024-13-01"],
)
def test_invalid_offset_specs_list_the_accepted_forms(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_offset_spec(text)
    message = str(info.value)
    assert repr(text) in message
    assert "beginning | end | stored" in message


def test_offset_beyond_int64_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="larger than the largest offset"):
        parse_offset_spec("9" * 30)
    assert parse_offset_spec(str(2**63 - 1)) == OffsetSpec("absolute", 2**63 - 1)


def test_offset_spec_is_frozen_and_hashable() -> None:
    spec = OffsetSpec("absolute", 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.value = 4  # type: ignore[misc]
    assert {spec, OffsetSpec("absolute", 3)} == {spec}


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_numeric_offsets_round_trip(n: int) -> None:
    assert parse_offset_spec(str(n)) == OffsetSpec("absolute", n)
    assert parse_offset_spec(f"-{n}") == OffsetSpec("relative_end", n)


# -- datetimes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", NOON),
        ("2024-05-01T12:00:00", NOON),
        ("2024-05-01 12:00:00", NOON),
        ("2024-05-01T12:00:00.001", NOON + 1),
        ("2024-05-01T12:00:00.000999", NOON),  # sub-millisecond part is dropped
        ("2024-05-01T07:30:00-04:30", NOON),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_parse_datetime_ms(text: str, expected: int) -> None:
    assert parse_datetime_ms(text) == expected


@pytest.mark.parametrize("text", ["", "now", "2024-02-30", "12:00", "1714564800000"])
def test_parse_datetime_ms_rejects(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="ISO-8601"):
        parse_datetime_ms(text)


def test_parse_timestamp_ms_takes_digits_or_iso() -> None:
    assert parse_timestamp_ms("1714564800000") == NOON
    assert parse_timestamp_ms("2024-05-01T12:00:00Z") == NOON


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
        ),
    )
)
def test_parse_datetime_ms_agrees_with_isoformat(dt: datetime) -> None:
    expected = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_datetime_ms(dt.isoformat()) == expected
    assert parse_datetime_ms(dt.astimezone(UTC).replace(tzinfo=None).isoformat()) == expected


# -- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H30M", 5_400_000),
        ("P1DT2H", 93_600_000),
        ("P2D", 172_800_000),
        ("PT0.5S", 500),
        ("PT1,25S", 1250),
        ("PT0.0005S", 0),
        ("PT10S", 10_000),
        ("pt15m", 900_000),
        ("-PT1H", -3_600_000),
        ("+PT1M", 60_000),
        ("PT0S", 0),
        ("1500ms", 1500),
        ("90s", 90_000),
        ("5m", 300_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1h30m", 5_400_000),
        ("1.5h", 5_400_000),
        ("0.1s", 100),
        ("2H", 7_200_000),
        (" 10s ", 10_000),
    ],
)
def test_parse_duration(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1DT",
        "P1H",
        "PT1.5H",
        "PT1D",
        "P1Y",
        "P1W",
        "5",
        "5x",
        "m5",
        "-5m",
        "5 m",
        "1h 30m",
        "h",
    ],
)
def test_parse_duration_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_duration(text)
    assert "PT1H30M" in str(info.value)
    assert "90s" in str(info.value)


def test_bare_number_duration_hints_at_a_unit() -> None:
    with pytest.raises(InvalidArgumentError, match="add a unit"):
        parse_duration("3600")


@given(
    d=st.integers(min_value=0, max_value=400),
    h=st.integers(min_value=0, max_value=100),
    m=st.integers(min_value=0, max_value=100),
    ms=st.integers(min_value=0, max_value=999_999),
)
def test_iso_and_short_forms_agree(d: int, h: int, m: int, ms: int) -> None:
    seconds = f"{ms // 1000}.{ms % 1000:03d}"
    iso = parse_duration(f"P{d}DT{h}H{m}M{seconds}S")
    short = parse_duration(f"{d}d{h}h{m}m{ms}ms")
    assert iso == short == ((d * 24 + h) * 60 + m) * 60_000 + ms
