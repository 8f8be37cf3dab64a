"""Timestamps as the services store and serve them: UTC, ISO 8601, milliseconds, 'Z'."""

from __future__ import annotations

import time


def utc_now_iso(now: float | None = None) -> str:
    """`now` (seconds since the epoch, default the current time) as 2026-01-31T12:00:00.123Z.

    Milliseconds, because a burst of deliveries lands many rows within one second and "newest
    first" listings should still be ordered by time where they can.
    """
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
