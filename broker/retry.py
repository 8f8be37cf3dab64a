"""Azure Event Grid's retry policy, and the one clock every wait in the broker goes through.

Azure documents the schedule after a failed attempt as 10 s, 30 s, 1 min, 5 min, 10 min, 30 min,
1 h, 3 h, 6 h and then every 12 h, with a small randomisation, until `maxDeliveryAttempts` (1-30,
default 30) or `eventTimeToLiveInMinutes` (1-1440, default 1440) runs out, whichever comes first.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

SCHEDULE_SECONDS = (10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)
EVERY_AFTER_SECONDS = 12 * 3600
JITTER = 0.1  # +/- 10 %: "a little randomisation", so retries of a batch of failures do not stampede.

# A webhook answering one of these will not accept the event later either: Azure dead-letters at once.
NON_RETRYABLE_STATUS = frozenset({400, 401, 403, 413})

MAX_ATTEMPTS_RANGE = (1, 30)
TTL_MINUTES_RANGE = (1, 1440)


class Clock:
    """Real wall-clock time, with waits compressed by the time scale (BROKER_TIME_SCALE): every wait
    is multiplied by it, so 0.001 turns Azure's 10 s first retry into 10 ms.

    Timestamps stay real (what the dashboard and the dead-letter records show); only durations the
    broker waits for -- retry delays, time-to-live, the response timeout is NOT scaled -- shrink.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale

    def now(self) -> float:
        return time.time()

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_delivery_attempts: int = 30
    event_ttl_minutes: int = 1440

    def delay_after(self, attempts: int, rng: random.Random | None = None) -> float:
        """Unscaled seconds to wait after the `attempts`-th failed attempt (1-based)."""
        base = SCHEDULE_SECONDS[attempts - 1] if attempts <= len(SCHEDULE_SECONDS) else EVERY_AFTER_SECONDS
        spread = (rng or random).uniform(-JITTER, JITTER)
        return base * (1 + spread)

    @property
    def ttl_seconds(self) -> float:
        return self.event_ttl_minutes * 60.0


def classify(status_code: int | None) -> str:
    """'delivered', 'retry' or 'reject' (non-retryable) for an HTTP status; None = no response."""
    if status_code is not None and 200 <= status_code <= 204:
        return "delivered"
    if status_code in NON_RETRYABLE_STATUS:
        return "reject"
    return "retry"
