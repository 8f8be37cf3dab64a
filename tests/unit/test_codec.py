"""JSON for event payloads: numbers come back exactly as the publisher sent them."""

from __future__ import annotations

import pytest

from broker import codec


@pytest.mark.parametrize("number", [
    123456789012345678901234567890,  # far beyond 64 bits: orjson alone would make it a float
    18446744073709551616,  # 2**64, twenty digits
    -98765432109876543210,
])
def test_integers_beyond_64_bits_survive_a_round_trip(number):
    body = b'{"data": {"n": %d, "list": [1, %d]}}' % (number, number)
    parsed = codec.loads(body)
    assert parsed["data"]["n"] == number and isinstance(parsed["data"]["n"], int)
    assert codec.loads(codec.dumps(parsed)) == parsed


def test_nineteen_digit_runs_and_long_strings_of_digits_take_the_fast_path_correctly():
    parsed = codec.loads(b'{"a": 1234567890123456789, "id": "x12345678901234567890123", "f": 0.5}')
    assert parsed == {"a": 1234567890123456789, "id": "x12345678901234567890123", "f": 0.5}


def test_invalid_json_raises_the_shared_decode_error():
    with pytest.raises(codec.JSONDecodeError):
        codec.loads(b'{"a": NaN, "b": 12345678901234567890123}')
    with pytest.raises(codec.JSONDecodeError):
        codec.loads(b"{not json")
