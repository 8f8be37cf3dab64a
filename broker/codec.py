"""JSON for event payloads: orjson's speed, without altering numbers a publisher sent.

orjson reads integers beyond 64 bits as floats and refuses to write them; the broker must deliver
`data` value for value. Bodies that might hold such an integer (a run of 20+ digits) go through the
standard library instead, which keeps them exact -- a rare, slower path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError  # orjson.JSONDecodeError is a subclass
_LONG_DIGITS = re.compile(rb"\d{20}")


def _reject_constant(name: str) -> Any:
    raise JSONDecodeError(f"{name} is not valid JSON", name, 0)


def loads(data: bytes | str) -> Any:
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        return orjson.loads(raw)
    return json.loads(raw, parse_constant=_reject_constant)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits (or a type neither library can write)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
