"""Event Grid publish bodies, built by byte formatting so the load generator stays cheap.

Each event is ~250 bytes, about an order event: id, type, subject, time and a small `data`.
With `stamp`, `data.t` carries the send time on the system-wide monotonic clock, which the sink
turns into a publish -> delivery latency.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

EVENT_TYPE = "Bench.OrderCreated"

_EVENT = (
    b'{"id":"bench-%d","eventType":"' + EVENT_TYPE.encode() + b'","subject":"orders/%d",'
    b'"eventTime":"%s","dataVersion":"1.0",'
    b'"data":{"orderId":"ord-%d","customer":"customer-0042","amount":129.95,"currency":"EUR",'
    b'"items":3,"note":"benchmark event, fixed size"%s}}'
)


def event_time(now: float | None = None) -> bytes:
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


def batch(first: int, count: int, when: bytes, stamp: float | None = None) -> bytes:
    """A JSON array of `count` events numbered from `first`, all with eventTime `when`."""
    extra = b',"t":%r' % stamp if stamp is not None else b""
    return b"[" + b",".join(_EVENT % (n, n, when, n, extra) for n in range(first, first + count)) + b"]"


_PROTOTYPE = (
    b'{"eventType":"' + EVENT_TYPE.encode() + b'","subject":"orders/%d",'
    b'"data":{"orderId":"ord-%d","customer":"customer-0042","amount":129.95,"currency":"EUR",'
    b'"items":3,"note":"benchmark event, fixed size"%s}}'
)


def prototype(n: int, stamp: float | None = None) -> bytes:
    """One event in the prototype's `/publish` body: `{"eventType", "data"}` (and a subject)."""
    extra = b',"t":%r' % stamp if stamp is not None else b""
    return _PROTOTYPE % (n, n, extra)


_CLOUD_EVENT = (
    b'{"specversion":"1.0","id":"bench-%d","source":"/bench/orders","type":"' + EVENT_TYPE.encode() + b'",'
    b'"subject":"orders/%d","time":"%s","data":{"orderId":"ord-%d","customer":"customer-0042","amount":129.95,'
    b'"currency":"EUR","items":3,"note":"benchmark event, fixed size"}}'
)


def cloud_batch(first: int, count: int, when: bytes) -> bytes:
    """A CloudEvents JSON batch of `count` events numbered from `first` (for a namespace topic)."""
    return b"[" + b",".join(_CLOUD_EVENT % (n, n, when, n) for n in range(first, first + count)) + b"]"


def request(path: str, host: str, port: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"") -> bytes:
    """A complete keep-alive HTTP/1.1 POST (`extra`: more header lines, each ending in CRLF)."""
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
        % (path.encode(), host.encode(), port, content_type, len(body), extra)
    ) + body
