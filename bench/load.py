"""The load generator, run as its own process: `python -m bench.load '<json spec>'` prints one JSON
result line. Everything is one asyncio loop over raw keep-alive sockets (see rawhttp).

Spec keys:
  mode         "closed" (each connection sends its next request when the last one is answered),
               "paced" (requests started at `rate` events/s whatever the answers, open loop) or
               "cycle" (publish, receive, acknowledge `batch` events on a namespace queue; targets
               then hold "publish", "receive", "ack" paths and the namespace "key")
  targets      [{"host", "port", "path"}]: connections are spread over them round robin
  connections  number of keep-alive connections
  batch        events per request
  duration     seconds measured; `warmup` seconds run before and are not counted
  count        optional cap on events sent (the run ends when all are answered)
  rate         events/s for "paced"
  stamp        put a monotonic send stamp in data.t (publish -> delivery latency at the sink)
  sinks        optional [{"host", "port"}]: their event counts are read at the start and end of the
               measured window (delivered events/s); with `window`, publishing pauses while more
               than `window` published events are not yet delivered `fanout` times, so the run
               measures a steady state instead of a growing backlog
"""

from __future__ import annotations

import asyncio
import itertools
import resource
import sys
import time

import orjson

from . import events
from .rawhttp import Connection
from .stats import summary

STATS_REQUEST = b"GET /stats HTTP/1.1\r\nHost: sink\r\n\r\n"
POLL_SECONDS = 0.005
LATE_SECONDS = 0.002  # past the event loop's timer granularity: a paced request this late had to queue


class Run:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.batch = int(spec.get("batch", 1))
        self.count = spec.get("count")
        self.stamp = bool(spec.get("stamp"))
        self.prototype = bool(spec.get("prototype"))  # prototype-style bodies (batch must be 1)
        self.numbers = itertools.count()
        self.sent_events = 0
        self.done_events = 0  # answered with 2xx, whenever
        self.window_events = 0
        self.window_requests = 0
        self.latencies: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors = 0
        self.late = 0
        self.measure_from = self.measure_to = 0.0
        self.stop_at = 0.0
        self.last_answer = 0.0
        self.delivered = 0  # events the sinks counted, divided by fanout (flow control)
        self.may_send = asyncio.Event()
        self.may_send.set()

    # -- requests ------------------------------------------------------------------------------

    def next_request(self, target: dict, stamp: float | None) -> tuple[bytes, int] | None:
        n = self.batch
        if self.count is not None:
            n = min(n, int(self.count) - self.sent_events)
            if n <= 0:
                return None
        first = next(self.numbers) * self.batch
        self.sent_events += n
        if self.prototype:  # the prototype's /publish: one event per request, as a bare object
            body = events.prototype(first, stamp)
        else:
            body = events.batch(first, n, events.event_time(), stamp)
        return events.request(target["path"], target["host"], target["port"], body), n

    async def one(self, conn: Connection, data: bytes, n: int, started: float) -> None:
        try:
            status, _ = await conn.send(data)
        except Exception:  # connection refused/reset twice: count it, keep the run going
            self.errors += 1
            return
        now = time.perf_counter()
        self.last_answer = now
        if 200 <= status < 300:
            self.done_events += n
            if self.measure_from <= now <= self.measure_to:
                self.window_events += n
                self.window_requests += 1
                self.latencies.append((now - started) * 1000.0)
        else:
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    # -- modes ---------------------------------------------------------------------------------

    async def cycle(self, conn: Connection, target: dict) -> None:
        """A namespace queue's cycle: publish `batch` events, receive them, acknowledge them; an
        event counts once its acknowledgement is answered. Against the ceiling (which answers
        anything with an empty 200) the same three requests go out, with made-up lock tokens."""
        host, port, batch = target["host"], target["port"], self.batch
        auth = b"Authorization: SharedAccessKey %s\r\n" % target.get("key", "").encode()
        receive = (b"POST %s?maxEvents=%d&maxWaitTime=10 HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Length: 0\r\n\r\n"
                   % (target["receive"].encode(), batch, host.encode(), port, auth))
        fake = [f"{n}.1.xxxxxxxxxxxxxxxx" for n in range(batch)]
        while time.perf_counter() < self.stop_at:
            started = time.perf_counter()
            first = next(self.numbers) * batch
            body = events.cloud_batch(first, batch, events.event_time())
            try:
                published, _ = await conn.send(events.request(target["publish"], host, port, body,
                                                              b"application/cloudevents-batch+json; charset=utf-8", auth))
                status, answer = await conn.send(receive)
                got = orjson.loads(answer)["value"] if answer else []
                tokens = [item["brokerProperties"]["lockToken"] for item in got] or fake
                acked, _ = await conn.send(events.request(target["ack"], host, port, orjson.dumps({"lockTokens": tokens}),
                                                          b"application/json", auth))
            except Exception:
                self.errors += 1
                continue
            now = time.perf_counter()
            self.last_answer = now
            bad = [s for s in (published, status, acked) if not 200 <= s < 300]
            for s in bad:
                self.statuses[str(s)] = self.statuses.get(str(s), 0) + 1
            settled = len(got) if got else (batch if not target.get("key") else 0)
            self.sent_events += batch
            self.done_events += settled
            if not bad and self.measure_from <= now <= self.measure_to:
                self.window_events += settled
                self.window_requests += 3
                self.latencies.append((now - started) * 1000.0)

    async def closed(self, conn: Connection, target: dict) -> None:
        while time.perf_counter() < self.stop_at:
            if not self.may_send.is_set():
                await self.may_send.wait()
                continue
            item = self.next_request(target, time.monotonic() if self.stamp else None)
            if item is None:
                return
            await self.one(conn, item[0], item[1], time.perf_counter())

    async def paced(self, conns: list[Connection], targets: list[dict]) -> None:
        """Start requests on schedule whatever the answers (open loop). A request that finds no free
        connection waits for one, and one that leaves more than LATE_SECONDS behind schedule -- the
        target is not keeping up -- is stamped with its scheduled time, so the wait counts in its
        latency (no coordinated omission); on-time requests carry their actual send time, so the
        event loop's millisecond timer granularity does not."""
        free: asyncio.Queue[tuple[Connection, dict]] = asyncio.Queue()
        for conn, target in zip(conns, itertools.cycle(targets)):
            free.put_nowait((conn, target))
        interval = self.batch / float(self.spec["rate"])
        start, mono_start = time.perf_counter(), time.monotonic()
        tasks = set()

        async def fire(conn: Connection, target: dict, due: float, stamp: float | None) -> None:
            try:
                item = self.next_request(target, stamp)
                if item is not None:
                    await self.one(conn, item[0], item[1], due)
            finally:
                free.put_nowait((conn, target))

        for k in itertools.count():
            due = start + k * interval
            if due >= self.stop_at or (self.count is not None and self.sent_events >= self.count):
                break
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            conn, target = await free.get()
            late = time.perf_counter() - due > LATE_SECONDS
            self.late += late
            stamp = (mono_start + k * interval if late else time.monotonic()) if self.stamp else None
            task = asyncio.create_task(fire(conn, target, due, stamp))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    # -- sinks ---------------------------------------------------------------------------------

    async def sink_total(self, conns: list[Connection]) -> int:
        total = 0
        for conn in conns:
            _, body = await conn.send(STATS_REQUEST)
            total += orjson.loads(body)["events"]
        return total

    async def flow_control(self, conns: list[Connection], base: int) -> None:
        fanout, window = int(self.spec.get("fanout", 1)), int(self.spec["window"])
        while time.perf_counter() < self.stop_at:
            self.delivered = (await self.sink_total(conns) - base) / fanout
            if self.sent_events - self.delivered > window:
                self.may_send.clear()
            else:
                self.may_send.set()
            await asyncio.sleep(POLL_SECONDS)
        self.may_send.set()


