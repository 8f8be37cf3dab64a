"""The scenarios. Each runs once per target -- "broker", "baseline", "ceiling" -- in fresh processes
(a `Stack`), and returns a flat dict of measurements plus the load generator's raw result.

Every scenario sends every target the same request bytes. What "the same" means where the targets
differ in kind:
  * ingress: publish requests; the ceiling answers them without storing anything.
  * fan-out and backlog drain: the ceiling is the delivery requests themselves, sent by the load
    generator straight to the subscribers -- the most any broker on this machine could deliver.
  * end-to-end latency: the ceiling is one HTTP hop, publisher -> subscriber.
  * memory: all three receive the same events; only the broker keeps them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import urlsplit

from .procs import HOST, Stack, call, dir_bytes, rss_kib
from .settings import Settings
from .stats import summary
from .targets import (
    DEFAULT_TOPIC,
    LOAD_SLACK_SECONDS,
    PROTOTYPE_PATH,
    PUBLISH_PATH,
    SINK_PATH,
    TOPIC,
    expect,
    load,
    profiled,
    sink_ref,
    sink_stats,
    start,
    subscribe,
    wait_for_sinks,
)


def ingress(batch: int, subscribers: int = 0, prototype: bool = False):
    """Publishes to the topic's endpoint, or (`prototype`) to the prototype's `/publish` (single
    events as `{"eventType", "data"}`, to the default topic), which the broker subscribes the
    sinks to instead."""
    def run(kind: str, stack: Stack, s: Settings) -> dict:
        sinks = [stack.sink(f"sink{i}") for i in range(subscribers)]
        proc = start(kind, stack, s)
        subscribe(kind, proc, sinks, topic=DEFAULT_TOPIC if prototype else TOPIC)
        spec = {"mode": "closed", "targets": [proc.target(PROTOTYPE_PATH if prototype else PUBLISH_PATH)],
                "connections": s.connections, "batch": batch, "duration": s.duration, "warmup": s.warmup, "prototype": prototype}
        if sinks and kind != "ceiling":
            # Publishing pauses while more than `ingress_window` events are not yet delivered to
            # every subscriber, and the rate reported is that of events both accepted and delivered
            # in the measured seconds: one the target sustains, deliveries included, not how fast it
            # accepts while a backlog grows (the prototype delivers inside the publish anyway).
            spec |= {"sinks": [sink_ref(k) for k in sinks], "window": s.ingress_window, "fanout": len(sinks)}
        res = load(proc, spec, s.warmup + s.duration + LOAD_SLACK_SECONDS, s)
        lat = res["latency_ms"]
        return {"events_per_s": sustained_rate(res, len(sinks)), "p50_ms": lat["p50"], "p99_ms": lat["p99"], "load": res}

    return run


def flood(prototype: bool):
    """Publishers that never wait for deliveries (as wrk does): 8 clients post single events as fast
    as they are answered, to the example's two subscribers, through `/api/events` or the
    prototype's `/publish`. Measured: events accepted and delivered per second in the same window,
    what was left undelivered at its end, and how long that took to drain."""
    def run(kind: str, stack: Stack, s: Settings) -> dict:
        sinks = [stack.sink("sink0"), stack.sink("sink1")]
        proc = start(kind, stack, s)
        subscribe(kind, proc, sinks, topic=DEFAULT_TOPIC if prototype else TOPIC)
        spec = {"mode": "closed", "targets": [proc.target(PROTOTYPE_PATH if prototype else PUBLISH_PATH)],
                "connections": s.connections, "batch": 1, "duration": s.duration, "warmup": s.warmup,
                "prototype": prototype, "sinks": [sink_ref(k) for k in sinks]}
        if kind == "ceiling":  # the deliveries themselves: what this machine can carry to the sinks
            proc = sinks[0]
            spec |= {"targets": [k.target(SINK_PATH) for k in sinks], "prototype": False}
        res = load(proc, spec, s.warmup + s.duration + LOAD_SLACK_SECONDS, s)
        accepted = res["events_per_s"] if kind != "ceiling" else res["sink_events_per_s"] / len(sinks)
        delivered = res["sink_events_per_s"]
        out = {"accepted_per_s": accepted, "delivered_per_s": delivered,
               "delivered_share": round(delivered / max(1e-9, accepted * len(sinks)), 3),
               "publish_p99_ms": res["latency_ms"]["p99"], "load": res}
        if kind == "broker":
            # What was accepted but not delivered when the publishers stopped, and how long it took to go.
            total = res["answered_events"] * len(sinks)
            got = sum(sink_stats(k)["events"] for k in sinks)
            out["backlog_at_end"] = max(0, total - got)
            drained = wait_for_sinks(sinks, total, s.drain_deadline)
            out["drain_s"] = round(drained, 3) if drained is not None else None
        return out

    return run


def sustained_rate(res: dict, subscribers: int) -> float:
    """Events/s accepted and, where the sinks were watched, also delivered to every subscriber in
    the measured seconds (the lower of the two; the delivered rate is added to `res`)."""
    if "sink_events_per_s" not in res:
        return res["events_per_s"]
    res["delivered_events_per_s"] = round(res["sink_events_per_s"] / subscribers, 1)
    return min(res["events_per_s"], res["delivered_events_per_s"])


def fanout(out_batch: bool):
    def run(kind: str, stack: Stack, s: Settings) -> dict:
        batch = s.out_batch if out_batch else 1
        sinks = [stack.sink("sink0"), stack.sink("sink1")]
        spec = {"mode": "closed", "connections": s.connections, "duration": s.duration, "warmup": s.warmup,
                "sinks": [sink_ref(k) for k in sinks]}
        if kind == "ceiling":  # the delivery requests themselves, straight to the subscribers
            proc = sinks[0]
            spec |= {"targets": [k.target(SINK_PATH) for k in sinks], "batch": batch}
        else:
            proc = start(kind, stack, s)
            subscribe(kind, proc, sinks, batch=batch)
            spec |= {"targets": [proc.target(PUBLISH_PATH)], "batch": s.publish_batch, "window": s.window, "fanout": len(sinks)}
        res = load(proc, spec, s.warmup + s.duration + LOAD_SLACK_SECONDS, s)
        return {"delivered_events_per_s": res["sink_events_per_s"], "load": res}

    return run


QUEUE_PATHS = {
    "publish": "/namespaces/bench-ns/topics/orders:publish",
    "receive": "/namespaces/bench-ns/topics/orders/eventsubscriptions/worker:receive",
    "ack": "/namespaces/bench-ns/topics/orders/eventsubscriptions/worker:acknowledge",
}


def queue_cycle(kind: str, stack: Stack, s: Settings) -> dict:
    """A namespace queue driven by its consumers: each client publishes 100 events, receives them
    and acknowledges them, over and over; every event is durable before its publish is answered.
    The ceiling answers the same three requests without doing anything."""
    if kind == "baseline":
        return {"skipped": "the prototype has no queues: nothing to receive or acknowledge"}
    if kind == "ceiling":
        proc, key = stack.sink("ceiling"), ""
    else:
        proc = stack.broker(**s.broker_env)
        for path, body in (("/namespaces/bench-ns", {}), ("/namespaces/bench-ns/topics/orders", {}),
                           ("/namespaces/bench-ns/topics/orders/eventSubscriptions/worker",
                            {"properties": {"deliveryConfiguration": {"deliveryMode": "Queue", "queue": {}}}})):
            status, answer = call(proc.port, "PUT", path, body)
            expect(status in (200, 201), f"PUT {path} answered {status}: {answer}")
        key = call(proc.port, "POST", "/namespaces/bench-ns/listKeys", {})[1]["key1"]
    target = {"host": HOST, "port": proc.port, "key": key, **QUEUE_PATHS}
    spec = {"mode": "cycle", "targets": [target], "connections": s.connections, "batch": s.publish_batch,
            "duration": s.duration, "warmup": s.warmup}
    res = load(proc, spec, s.warmup + s.duration + LOAD_SLACK_SECONDS, s)
    return {"events_per_s": res["events_per_s"], "cycle_p50_ms": res["latency_ms"]["p50"], "load": res}


def e2e_latency(kind: str, stack: Stack, s: Settings) -> dict:
    sink = stack.sink()
    if kind == "ceiling":
        proc, target = sink, sink.target(SINK_PATH)
    else:
        proc = start(kind, stack, s)
        subscribe(kind, proc, [sink])
        target = proc.target(PUBLISH_PATH)
    spec = {"mode": "paced", "rate": s.latency_rate, "targets": [target], "connections": 32, "batch": 1,
            "duration": s.latency_duration, "warmup": s.warmup, "stamp": True}
    res = load(proc, spec, s.warmup + s.latency_duration + LOAD_SLACK_SECONDS, s)
    waited = wait_for_sinks([sink], res["answered_events"], 30.0)
    samples = call(sink.port, "GET", "/latencies")[1]["ms"]
    lat = summary(samples[int(s.warmup * s.latency_rate):])  # arrival order: drop the warm-up's
    return {
        "p50_ms": lat["p50"], "p99_ms": lat["p99"], "max_ms": lat["max"], "samples": lat["n"],
        "all_delivered": waited is not None, "publish_latency_ms": res["latency_ms"], "load": res,
    }


def drain(kind: str, stack: Stack, s: Settings) -> dict:
    """A backlog of `drain_events` due deliveries, then the time until the subscriber has them all.

    The backlog is held by the broker's own Azure mechanism rather than a down subscriber: the
    subscription is created with the validation handshake, the sink answers it without echoing the
    code (AwaitingManualAction, events queue but are not sent), and a GET on the validationUrl --
    the subscriber "coming back" -- releases them all at once. So the measure is the dispatcher's
    drain speed, not the retry schedule a down subscriber would add.
    """
    n = s.drain_events
    sink = stack.sink()
    if kind == "baseline":
        return {"skipped": "the prototype keeps no backlog: events for a subscriber that is down are lost"}
    if kind == "ceiling":
        spec = {"mode": "closed", "targets": [sink.target(SINK_PATH)], "connections": s.connections, "batch": 1, "count": n}
        res = load(sink, spec, s.deadline, s)
        return {"drain_s": res["elapsed_s"], "drain_events_per_s": round(n / res["elapsed_s"], 1), "drained": n, "backlog": n, "load": res}

    proc = start(kind, stack, s)
    subscribe(kind, proc, [sink], handshake=True)
    state = call(proc.port, "GET", f"/topics/{TOPIC}/eventSubscriptions/sink-0")[1]["properties"]["provisioningState"]
    expect(state == "AwaitingManualAction", f"subscription is {state}, expected AwaitingManualAction")
    fill = load(proc, {"mode": "closed", "targets": [proc.target(PUBLISH_PATH)], "connections": 4,
                       "batch": s.publish_batch, "count": n}, s.deadline, s)
    stats = sink_stats(sink)
    expect(stats["events"] == 0, f"the sink got {stats['events']} events before it was validated")
    url = urlsplit(stats["validationUrl"])
    cpu = proc.cpu_seconds()
    started = time.monotonic()
    with profiled(proc, s, "drain"):
        status, body = call(proc.port, "GET", f"{url.path}?{url.query}")
        expect(status == 200, f"validationUrl answered {status}: {body}")
        taken = wait_for_sinks([sink], n, s.drain_deadline)
    elapsed = time.monotonic() - started
    got = sink_stats(sink)["events"]
    return {
        "drain_s": round(taken, 3) if taken is not None else None,  # None: not drained by the deadline
        "drain_events_per_s": round(got / elapsed, 1), "drained": got, "backlog": n, "complete": taken is not None,
        "server_cores": round((proc.cpu_seconds() - cpu) / elapsed, 2), "fill": fill,
    }


def memory(kind: str, stack: Stack, s: Settings) -> dict:
    """`memory_events` events published in batches; then the process's RSS (and the broker's store)."""
    proc = start(kind, stack, s)
    idle = rss_kib(proc.pid)["VmRSS"]
    fill = load(proc, {"mode": "closed", "targets": [proc.target(PUBLISH_PATH if kind != "ceiling" else SINK_PATH)],
                       "connections": 4, "batch": s.publish_batch, "count": s.memory_events}, s.deadline, s)
    rss = rss_kib(proc.pid)
    out = {
        "rss_mib": round(rss["VmRSS"] / 1024, 1), "peak_rss_mib": round(rss["VmHWM"] / 1024, 1),
        "idle_rss_mib": round(idle / 1024, 1), "events": fill["answered_events"],
        "fill_events_per_s": round(fill["answered_events"] / fill["elapsed_s"], 1), "fill": fill,
    }
    if proc.data_dir is not None:
        out["store_mib"] = round(dir_bytes(proc.data_dir) / 2**20, 1)
    return out


@dataclass(frozen=True)
class Row:
    """One line of the table: a measurement compared across the three targets."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None
    baseline_factor: float | None = None  # the broker must also beat the baseline this many times


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: object
    rows: tuple[Row, ...]
    # Runs per target, taken in turn (broker, baseline, ceiling, broker, ...), each with 1/rounds of
    # the measured seconds; every number is then the mean of the rounds (`merge_rounds`). For a row
    # judged by its ratio to the baseline: this machine's speed drifts by a quarter within a minute,
    # and one run of each, half a minute apart, put 11.8-17.5x on the same code.
    rounds: int = 1
    # The measured seconds of all rounds together, in units of --duration: a flood is judged on
    # what it sustains, so each of its rounds runs the whole --duration.
    span: float = 1.0


