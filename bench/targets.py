"""The three targets of every scenario and the moves scenarios make on them: start one, subscribe
the sinks, drive load at it (optionally under py-spy) and read the sinks.

  broker    `python -m broker`, its own temporary store, LOG_LEVEL=WARNING
  baseline  the prototype reproduced (bench.baseline: Flask dev server, synchronous requests.post)
  ceiling   the raw asyncio endpoint (bench.sink), which answers without doing anything
"""

from __future__ import annotations

import time
from pathlib import Path

from . import profile
from .procs import HOST, Process, Stack, call, run_load
from .settings import Settings

TOPIC = "bench"
DEFAULT_TOPIC = "default"  # the prototype's /publish goes to the broker's default topic
PUBLISH_PATH = f"/topics/{TOPIC}/api/events"
PROTOTYPE_PATH = "/publish"
SINK_PATH = "/events"
TARGETS = ("broker", "baseline", "ceiling")
LOAD_SLACK_SECONDS = 60.0  # on top of a run's own duration before the generator is given up on


def start(kind: str, stack: Stack, s: Settings) -> Process:
    if kind == "broker":
        proc = stack.broker(**s.broker_env)
        status, body = call(proc.port, "PUT", f"/topics/{TOPIC}", {"properties": {}})
        expect(status in (200, 201), f"PUT topic answered {status}: {body}")
        return proc
    if kind == "baseline":
        return stack.baseline()
    return stack.sink("ceiling")


def subscribe(kind: str, proc: Process, sinks: list[Process], batch: int = 1, handshake: bool = False, topic: str = TOPIC) -> None:
    """Subscribe each sink to everything on the bench topic, or another (the ceiling has no subscriptions)."""
    for i, sink in enumerate(sinks):
        if kind == "broker":
            dest = {"endpointUrl": sink.url(SINK_PATH), "maxEventsPerBatch": batch,
                    "preferredBatchSizeInKilobytes": 1024, "skipValidation": not handshake}
            body = {"properties": {"destination": {"endpointType": "WebHook", "properties": dest}}}
            status, answer = call(proc.port, "PUT", f"/topics/{topic}/eventSubscriptions/sink-{i}", body)
        elif kind == "baseline":
            status, answer = call(proc.port, "POST", "/subscribe", {"eventType": "*", "endpoint": sink.url(SINK_PATH), "maxEventsPerBatch": batch})
        else:
            continue
        expect(status in (200, 201), f"subscribing {sink.url()} on the {kind} answered {status}: {answer}")


def load(proc: Process, spec: dict, timeout: float, s: Settings) -> dict:
    """Run the generator against `proc`, adding how many cores the server used meanwhile."""
    cpu, wall = proc.cpu_seconds(), time.monotonic()
    with profiled(proc, s, "load"):
        result = run_load(spec, timeout)
    result["server_cores"] = round((proc.cpu_seconds() - cpu) / (time.monotonic() - wall), 2)
    expect(result["errors"] == 0 and not result["bad_statuses"],
            f"requests failed: {result['errors']} errors, statuses {result['bad_statuses']}")
    return result


def profiled(proc: Process, s: Settings, phase: str):
    """py-spy on `proc` for the block, when the run asked for profiles."""
    out = (s.profile_dir or Path(".")) / f"{proc.workdir.parent.name}-{proc.workdir.name}-{proc.name}-{phase}.txt"
    return profile.record(s.py_spy, proc.pid, out, gil=s.profile_gil)


def sink_ref(sink: Process) -> dict:
    return {"host": HOST, "port": sink.port}


def sink_stats(sink: Process) -> dict:
    return call(sink.port, "GET", "/stats")[1]


def wait_for_sinks(sinks: list[Process], events: int, deadline: float) -> float | None:
    """Seconds until the sinks together counted `events`, or None at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        if sum(sink_stats(s)["events"] for s in sinks) >= events:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)
