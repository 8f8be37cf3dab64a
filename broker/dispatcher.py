"""Background delivery: claims due deliveries from the store and POSTs them to subscribers.

One loop thread decides what to send; a bounded pool of worker threads sends it. Each subscription
may have at most `subscription_concurrency` requests in flight, so a slow or dead subscriber ties up
that many workers at most and never delays the others. Every state change goes through the store
before anything else happens, so a killed broker resumes exactly where it was.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from . import codec, schemas
from .deadletters import BlobWriter, record
from .events import CLOUDEVENT_SCHEMA, Event
from .retry import classify
from .store import Claimed, Outcome, Store
from .subscriptions import Subscription

log = logging.getLogger("broker.dispatcher")

PRUNE_EVERY_SECONDS = 60.0
IDLE_POLL_SECONDS = 1.0

# Azure's names for how the last attempt went (lastDeliveryOutcome / deadLetterReason).
OUTCOMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 408: "TimedOut", 413: "RequestEntityTooLarge", 429: "Busy", 503: "Busy"}


def outcome_name(status: int | None, timed_out: bool) -> str:
    if status is not None and 200 <= status <= 204:
        return "Delivered"
    if status is None:
        return "TimedOut" if timed_out else "GenericError"
    return OUTCOMES.get(status, "GenericError")


class Rendering:
    """An event as subscribers get it, rendered once per schema and shared by every subscription
    (and every retry): parsing and re-serialising the stored record per delivery was a quarter of
    the dispatcher's CPU under fan-out."""

    __slots__ = ("event", "id", "input_schema", "data_version", "_bodies")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.id, self.input_schema, self.data_version = event.id, event.input_schema, event.data_version
        self._bodies: dict[str, bytes] = {}

    def rendered(self, schema: str, topic_path: str) -> bytes:
        body = self._bodies.get(schema)
        if body is None:
            body = self._bodies[schema] = schemas.dumps(schemas.render(self.event, schema, topic_path))
        return body


class Renderings:
    """A bounded cache of `Rendering`s by event sequence number, filled as events are accepted."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._items: OrderedDict[int, Rendering] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, seq: int, event: Event) -> None:
        with self._lock:
            self._items[seq] = Rendering(event)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, seq: int, record: bytes) -> Rendering:
        with self._lock:
            found = self._items.get(seq)
        if found is None:  # an older event (a retry, a backlog after restart): from the stored record
            found = Rendering(Event.from_record(codec.loads(record)))
            self.add(seq, found.event)
        return found


CLAIM_AHEAD = 256  # deliveries claimed from the store per subscription at once
LOW_WATER = 64  # a lane holding fewer asks the loop to claim more
WORKER_ROUNDS = 32  # requests one worker sends before giving its thread back (fairness across lanes)


class Lane:
    """One subscription's claimed-but-unsent deliveries and the workers sending them."""

    __slots__ = ("sub", "buffer", "workers")

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.buffer: deque[Claimed] = deque()
        self.workers = 0


