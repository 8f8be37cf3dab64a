"""JSON for event payloads: orjson's speed, without altering numbers a publisher sent.

orjson reads integers beyond 64 bits as floats and refuses to write them; the broker must deliver
`data` value for value. Bodies that might hold such an integer (a run of 20+ digits) go through the
standard library instead, which keeps them exact -- a rare, slower path.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError  # orjson.JSONDecodeError is a subclass
# A run of 20+ digits, found by mapping every digit to "0" and searching for twenty of them: both
# steps run in C, ten times faster than the equivalent regular expression on a 100-event batch.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_TWENTY_DIGITS = b"0" * 20


def _has_long_digits(raw: bytes) -> bool:
    return _TWENTY_DIGITS in raw.translate(_DIGITS_TO_ZERO)


def _reject_constant(name: str) -> Any:
    raise JSONDecodeError(f"{name} is not valid JSON", name, 0)


def loads(data: bytes | str) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    if not _has_long_digits(raw):
        return orjson.loads(raw)
    return json.loads(raw, parse_constant=_reject_constant)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits (or a type neither library can write)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
