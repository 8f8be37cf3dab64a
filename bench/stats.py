"""Percentiles, the one way every latency in the bench is summarised."""

from __future__ import annotations

from collections.abc import Sequence


def summary(samples: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max (nearest rank) and the sample count; None values when there are none."""
    if not samples:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(samples)
    n = len(ordered)

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(p * n + 0.5) - 1))], 3)

    return {"n": n, "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": round(ordered[-1], 3)}