async def execute(spec: dict) -> dict:
    run = Run(spec)
    targets = spec["targets"]
    conns = [Connection(t["host"], t["port"]) for t in itertools.islice(itertools.cycle(targets), int(spec["connections"]))]
    await asyncio.gather(*(c.open() for c in conns))
    sink_specs = spec.get("sinks") or []
    watch = [Connection(s["host"], s["port"]) for s in sink_specs]
    poll = [Connection(s["host"], s["port"]) for s in sink_specs]
    base = await run.sink_total(watch) if watch else 0

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    warmup, duration = float(spec.get("warmup", 0.0)), float(spec.get("duration", 3600.0))
    run.measure_from, run.measure_to = started + warmup, started + warmup + duration
    run.stop_at = run.measure_to
    work = []
    if spec.get("mode", "closed") == "paced":
        work.append(asyncio.create_task(run.paced(conns, targets)))
    elif spec.get("mode") == "cycle":
        work += [asyncio.create_task(run.cycle(c, t)) for c, t in zip(conns, itertools.cycle(targets))]
    else:
        work += [asyncio.create_task(run.closed(c, t)) for c, t in zip(conns, itertools.cycle(targets))]
    if poll and spec.get("window"):
        work.append(asyncio.create_task(run.flow_control(poll, base)))

    sink_window = None
    if watch:
        await asyncio.sleep(max(0.0, run.measure_from - time.perf_counter()))
        first, t0 = await run.sink_total(watch), time.perf_counter()
        await asyncio.sleep(max(0.0, run.measure_to - time.perf_counter()))
        last, t1 = await run.sink_total(watch), time.perf_counter()
        sink_window = (last - first, t1 - t0)
    await asyncio.gather(*work)
    for c in conns + watch + poll:
        c.close()

    ended = run.last_answer or time.perf_counter()
    window = max(1e-9, min(run.measure_to, ended) - run.measure_from)
    result = {
        "sent_events": run.sent_events,
        "answered_events": run.done_events,
        "elapsed_s": round(ended - started, 3),
        "window_s": round(window, 3),
        "events": run.window_events,
        "requests": run.window_requests,
        "events_per_s": round(run.window_events / window, 1),
        "requests_per_s": round(run.window_requests / window, 1),
        "latency_ms": summary(run.latencies),
        "errors": run.errors,
        "bad_statuses": run.statuses,
        "late_sends": run.late,
        # How much of a core the generator itself used: near 1.0 would make it the bottleneck.
        "generator_cores": round((_cpu_seconds() - cpu_started) / max(1e-9, time.perf_counter() - started), 2),
    }
    if sink_window is not None:
        result["sink_events"] = sink_window[0]
        result["sink_events_per_s"] = round(sink_window[0] / max(1e-9, sink_window[1]), 1)
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    print(orjson.dumps(asyncio.run(execute(spec))).decode(), flush=True)


if __name__ == "__main__":
    main()
