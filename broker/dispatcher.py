"""Background delivery: claims due deliveries from the store and sends them to subscribers.

Threads and what they own:

* the `dispatcher` thread decides what to send: it claims due deliveries from the store (which may
  block) into each subscription's lane, staffs the lanes with workers, prunes past retention, and
  sleeps until the next delivery falls due (`wake_at`) or something wakes it;
* the workers are coroutines on the webhook client's event loop (the `event-loop` thread, which
  also serves the HTTP sockets: serving.py), so hundreds of requests in flight cost no threads and
  no GIL hand-offs between them. They take deliveries from their lane, send them, and record the
  outcome in the store;
* publishes hand fresh deliveries straight to a lane (`direct`, `hand_over`) on the loop's thread;
* a StorageQueue subscription's sends run on the storage account's own threads (storage.py),
  awaited by its workers; dead-letter blobs are written from a thread (`asyncio.to_thread`).

`_lock` guards the lanes and the worker counts; nothing calls out of this module while holding it.
Each subscription may have at most `subscription_concurrency` requests in flight, reached by one
more per success and back to one after a failure (`Lane.window`: a dead or hung subscriber ties
up one worker), and all of them together `delivery_workers`, so a slow subscriber never delays
the others. What a lane holds is bounded in
bytes as well as in count. Every state change goes through the store before anything else
happens, so a killed broker resumes exactly where it was.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

import orjson

from . import codec, schemas
from .deadletters import BlobWriter, record
from .events import CLOUDEVENT_SCHEMA, Event
from .headers import wire_value
from .resources import DOMAIN
from .retry import classify
from .storage import StorageAccount
from .store import Claimed, Outcome, Store, StoreClosed
from .subscriptions import Subscription
from .webhook import Response

log = logging.getLogger("broker.dispatcher")

PRUNE_EVERY_SECONDS = 60.0
IDLE_POLL_SECONDS = 1.0
WARN_EVERY_SECONDS = 30.0  # a store that keeps failing is reported this often, not on every pass

# Azure's names for how the last attempt went (lastDeliveryOutcome / deadLetterReason).
OUTCOMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 408: "TimedOut", 413: "RequestEntityTooLarge", 429: "Busy", 503: "Busy"}


def outcome_name(status: int | None, timed_out: bool) -> str:
    if status is not None and 200 <= status <= 204:
        return "Delivered"
    if status is None:
        return "TimedOut" if timed_out else "GenericError"
    return OUTCOMES.get(status, "GenericError")


def topic_path(sub: Subscription, domain_topic: str | None) -> str:
    """The `topic` an event is delivered with: its topic's ARM id, or its domain topic's for an
    event published to a domain."""
    scope = sub.scope
    if scope.kind is DOMAIN and domain_topic:
        return f"{scope.path}/topics/{domain_topic}"
    return scope.path


class Rendering:
    """An event as subscribers get it, rendered once per schema and shared by every subscription
    (and every retry): parsing and re-serialising the stored record per delivery was a quarter of
    the dispatcher's CPU under fan-out. A short-lived view of a `Renderings` entry."""

    __slots__ = ("id", "input_schema", "data_version", "topic", "_bodies", "_seq", "_record", "_event", "_cache")

    def __init__(self, cache: Renderings, seq: int, entry: tuple, record: bytes, event: Event | None = None) -> None:
        self.id, self.input_schema, self.data_version, self.topic = entry[:4]
        self._bodies = entry[4:]  # schema, body, schema, body, ...
        self._cache, self._seq = cache, seq
        self._record = record  # the stored record, for a schema not rendered yet
        self._event = event

    def rendered(self, schema: str, path: str) -> bytes:
        bodies = self._bodies
        for i in range(0, len(bodies), 2):
            if bodies[i] == schema:
                return bodies[i + 1]
        # A delivery schema its subscriptions did not use when it was accepted: kept from now on.
        if self._event is None:
            self._event = Event.from_record(codec.loads(self._record))
        body = schemas.dumps(schemas.render(self._event, schema, path))
        self._bodies = (*bodies, schema, body)
        self._cache._keep([(self._seq, (self.id, self.input_schema, self.data_version, self.topic, *self._bodies))])
        return body