class Dispatcher:
    def __init__(self, store: Store, registry, client, clock, config, metrics, feed) -> None:
        self.store = store
        self.registry = registry
        self.client = client
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.feed = feed
        self.blobs = BlobWriter(config.data_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._lanes: dict[tuple[str, str], Lane] = {}
        self.renderings = Renderings()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._next_prune = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            log.info("resuming deliveries that were in flight when the broker stopped", extra={"count": recovered})
        self._pool = ThreadPoolExecutor(self.config.delivery_workers, thread_name_prefix="deliver")
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def running(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def wake(self) -> None:
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.dispatch_due()
                self._prune_if_due()
            except Exception:  # the loop must survive anything: log and retry shortly
                log.exception("dispatcher loop error")
                wait = IDLE_POLL_SECONDS
            if wait > 0:
                self._wake.wait(wait)

    def dispatch_due(self, submit=None) -> float:
        """Claim what is due into each subscription's lane and staff the lanes with workers; return
        how long the loop may sleep before something else falls due.

        Deliveries are claimed a few hundred at a time (one store transaction), so the per-delivery
        cost is the HTTP request, not the bookkeeping. `submit(fn, *args)` starts a worker: the pool
        by default (tests pass a synchronous one).
        """
        submit = submit or self._pool.submit
        now = self.clock.now()
        wait = IDLE_POLL_SECONDS
        active = {}
        for sub in self.registry.subscriptions():
            if sub.active:
                active[sub.key] = sub
        self._retire_lanes(active)
        for key, sub in active.items():
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(sub)
            lane.sub = sub  # a PUT may have replaced the subscription's settings
            with self._lock:
                buffered = len(lane.buffer)
            if buffered < LOW_WATER:
                want = max(CLAIM_AHEAD, 2 * self.config.subscription_concurrency * sub.max_events_per_batch) - buffered
                claimed = self.store.claim(sub.topic, sub.name, now, want)
                with self._lock:
                    lane.buffer.extend(claimed)
                if len(claimed) < want:
                    due = self.store.next_due(sub.topic, sub.name)
                    if due is not None:
                        wait = min(wait, max(0.0, due - now))
            self._staff(lane, submit)
        return wait

    def _staff(self, lane: Lane, submit) -> None:
        with self._lock:
            requests = -(-len(lane.buffer) // lane.sub.max_events_per_batch)
            hire = min(self.config.subscription_concurrency, requests) - lane.workers
            lane.workers += max(hire, 0)
        for _ in range(hire):
            submit(self._work, lane)

    def _retire_lanes(self, active: dict) -> None:
        """Lanes of deleted or no longer validated subscriptions give their claims back."""
        for key in [k for k in self._lanes if k not in active]:
            lane = self._lanes[key]
            with self._lock:
                if lane.workers:
                    continue  # its workers finish what they hold first
                leftover = [c.id for c in lane.buffer]
                lane.buffer.clear()
                del self._lanes[key]
            if leftover:
                self.store.release(leftover)

    def _work(self, lane: Lane) -> None:
        """A worker: send the lane's deliveries, a request at a time, then give the thread back."""
        try:
            for _ in range(WORKER_ROUNDS):
                with self._lock:
                    chunk = self._take(lane)
                    low = len(lane.buffer) < LOW_WATER
                if not chunk:
                    break
                if low:
                    self._wake.set()  # claim more while this request is on the wire
                self._deliver(lane.sub, chunk)
        finally:
            with self._lock:
                lane.workers -= 1
            self._wake.set()

    @staticmethod
    def _take(lane: Lane) -> list[Claimed]:
        """The next request's deliveries: at most maxEventsPerBatch events and, where more than one
        event fits, about preferredBatchSizeInKilobytes (one event always goes)."""
        sub, buffer = lane.sub, lane.buffer
        chunk: list[Claimed] = []
        size = 0
        while buffer and len(chunk) < sub.max_events_per_batch:
            nxt = buffer[0]
            if chunk and size + len(nxt.body) > sub.preferred_batch_bytes:
                break
            chunk.append(buffer.popleft())
            size += len(nxt.body)
        return chunk

    def _prune_if_due(self) -> None:
        now = self.clock.now()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_SECONDS
        before = now - self.config.retention_hours * 3600
        removed = 0
        while (batch := self.store.prune(before)) and not self._stop.is_set():
            removed += batch  # in batches, so sustained traffic cannot outgrow retention
        if removed:
            log.info("pruned delivered events past retention", extra={"count": removed})

    # -- one request -------------------------------------------------------------------------

    def _deliver(self, sub: Subscription, chunk: list[Claimed]) -> None:
        try:
            self._attempt(sub, chunk)
        except Exception:
            log.exception("delivery failed unexpectedly; returning it to pending", extra={"subscription": sub.name})
            self.store.release([c.id for c in chunk])

    def _attempt(self, sub: Subscription, chunk: list[Claimed]) -> None:
        now = self.clock.now()
        expired = [c for c in chunk if c.expires_at <= now]
        live = [c for c in chunk if c.expires_at > now]
        if expired:
            final = "deadlettered" if sub.dead_letter else "dropped"
            self._finish(sub, [Outcome(c.id, c.attempts, now, final, "TimeToLiveExceeded", dead_letter_reason="TimeToLiveExceeded") for c in expired], expired, attempted=False)
        if not live:
            return

        topic_path = self.config.topic_path(sub.topic)
        events = [self.renderings.get(c.event_seq, c.body) for c in live]
        schema = sub.schema_for(events[0].input_schema)
        parts = [e.rendered(sub.schema_for(e.input_schema), topic_path) for e in events]
        single_ce = schema == CLOUDEVENT_SCHEMA and sub.max_events_per_batch == 1
        body = parts[0] if single_ce else b"[" + b",".join(parts) + b"]"
        headers = self._headers(sub, events[0], parts[0], schema, live[0].attempts, single_ce)

        resp = self.client.post(sub.endpoint, body, headers, self.config.delivery_timeout)
        done = self.clock.now()
        verdict = classify(resp.status)
        outcome = outcome_name(resp.status, resp.timed_out)
        outcomes = []
        for c in live:
            attempt = c.attempts + 1
            o = Outcome(
                c.id, attempt, done, "delivered", outcome, resp.status, resp.latency_ms,
                None if verdict == "delivered" else (resp.error or _snippet(resp.body)), headers=headers, batch_size=len(live),
            )
            if verdict == "reject":
                o.status, o.dead_letter_reason = ("deadlettered" if sub.dead_letter else "dropped"), outcome
            elif verdict == "retry":
                if attempt >= sub.retry.max_delivery_attempts:
                    o.status, o.dead_letter_reason = ("deadlettered" if sub.dead_letter else "dropped"), "MaxDeliveryAttemptsExceeded"
                else:
                    o.status = "pending"
                    # Past the time-to-live the next claim dead-letters it with TimeToLiveExceeded.
                    o.next_attempt_at = min(done + self.clock.scaled(sub.retry.delay_after(attempt)), c.expires_at)
            outcomes.append(o)
        self._finish(sub, outcomes, live, attempted=True)
        if resp.latency_ms is not None:
            self.metrics.latency.labels(sub.topic, sub.name).observe(resp.latency_ms / 1000)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "delivery attempt",
                extra={
                    "topic": sub.topic, "subscription": sub.name, "event_ids": [e.id for e in events],
                    "attempt": live[0].attempts + 1, "status": resp.status, "outcome": outcome,
                    "latency_ms": round(resp.latency_ms, 2), "next": outcomes[0].status, "error": resp.error,
                },
            )

    def _headers(self, sub: Subscription, event: Rendering, first: bytes, schema: str, attempts: int, single_ce: bool) -> dict[str, str]:
        headers = {
            "Content-Type": schemas.content_type(schema, batch=not single_ce),
            "aeg-event-type": "Notification",
            "aeg-subscription-name": sub.name.upper(),
            "aeg-delivery-count": str(attempts),
            "aeg-metadata-version": "1",
        }
        if schema != CLOUDEVENT_SCHEMA:  # Event Grid stamps an empty dataVersion when none was sent
            headers["aeg-data-version"] = event.data_version or ""
        envelope = codec.loads(first) if any(a.source_field for a in sub.attributes) else None
        for attr in sub.attributes:
            value = attr.static if attr.static is not None else _lookup(envelope, attr.source_field)
            if value is not None:
                headers[attr.name] = value if isinstance(value, str) else orjson.dumps(value).decode()
        return headers

    def _finish(self, sub: Subscription, outcomes: list[Outcome], claimed: list[Claimed], attempted: bool) -> None:
        dead = [o for o in outcomes if o.status == "deadlettered"]
        if attempted:
            # Dead letters wait for the commit: their blob is written from the stored record.
            self.store.complete(outcomes, wait=bool(dead))
        else:
            self.store.expire(outcomes)
        if dead:
            self._write_blobs(sub, dead)
        for o in outcomes:
            self.metrics.deliveries.labels(sub.topic, sub.name, o.status if o.status != "pending" else "retry").inc()
        if self.feed.has_listeners:
            for o, c in zip(outcomes, claimed, strict=True):
                self.feed.publish("attempt", {
                    "topic": sub.topic, "subscription": sub.name, "delivery": o.delivery_id, "seq": c.event_seq,
                    "attempt": o.attempt, "status": o.status, "outcome": o.outcome, "statusCode": o.status_code,
                    "latencyMs": o.latency_ms, "at": o.at, "nextAttemptAt": o.next_attempt_at,
                    "deadLetterReason": o.dead_letter_reason,
                })

    def _write_blobs(self, sub: Subscription, dead: list[Outcome]) -> None:
        """One blob per dead-lettered event, built from the stored delivery (the single source of
        the Azure fields: attempts, last outcome, times)."""
        topic_path = self.config.topic_path(sub.topic)
        for o in dead:
            row = self.store.dead_letter(sub.topic, sub.name, o.delivery_id)
            if row is None:  # redelivered or purged in the meantime
                continue
            self.blobs.write(sub.topic, sub.name, o.at, [dead_letter_record(row, sub, topic_path)])


def dead_letter_record(row: dict, sub: Subscription, topic_path: str) -> dict:
    event = Event.from_record(codec.loads(row["body"]))
    return record(schemas.render(event, sub.schema_for(event.input_schema), topic_path), row)


def _lookup(envelope: dict, path: str | None) -> Any:
    value: Any = envelope
    for part in (path or "").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _snippet(body: bytes) -> str:
    return body[:300].decode("utf-8", "replace")
