"""The strided decoder for batches of fixed-size values agrees with the general decoder, and
never misreads a records section of any other shape."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kctl.errors import CorruptRecordError
from kctl.storage import records as R


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 300), st.integers(0, 300), st.binary(min_size=1, max_size=1))
def test_uniform_values_match_the_encoded_values(count, size, fill):
    values = [fill * size] * count
    batch = R.encode_batch(values, timestamp=5)
    _header, data = R._batch_records(batch, 0, True)
    got = R._uniform_values(data, count)
    assert got == values
    assert R.decode_values(batch)[1] == values
    assert [r.value for r in R.decode_batch(batch)[1]] == values


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 200), st.integers(0, 120), st.data())
def test_a_damaged_section_is_never_misread(count, size, data):
    values = [bytes([i % 251]) * size for i in range(count)]
    batch = R.encode_batch(values, timestamp=5)
    header, section = R._batch_records(batch, 0, True)
    damaged = bytearray(section)
    where = data.draw(st.integers(0, len(damaged) - 1))
    damaged[where] ^= data.draw(st.integers(1, 255))
    got = R._uniform_values(bytes(damaged), count)
    if got is None:
        return
    try:
        general = [r.value for r in R._decode_records(header, bytes(damaged))]
    except CorruptRecordError:
        general = None
    assert got == general  # only a flip inside a value can keep the shape, and then both agree
