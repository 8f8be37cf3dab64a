"""What a bench run measures and for how long: the full run's defaults and the quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    duration: float = 5.0  # measured seconds of each throughput run
    warmup: float = 1.0  # seconds run before measuring (connections, caches, JIT-free Python warm-up)
    connections: int = 8  # concurrent publishing clients
    publish_batch: int = 100  # events per publish request where the scenario is not about ingress
    out_batch: int = 100  # maxEventsPerBatch in the output-batching scenario
    latency_rate: int = 1000  # events/s of the end-to-end latency scenario
    latency_duration: float = 8.0
    drain_events: int = 100_000
    memory_events: int = 1_000_000
    deadline: float = 300.0  # the longest any one fill (publishing a fixed count) may take
    drain_deadline: float = 120.0  # the longest the drain is waited for; past it, what drained is reported
    window: int = 2000  # events published ahead of delivery in the fan-out scenarios
    # The same for ingress with subscribers, kept small: a run may get ahead of the deliveries by
    # this many events (it reports only what was also delivered, see scenarios.sustained_rate).
    ingress_window: int = 200
    broker_env: dict[str, str] = field(default_factory=dict)
    py_spy: str | None = None  # py-spy binary: profile the server process of each run
    profile_dir: Path | None = None
    profile_gil: bool = False  # sample only the GIL holder (Python CPU) rather than every busy thread

    @classmethod
    def quick(cls, **overrides) -> Settings:
        """The smoke run: every code path, seconds in all."""
        base = dict(duration=0.5, warmup=0.2, latency_duration=0.5, drain_events=1_000, memory_events=10_000,
                    deadline=60.0, drain_deadline=30.0)
        return cls(**{**base, **overrides})