class Renderings:
    """A cache of events as subscribers get them, by sequence number, filled as events are accepted
    (rendered then, while the event is at hand), bounded in entries and in the bytes of the bodies
    it holds: past either bound the oldest entries go (a later delivery renders them again from the
    stored record).

    An entry is a flat tuple of strings and bytes -- (id, input schema, data version, domain topic,
    schema, body, ...) -- which CPython's cycle collector stops tracking: cached Event objects made a
    full collection every few seconds at 1,000 events/s, a ~35 ms stop of the delivery loop."""

    def __init__(self, size: int = 20_000, max_bytes: int = 32 << 20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[int, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, events: Iterable[tuple[int, Event, Iterable[str], str]]) -> None:
        """(sequence number, event, the delivery schemas of its subscriptions, its topic path) tuples."""
        entries = []
        for seq, event, needed, path in events:
            bodies = [part for schema in needed for part in (schema, schemas.dumps(schemas.render(event, schema, path)))]
            entries.append((seq, (event.id, event.input_schema, event.data_version, event.topic, *bodies)))
        self._keep(entries)

    def get(self, seq: int, record: bytes) -> Rendering:
        with self._lock:
            entry = self._items.get(seq)
        if entry is not None:
            return Rendering(self, seq, entry, record)
        # An older event (a retry, a backlog after restart): from the stored record, kept from now on.
        event = Event.from_record(codec.loads(record))
        entry = (event.id, event.input_schema, event.data_version, event.topic)
        self._keep([(seq, entry)])
        return Rendering(self, seq, entry, record, event)

    def _keep(self, entries: list[tuple[int, tuple]]) -> None:
        with self._lock:
            items = self._items
            for seq, entry in entries:
                old = items.get(seq)
                if old is not None:
                    self.bytes -= _entry_bytes(old)
                items[seq] = entry
                self.bytes += _entry_bytes(entry)
            while items and (len(items) > self.size or self.bytes > self.max_bytes):
                self.bytes -= _entry_bytes(items.popitem(last=False)[1])


def _entry_bytes(entry: tuple) -> int:
    return sum(len(part) for part in entry[5::2])


CLAIM_AHEAD = 256  # deliveries claimed from the store per subscription at once
# Deliveries a lane holds at most, in count and in the bytes of their events (the stored record,
# shared by an event's subscriptions). Up to this a burst of publishes goes to a subscriber without
# a round trip through the store as pending and a claim (docs/performance.md).
LANE_LIMIT = 4096
LANE_BYTES = 16 << 20
LOW_WATER = 64  # a lane holding fewer asks the loop to claim more
MAX_HEADERS_KEPT = 64  # header sets kept per subscription (attempt counts x data versions)
WORKER_ROUNDS = 32  # requests one worker sends before giving its thread back (fairness across lanes)


class Lane:
    """One subscription's claimed-but-unsent deliveries and the workers sending them."""

    __slots__ = ("sub", "buffer", "bytes", "workers", "caught_up", "window")

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.buffer: deque[Claimed] = deque()
        self.bytes = 0  # of the bodies in the buffer
        self.workers = 0
        self.caught_up = False  # its last claim left nothing due in the store
        # Requests it may have in flight: one to begin with and after every failed attempt, one
        # more with each success, up to subscription_concurrency. A subscriber that hangs or refuses
        # ties up one worker; a healthy one under a burst is soon sent many requests at once, which
        # is what lets deliveries keep pace with a flood of publishes (docs/performance.md).
        self.window = 1

    def add(self, claimed: list[Claimed]) -> None:
        self.buffer.extend(claimed)
        self.bytes += sum(len(c.body) for c in claimed)


class Dispatcher:
    def __init__(self, store: Store, registry, client, clock, config, metrics, feed) -> None:
        self.store = store
        self.deliveries = store.deliveries
        self.registry = registry
        self.client = client
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.feed = feed
        self.storage = StorageAccount.from_config(config)  # None without BROKER_STORAGE_CONNECTION_STRING
        self.blobs = BlobWriter(config.data_dir, self.storage)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._all_idle = threading.Condition(self._lock)  # notified when the last worker ends
        self._lanes: dict[int, Lane] = {}
        self.renderings = Renderings()
        self._thread: threading.Thread | None = None
        self._workers = 0  # worker coroutines alive, across all lanes
        self._tasks: set[asyncio.Task] = set()  # their tasks (loop thread only)
        self._starved = False  # a lane got fewer workers than it wanted (delivery_workers cap)
        self._direct = False  # fresh deliveries may be handed over at publish (running only)
        self._completed: list[Outcome] = []  # outcomes of this loop pass, not yet handed to the store
        self._tally: dict = {}  # and their metric counts, not yet added
        self._next_prune = 0.0
        self._deadline = 0.0  # (wall clock) when the dispatcher thread wakes at the latest
        self._warned = 0.0  # monotonic time of the last "store failing" warning

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        recovered = self.deliveries.recover()
        if recovered:
            log.info("resuming deliveries that were in flight when the broker stopped", extra={"count": recovered})
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()
        self._direct = True

    def stop(self, timeout: float = 5.0) -> None:
        self._direct = False
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        with self._lock:  # requests in flight finish (their workers take no new ones)
            self._all_idle.wait_for(lambda: self._workers == 0, timeout)
        if self.storage is not None:
            self.storage.close()

    @property
    def running(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def wake(self) -> None:
        self._wake.set()

    def wake_at(self, when: float) -> None:
        """Make sure the dispatcher thread looks again by wall-clock time `when` (a retry fell due)."""
        if when < self._deadline:
            self._deadline = when  # (a race with the thread's own setting only wakes it early)
            self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait = self.dispatch_due()
                self._prune_if_due()
                self._retry_records()
            except StoreClosed:
                return
            except Exception as exc:  # the loop must survive anything: say so and retry shortly
                self._warn("dispatcher loop error", exc)
                wait = IDLE_POLL_SECONDS
            self._deadline = self.clock.now() + wait
            if wait > 0:
                self._wake.wait(wait)

    def _warn(self, message: str, exc: BaseException) -> None:
        """Log a failure, at most once per WARN_EVERY_SECONDS (a full disk fails every pass)."""
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_SECONDS:
            self._warned = now
            log.warning(message, exc_info=exc)

    def _retry_records(self) -> None:
        """Outcomes whose commit failed (the disk was full) are written again."""
        if self.deliveries.unrecorded:
            self.deliveries.record_pending()

    def dispatch_due(self, submit=None) -> float:
        """Claim what is due into each subscription's lane and staff the lanes with workers; return
        how long the loop may sleep before something else falls due.

        Deliveries are claimed a few hundred at a time (one store transaction), so the per-delivery
        cost is the HTTP request, not the bookkeeping. `submit(coroutine)` starts a worker: on the
        client's event loop by default (tests pass one that runs it to the end at once).
        """
        submit = submit or self._submit
        now = self.clock.now()
        wait = IDLE_POLL_SECONDS
        active = {sub.id: sub for sub in self.registry.subscriptions() if sub.pushed}
        self._retire_lanes(active)
        for key, sub in active.items():
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = Lane(sub)
            lane.sub = sub  # a PUT may have replaced the subscription's settings
            with self._lock:
                buffered, held = len(lane.buffer), lane.bytes
            if buffered < LOW_WATER:
                want = min(self._claim_size(sub), self._capacity(sub) - buffered)
                claimed = self.deliveries.claim(sub.id, now, want, max(LANE_BYTES - held, 0))
                with self._lock:
                    lane.add(claimed)
                    lane.caught_up = claimed.exhausted and lane.bytes < LANE_BYTES
                if claimed.exhausted:
                    due = self.deliveries.next_due(sub.id)
                    if due is not None:
                        wait = min(wait, max(0.0, due - now))
            self._staff(lane, submit)
        return wait

    def _submit(self, work) -> None:
        # Not run_coroutine_threadsafe: nobody reads a worker's result, and chaining a thread-safe
        # future to every worker's task cost GIL time at hundreds of deliveries a second.
        try:
            loop = self.client.loop
            if self.client.on_loop():  # a publish served on the loop's own thread: no wake-up needed
                self._spawn(work)
            else:
                loop.call_soon_threadsafe(self._spawn, work)
        except RuntimeError:  # the client is closed: the broker is stopping
            work.close()
            raise

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    # -- fresh deliveries, straight from the publish -------------------------------------------------

    def direct(self, subs: list[Subscription], count: int) -> set[int]:
        """The subscriptions whose lanes take `count` fresh deliveries each straight from the
        publish: the store records them `inflight` (claimed at birth) and `hand_over` gives them to
        the lane after the commit, with no claim transaction and no wait for this thread. A lane
        that is behind (due deliveries still in the store) or full gets them as pending instead, so
        a backlog keeps its order."""
        if not self._direct:
            return set()
        with self._lock:
            return {
                s.id for s in subs
                if (lane := self._lanes.get(s.id)) is not None and lane.caught_up and lane.bytes < LANE_BYTES
                and (len(lane.buffer) + count <= LANE_LIMIT or len(lane.buffer) + count <= self._capacity(s))
            }

    def _claim_size(self, sub: Subscription) -> int:
        """How many deliveries a claim takes at most: enough for every worker's next request twice."""
        return max(CLAIM_AHEAD, 2 * self.config.subscription_concurrency * sub.max_events_per_batch)

    def _capacity(self, sub: Subscription) -> int:
        """How many deliveries a lane holds at most."""
        return max(LANE_LIMIT, self._claim_size(sub))

    def hand_over(self, handed: list[tuple[Subscription, list[Claimed]]]) -> None:
        """Deliveries claimed at birth (see `direct`), after their commit: into their lanes. Those of
        a subscription deleted meanwhile are dropped; those of one whose lane went away (it lost its
        validation) go back to pending. Neither waits for the store."""
        orphans: list[int] = []
        dropped: list[int] = []
        for sub, claimed in handed:
            if sub.deleted:
                dropped += [c.id for c in claimed]
                continue
            with self._lock:
                lane = self._lanes.get(sub.id)
                if lane is None:
                    orphans += [c.id for c in claimed]
                    continue
                lane.add(claimed)
            self._staff(lane, self._submit)
        if dropped:
            self.deliveries.drop(dropped, "SubscriptionDeleted", self.clock.now())
        if orphans:
            self.deliveries.release(orphans, then=lambda _r, _e: self._wake.set())

    def _staff(self, lane: Lane, submit) -> None:
        with self._lock:
            requests = -(-len(lane.buffer) // lane.sub.max_events_per_batch)
            hire = min(lane.window, requests) - lane.workers
            capped = max(0, min(hire, self.config.delivery_workers - self._workers))
            self._starved = self._starved or capped < hire
            hire = capped
            lane.workers += hire
            self._workers += hire
        for _ in range(hire):
            try:
                submit(self._work(lane))
            except RuntimeError:  # stopping: what the lane holds stays inflight in the store and
                with self._lock:  # is sent again at the next start
                    self._leave(lane)

    def _retire_lanes(self, active: dict) -> None:
        """Lanes of deleted or no longer validated subscriptions give their claims back."""
        for key in [k for k in self._lanes if k not in active]:
            lane = self._lanes[key]
            with self._lock:
                if lane.workers:
                    continue  # its workers finish what they hold first
                leftover = [c.id for c in lane.buffer]
                lane.buffer.clear()
                lane.bytes = 0
                del self._lanes[key]
            if leftover:
                if lane.sub.deleted:
                    self.deliveries.drop(leftover, "SubscriptionDeleted", self.clock.now())
                else:
                    self.deliveries.release(leftover)

    async def _work(self, lane: Lane) -> None:
        """A worker: send the lane's deliveries, a request at a time, then make room for other
        lanes' workers (the `delivery_workers` cap). It leaves when the lane is empty, deciding so
        under the lock that `hand_over` staffs with, so a delivery handed over meanwhile is never
        left without a worker."""
        rounds = 0
        while True:
            with self._lock:
                chunk = self._take(lane) if rounds < WORKER_ROUNDS and not self._stop.is_set() else []
                if not chunk or lane.workers > lane.window:  # (the window shrank: one worker less)
                    lane.buffer.extendleft(reversed(chunk))
                    lane.bytes += sum(len(c.body) for c in chunk)
                    self._leave(lane)
                    # The loop thread is only needed to claim more or to staff a starved lane.
                    wake = self._starved or not lane.caught_up or bool(lane.buffer)
                    self._starved = False
                    break
                low = len(lane.buffer) < LOW_WATER and not lane.caught_up
            rounds += 1
            if low:
                self._wake.set()  # claim more while this request is on the wire
            try:
                await self._deliver(lane, chunk)
            except BaseException:  # cancelled (shutdown): the chunk stays inflight until recovery
                with self._lock:
                    self._leave(lane)
                raise
        self._flush_completed()  # usually done already, at the end of the loop pass
        if wake:
            self._wake.set()

    def _leave(self, lane: Lane) -> None:
        """A worker ends (the caller holds the lock)."""
        lane.workers -= 1
        self._workers -= 1
        if not self._workers:
            self._all_idle.notify_all()

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
        lane.bytes -= size
        return chunk

    def _prune_if_due(self) -> None:
        now = self.clock.now()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_EVERY_SECONDS
        before = now - self.config.retention_hours * 3600
        removed = 0
        while (batch := self.deliveries.prune(before)) and not self._stop.is_set():
            removed += batch  # in batches, so sustained traffic cannot outgrow retention
        if removed:
            log.info("pruned delivered events past retention", extra={"count": removed})

    # -- one request -------------------------------------------------------------------------

    async def _deliver(self, lane: Lane, chunk: list[Claimed]) -> None:
        try:
            await self._attempt(lane, chunk)
        except Exception:
            log.exception("delivery failed unexpectedly; returning it to pending", extra={"topic": lane.sub.scope.label, "subscription": lane.sub.name})
            self.deliveries.release([c.id for c in chunk])

    async def _attempt(self, lane: Lane, chunk: list[Claimed]) -> None:
        sub = lane.sub
        now = self.clock.now()
        if len(chunk) == 1:  # most requests (maxEventsPerBatch 1)
            live, expired = (chunk, []) if chunk[0].expires_at > now else ([], chunk)
        else:
            expired = [c for c in chunk if c.expires_at <= now]
            live = [c for c in chunk if c.expires_at > now]
        if expired:
            final = "deadlettered" if sub.dead_letter else "dropped"
            outcomes = [Outcome([c.id], c.attempts, now, final, "TimeToLiveExceeded", dead_letter_reason="TimeToLiveExceeded") for c in expired]
            await asyncio.to_thread(self._finish, sub, outcomes, expired, attempted=False)  # waits for the store
        if not live:
            return

        events = [self.renderings.get(c.event_seq, c.body) for c in live]
        schema = sub.schema_for(events[0].input_schema)
        parts = [e.rendered(sub.schema_for(e.input_schema), topic_path(sub, e.topic)) for e in events]
        single_ce = schema == CLOUDEVENT_SCHEMA and sub.max_events_per_batch == 1
        headers = self._headers(sub, events[0], parts[0], schema, live[0].attempts, single_ce)
        if sub.queue is None:
            body = parts[0] if single_ce else b"[" + b",".join(parts) + b"]"
            resp = await self.client.deliver(sub.endpoint, body, headers, self.config.delivery_timeout)
        elif self.storage is None:  # the broker restarted without its storage account: retried until it is back
            resp = Response(None, 0.0, error="no storage account: BROKER_STORAGE_CONNECTION_STRING is not set")
        else:  # a Storage queue message holds one event, never an array
            resp = await self.storage.enqueue(sub.queue.queue_name, parts[0], sub.queue.message_ttl)
        done = self.clock.now()
        verdict = classify(resp.status)
        if verdict == "retry":
            lane.window = 1
        elif lane.window < self.config.subscription_concurrency:
            lane.window += 1
        outcome = outcome_name(resp.status, resp.timed_out)
        final = "deadlettered" if sub.dead_letter else "dropped"
        # The deliveries of this request, grouped by what happens to them next: all of them alike,
        # unless they were on different attempts (a retry batched with fresh events).
        groups: dict[tuple[int, str, float | None, str | None], list[int]] = {}
        for c in live:
            attempt = c.attempts + 1
            if verdict == "delivered":
                key = (attempt, "delivered", None, None)
            elif verdict == "reject":
                key = (attempt, final, None, outcome)
            elif attempt >= sub.retry.max_delivery_attempts:
                key = (attempt, final, None, "MaxDeliveryAttemptsExceeded")
            else:  # past the time-to-live the next claim dead-letters it with TimeToLiveExceeded
                key = (attempt, "pending", min(done + self.clock.scaled(sub.retry.delay_after(attempt)), c.expires_at), None)
            ids = groups.get(key)
            if ids is None:
                groups[key] = [c.id]
            else:
                ids.append(c.id)
        error = None if verdict == "delivered" else (resp.error or _snippet(resp.body))
        outcomes = [
            Outcome(ids, attempt, done, status, outcome, resp.status, resp.latency_ms, error, next_at, reason, headers, len(live))
            for (attempt, status, next_at, reason), ids in groups.items()
        ]
        if any(o.status == "deadlettered" for o in outcomes):  # waits for the store, then writes blobs
            await asyncio.to_thread(self._finish, sub, outcomes, live, attempted=True)
        else:
            self._finish(sub, outcomes, live, attempted=True)
        if resp.latency_ms is not None:
            self.metrics.child(self.metrics.latency, sub.scope.label, sub.name).observe(resp.latency_ms / 1000)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "delivery attempt",
                extra={
                    "topic": sub.scope.label, "subscription": sub.name, "event_ids": [e.id for e in events],
                    "attempt": live[0].attempts + 1, "status": resp.status, "outcome": outcome,
                    "latency_ms": round(resp.latency_ms, 2), "next": outcomes[0].status, "error": resp.error,
                },
            )

    def _headers(self, sub: Subscription, event: Rendering, first: bytes, schema: str, attempts: int, single_ce: bool) -> dict[str, str]:
        """The request's headers. Without attributes taken from the event they depend only on the
        key below, so such a set is built once per subscription and shared (nothing changes it)."""
        key = (schema, single_ce, attempts, event.data_version)
        kept = sub.headers_kept
        headers = kept.get(key)
        if headers is None:
            headers = self._build_headers(sub, event, first, schema, attempts, single_ce)
            if not any(a.source_field for a in sub.attributes):
                if len(kept) >= MAX_HEADERS_KEPT:
                    kept.clear()
                kept[key] = headers
        return headers

    @staticmethod
    def _build_headers(sub: Subscription, event: Rendering, first: bytes, schema: str, attempts: int, single_ce: bool) -> dict[str, str]:
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
                headers[attr.name] = wire_value(value if isinstance(value, str) else orjson.dumps(value).decode())
        return headers

    def _finish(self, sub: Subscription, outcomes: list[Outcome], claimed: list[Claimed], attempted: bool) -> None:
        """Record outcomes. On the loop (no dead letters) they join the completions that go to the
        store together at the end of this loop pass; dead letters and expiries run in a thread and
        wait for their commit (a blob is written from the stored record)."""
        dead = [o for o in outcomes if o.status == "deadlettered"]
        on_loop = attempted and not dead
        # Counted before the store records them: whoever sees the store settled (a test, a
        # dashboard) finds the counters already moved, never behind it.
        for o in outcomes:
            counter = self._counter(sub, o.status if o.status != "pending" else "retry")
            if on_loop:  # added at the end of the loop pass: one locked inc per kind, not per outcome
                self._tally[counter] = self._tally.get(counter, 0) + len(o.delivery_ids)
            else:
                counter.inc(len(o.delivery_ids))
        if not attempted:
            self.deliveries.expire(outcomes)
        elif dead:
            self.deliveries.complete(outcomes, wait=True)
            self._write_blobs(sub, dead)
        else:
            if not self._completed:
                asyncio.get_running_loop().call_soon(self._flush_completed)
            self._completed.extend(outcomes)
        if self.feed.has_listeners:
            seqs = {c.id: c.event_seq for c in claimed}
            for o in outcomes:
                for delivery in o.delivery_ids:
                    self.feed.publish("attempt", {
                        "topic": sub.scope.label, "subscription": sub.name, "delivery": delivery, "seq": seqs[delivery],
                        "attempt": o.attempt, "status": o.status, "outcome": o.outcome, "statusCode": o.status_code,
                        "latencyMs": o.latency_ms, "at": o.at, "nextAttemptAt": o.next_attempt_at,
                        "deadLetterReason": o.dead_letter_reason,
                    })

    def _flush_completed(self) -> None:
        """One store job for every delivery completed in this loop pass (the commit is not waited
        for: until it lands the deliveries are still `inflight`, so a crash re-sends them). Retries
        among them wake the dispatcher thread once they are stored, in time for their next attempt."""
        done, self._completed = self._completed, []
        tally, self._tally = self._tally, {}
        for counter, n in tally.items():  # first, as in _finish
            counter.inc(n)
        if not done:
            return
        retry_at = min((o.next_attempt_at for o in done if o.status == "pending" and o.next_attempt_at is not None), default=None)
        self.deliveries.complete(done, wait=False, then=None if retry_at is None else lambda _e: self.wake_at(retry_at))

    def _counter(self, sub: Subscription, outcome: str):
        return self.metrics.child(self.metrics.deliveries, sub.scope.label, sub.name, outcome)

    def _write_blobs(self, sub: Subscription, dead: list[Outcome]) -> None:
        for o in dead:
            self.write_dead_letters(sub, o.delivery_ids, o.at)

    def write_dead_letters(self, sub: Subscription, delivery_ids: Iterable[int], at: float) -> None:
        """One blob per dead-lettered event, built from the stored delivery (the single source of
        the Azure fields: attempts, last outcome, times). Blocks: called on a thread of its own
        (never under a lock, never on the delivery loop)."""
        for delivery in delivery_ids:
            row = self.deliveries.dead_letter(sub.id, delivery)
            if row is None:  # redelivered or purged in the meantime
                continue
            self.blobs.write(sub.scope.label, sub.name, at, [dead_letter_record(row, sub)], sub.dead_letter_container)


def dead_letter_record(row: dict, sub: Subscription) -> dict:
    event = Event.from_record(codec.loads(row["body"]))
    return record(schemas.render(event, sub.schema_for(event.input_schema), topic_path(sub, event.topic)), row)


def _lookup(envelope: dict, path: str | None) -> Any:
    value: Any = envelope
    for part in (path or "").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _snippet(body: bytes) -> str:
    return body[:300].decode("utf-8", "replace")