def merge_rounds(runs: list[dict]) -> dict:
    """One target's rounds as one result: the mean of each number (rates over equal measured
    seconds, so the mean is the rate over all of them), and the rounds' load results."""
    if len(runs) == 1:
        return runs[0]
    failed = next((r for r in runs if "error" in r), None)
    if failed is not None:
        return failed
    merged: dict = {"rounds": len(runs), "load": [r.get("load") for r in runs]}
    for key, v in runs[0].items():
        values = [r.get(key) for r in runs]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values):
            merged[key] = round(sum(values) / len(values), 3)
        elif key != "load":
            merged[key] = None if any(x is None for x in values) else v  # e.g. a round whose backlog did not drain
    return merged


SCENARIOS = (
    Scenario("ingress-single", "single-event publishes, 8 clients", ingress(1), (
        Row("events_per_s", "ingress events/s", "ev/s", True, 3000),
        Row("p50_ms", "publish p50", "ms", False),
        Row("p99_ms", "publish p99", "ms", False),
    )),
    # The prototype with the example's two subscribers, as it ran: each publish posts to both before
    # it answers. Without subscribers it is a Flask app appending to a list, which the raw-HTTP
    # ceiling itself beats by only ~16x; "15x the prototype" is measured where the prototype works.
    Scenario("ingress-subscribed", "single-event publishes, 8 clients, 2 subscribers", ingress(1, subscribers=2), (
        Row("events_per_s", "ingress events/s", "ev/s", True, baseline_factor=15),
        Row("p50_ms", "publish p50", "ms", False),
        Row("p99_ms", "publish p99", "ms", False),
    ), rounds=3),
    # The same through the prototype's own API, which the broker serves on the same publish path.
    Scenario("ingress-prototype", "single-event /publish (the prototype's API), 8 clients, 2 subscribers",
             ingress(1, subscribers=2, prototype=True), (
        Row("events_per_s", "ingress events/s", "ev/s", True, baseline_factor=15),
        Row("p50_ms", "publish p50", "ms", False),
        Row("p99_ms", "publish p99", "ms", False),
    ), rounds=3),
    # Publishers that do not wait for deliveries: deliveries must keep pace with what is accepted.
    Scenario("flood", "flood of single-event publishes, 8 clients, 2 subscribers, 3 rounds", flood(False), (
        Row("delivered_per_s", "deliveries/s", "/s", True, baseline_factor=15),
        Row("accepted_per_s", "events accepted/s", "ev/s", True),
        Row("delivered_share", "delivered / (accepted x 2)", "", True, 0.9),
        Row("publish_p99_ms", "publish p99", "ms", False, 10),
        Row("backlog_at_end", "backlog at the end", "deliveries", False),
        Row("drain_s", "time to drain it", "s", False),
    ), rounds=3, span=3),
    Scenario("flood-prototype", "the same through the prototype's /publish, 3 rounds", flood(True), (
        Row("delivered_per_s", "deliveries/s", "/s", True, baseline_factor=15),
        Row("accepted_per_s", "events accepted/s", "ev/s", True),
        Row("delivered_share", "delivered / (accepted x 2)", "", True, 0.9),
        Row("publish_p99_ms", "publish p99", "ms", False, 10),
        Row("backlog_at_end", "backlog at the end", "deliveries", False),
        Row("drain_s", "time to drain it", "s", False),
    ), rounds=3, span=3),
    Scenario("ingress-batch", "publishes of 100 events, 8 clients", ingress(100), (
        Row("events_per_s", "ingress events/s", "ev/s", True, 10000),
    )),
    Scenario("fanout", "2 subscribers, one event per delivery", fanout(False), (
        Row("delivered_events_per_s", "deliveries/s", "/s", True, 5000),
    )),
    Scenario("fanout-batched", "2 subscribers, output batches of 100", fanout(True), (
        Row("delivered_events_per_s", "events delivered/s", "ev/s", True, 20000),
    )),
    Scenario("e2e-latency", "publish -> delivery at 1,000 events/s", e2e_latency, (
        Row("p50_ms", "delivery p50", "ms", False),
        Row("p99_ms", "delivery p99", "ms", False, 10),
        Row("max_ms", "delivery max", "ms", False),
    )),
    Scenario("queue-cycle", "namespace queue: publish, receive, acknowledge 100 at a time, 8 clients", queue_cycle, (
        Row("events_per_s", "events through the cycle", "ev/s", True, 10000),
        Row("cycle_p50_ms", "one cycle p50", "ms", False),
    )),
    Scenario("drain", "backlog of pending deliveries released at once", drain, (
        Row("drain_s", "time to drain", "s", False),
        Row("drain_events_per_s", "drain rate", "ev/s", True),
        Row("drained", "drained by the deadline", "events", True),
    )),
    Scenario("memory", "RSS after the stored events, store on disk", memory, (
        Row("rss_mib", "RSS", "MiB", False, 200),
        Row("store_mib", "store on disk", "MiB", False),
    )),
)

BY_NAME = MappingProxyType({s.name: s for s in SCENARIOS})
