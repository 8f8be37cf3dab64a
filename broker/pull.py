"""The pull API of namespace queue subscriptions, as `EventGridConsumerClient` calls it:

    POST /namespaces/{ns}/topics/{t}/eventsubscriptions/{s}:receive?maxEvents=&maxWaitTime=
    POST .../{s}:acknowledge | :release?releaseDelayInSeconds= | :reject | :renewLock   {"lockTokens": [...]}

A receive is a long poll: answered as soon as events are there, else when `maxWaitTime` (not
scaled: it is the receiver's own patience) has passed. The waiting receives belong to the delivery
loop's thread, as everything else here: the loop serves the request (serving.py), runs the store's
write without waiting for it (`transact_soon`), and answers through `later` once the write is in.
A receive finding nothing waits until a publish, a release or a settled lock of its subscription
wakes it, until an event held back (a release delay, a lock) falls due, or until its time is up.
Settling calls answer per token: an unknown or expired token is a failed token, not an HTTP error.
Events a write dead-letters (a reject, maxDeliveryCount, the time to live) get their blobs from a
thread of the loop's default executor once the write is in: a file or a storage call blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from . import auth, codec, schemas
from .errors import ApiError, bad_request
from .events import CLOUDEVENT_SCHEMA, Event
from .resources import NAMESPACE, NAMESPACE_TOPIC
from .store import QueueRules
from .subscriptions import Subscription

log = logging.getLogger("broker.pull")

MAX_EVENTS_RANGE = (1, 100)
MAX_WAIT_RANGE = (10, 120)
MAX_LOCK_TOKENS = 100
RELEASE_DELAYS = frozenset({0, 10, 60, 600, 3600})  # Azure's releaseDelayInSeconds
OPERATIONS = frozenset({"receive", "acknowledge", "release", "reject", "renewLock"})

Answer = tuple[int, bytes]  # status, JSON body


def split(path: str) -> tuple[str, str, str, str] | None:
    """(namespace, topic, subscription, operation) of a pull path, else None."""
    parts = path.split("/")
    if len(parts) != 7 or parts[1] != "namespaces" or parts[3] != "topics" or parts[5].lower() != "eventsubscriptions":
        return None
    name, _, operation = parts[6].partition(":")
    if operation not in OPERATIONS or not name:
        return None
    return parts[2], parts[4], name, operation


@dataclass(eq=False)
class _Waiter:
    sub: Subscription
    max_events: int
    deadline: float  # loop time
    answer: Callable[[Answer], None]
    timer: asyncio.TimerHandle | None = field(default=None)


class Pull:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.store = engine.store
        self.loop = engine.client.loop
        self._waiting: dict[int, deque[_Waiter]] = {}  # subscription id -> receives waiting (loop thread only)
        self._trying: set[int] = set()  # subscriptions with a receive's write under way
        self._wakeups: dict[int, asyncio.TimerHandle] = {}  # subscription id -> its next due event's timer

    # -- HTTP -----------------------------------------------------------------------------------

    def respond(self, parts: tuple[str, str, str, str], path: str, query: dict[str, str], headers: dict[str, str],
                body: Callable[[], bytes], answer: Callable[[Answer], None], wait: bool = True) -> None:
        """Serve a pull request, answering through `answer(status, body)` (on the loop's thread)
        now or later; an invalid one raises ApiError. Without `wait` (a request that must be
        answered before this returns) the write is waited for and a receive does not wait for
        events."""
        namespace, topic, name, operation = parts
        sub = self._subscription(namespace, topic, name, headers, path, query)
        rules = self._rules(sub)
        now = self.engine.clock.now()
        if operation == "receive":
            max_events = _int_param(query, "maxEvents", 1, MAX_EVENTS_RANGE)
            max_wait = _int_param(query, "maxWaitTime", 60, MAX_WAIT_RANGE)
            if wait:
                self.receive(sub, max_events, max_wait, answer)
            else:
                dead: list[int] = []
                result, error = _now(self.store.commits, self.store.queues.receiving(sub.id, max_events, now, rules, dead=dead))
                self._dead_lettered(sub, dead, now, error)
                answer(_failure(error) if error is not None else self._events(sub, result))
            return
        tokens = _lock_tokens(body())
        delay = 0.0
        if operation == "release":
            raw = query.get("releaseDelayInSeconds", "0")
            if not raw.isdigit() or int(raw) not in RELEASE_DELAYS:
                raise bad_request(f"releaseDelayInSeconds must be one of {', '.join(map(str, sorted(RELEASE_DELAYS)))}; found '{raw}'.",
                                  "InvalidRequestParameter", "releaseDelayInSeconds")
            delay = self.engine.clock.scaled(int(raw))

        dead: list[int] = []

        def done(result, error) -> None:
            self._dead_lettered(sub, dead, now, error)
            if error is not None:
                answer(_failure(error))
                return
            succeeded, failed = result
            answer((200, orjson.dumps({"succeededLockTokens": succeeded, "failedLockTokens": [
                {"lockToken": t, "error": {"code": code, "message": message}} for t, (code, message) in failed]})))
            if succeeded and operation in ("release", "renewLock"):
                self.wake(sub.id)

        job = self.store.queues.settling(sub.id, operation, tokens, now, rules, delay, dead=dead)
        if wait:
            self.store.commits.transact_soon([(job, self._on_loop(done))])
        else:
            done(*_now(self.store.commits, job))

    def _subscription(self, namespace: str, topic: str, name: str, headers, path: str, query) -> Subscription:
        registry = self.engine.registry
        ns = registry.get(NAMESPACE, namespace)
        found = registry.get(NAMESPACE_TOPIC, topic, ns) if ns is not None else None
        if found is None:
            raise ApiError(404, "NotFound", f"Namespace topic '{namespace}/{topic}' does not exist.")
        try:
            auth.authenticate(headers, found.keys, path, query=query)
        except auth.AuthError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        sub = found.subscription(name)
        if sub is None:
            raise ApiError(404, "NotFound", f"Event subscription '{name}' does not exist on namespace topic '{namespace}/{topic}'.")
        if sub.mode != "queue":
            raise ApiError(400, "BadRequest", f"Event subscription '{name}' pushes its events (deliveryMode Push): it has no queue to receive from.")
        return sub

    def _rules(self, sub: Subscription) -> QueueRules:
        return QueueRules(self.engine.clock.scaled(sub.lock_seconds), sub.retry.max_delivery_attempts, sub.dead_letter)

    # -- receive (everything below runs on the loop's thread) -----------------------------------

    def receive(self, sub: Subscription, max_events: int, max_wait: float, answer: Callable[[Answer], None]) -> None:
        waiter = _Waiter(sub, max_events, self.loop.time() + max_wait, answer)
        waiter.timer = self.loop.call_at(waiter.deadline, self._give_up, waiter)
        self._waiting.setdefault(sub.id, deque()).append(waiter)
        self._try(sub.id)

    def wake(self, subscription: int) -> None:
        """Something may be receivable now for this subscription: waiting receives look again."""
        if self._waiting.get(subscription):
            self._try(subscription)

    def notify(self, subscriptions: list[int]) -> None:
        """Wake the receives of these subscriptions, from any thread."""
        if self.engine.client.on_loop():
            for sub in subscriptions:
                self.wake(sub)
        else:
            self.loop.call_soon_threadsafe(self.notify, subscriptions)

    def _try(self, subscription: int) -> None:
        """Run one receive's write for the first receive waiting on the subscription (one at a
        time per subscription: a second would only find what the first took)."""
        queue = self._waiting.get(subscription)
        if not queue or subscription in self._trying:
            return
        waiter = queue[0]
        self._trying.add(subscription)
        now = self.engine.clock.now()
        dead: list[int] = []
        job = self.store.queues.receiving(subscription, waiter.max_events, now, self._rules(waiter.sub), dead=dead)

        def then(result, error) -> None:
            self._dead_lettered(waiter.sub, dead, now, error)
            self._tried(waiter, result, error)

        try:
            self.store.commits.transact_soon([(job, self._on_loop(then))])
        except Exception as exc:  # the store is closed: the broker is stopping
            self._trying.discard(subscription)
            self._finish(waiter, _failure(exc))

    def _dead_lettered(self, sub: Subscription, dead: list[int], at: float, error: BaseException | None) -> None:
        """Once a write that dead-lettered events is in, their blobs are written on a thread of the
        loop's default executor (a file or a storage call blocks)."""
        if dead and error is None:  # (from any thread: the answer of a worker's request comes here too)
            self.loop.call_soon_threadsafe(self.loop.run_in_executor, None, self._write_dead_letters, sub, list(dead), at)

    def _write_dead_letters(self, sub: Subscription, dead: list[int], at: float) -> None:
        try:
            self.engine.dispatcher.write_dead_letters(sub, dead, at)
        except Exception:  # the records stay in the store, where the API and dashboard show them
            log.exception("could not write dead-letter blobs", extra={"subscription": sub.label, "count": len(dead)})

    def _tried(self, waiter: _Waiter, result, error) -> None:
        subscription = waiter.sub.id
        self._trying.discard(subscription)
        if error is not None:
            self._finish(waiter, _failure(error))
        elif result:
            self._finish(waiter, self._events(waiter.sub, result))
            self._try(subscription)  # the next receive waiting may find more
        elif self.loop.time() >= waiter.deadline:
            self._finish(waiter, (200, b'{"value":[]}'))
            self._try(subscription)
        elif self._waiting.get(subscription):
            self._wake_when_due(subscription)

    def _wake_when_due(self, subscription: int) -> None:
        """Look again when the next event held back (released with a delay, locked) falls due."""
        due = self.store.queues.next_change(subscription)
        old = self._wakeups.pop(subscription, None)
        if old is not None:
            old.cancel()
        if due is not None:
            delay = max(0.0, due - self.engine.clock.now()) + 0.001
            self._wakeups[subscription] = self.loop.call_later(delay, self._due, subscription)

    def _due(self, subscription: int) -> None:
        self._wakeups.pop(subscription, None)
        self.wake(subscription)

    def _give_up(self, waiter: _Waiter) -> None:
        """maxWaitTime has passed: an empty answer (unless its write is just under way)."""
        waiter.timer = None
        queue = self._waiting.get(waiter.sub.id)
        if queue and queue[0] is waiter and waiter.sub.id in self._trying:
            return  # its receive is being written: answered with what it found
        self._finish(waiter, (200, b'{"value":[]}'))

    def _finish(self, waiter: _Waiter, answer: Answer) -> None:
        queue = self._waiting.get(waiter.sub.id)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiting[waiter.sub.id]
                timer = self._wakeups.pop(waiter.sub.id, None)
                if timer is not None:
                    timer.cancel()
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        waiter.answer(answer)

    def _events(self, sub: Subscription, received) -> Answer:
        path = sub.scope.path
        value = []
        for item in received:
            event = Event.from_record(codec.loads(item.body))
            value.append({"brokerProperties": {"lockToken": item.lock_token, "deliveryCount": item.delivery_count},
                          "event": schemas.render(event, CLOUDEVENT_SCHEMA, path)})
        return 200, codec.dumps({"value": value})

    def _on_loop(self, fn: Callable) -> Callable:
        """`fn(result, error)` on the loop's thread, wherever the commit ran."""
        def then(result, error) -> None:
            if self.engine.client.on_loop():
                fn(result, error)
            else:
                self.loop.call_soon_threadsafe(fn, result, error)
        return then

    # -- for a worker thread (a request waitress did not hand to the loop) ------------------------

    def respond_blocking(self, parts, path: str, query, headers, body: Callable[[], bytes]) -> Answer:
        """`respond` for a thread that may wait: the request runs on the loop, this thread waits
        for its answer (at most its maxWaitTime and a little)."""
        got: list[Answer] = []
        done = threading.Event()

        def answer(a: Answer) -> None:
            got.append(a)
            done.set()

        def start() -> None:
            try:
                self.respond(parts, path, query, headers, lambda: raw, answer)
            except ApiError as exc:
                answer((exc.status, orjson.dumps(exc.to_body())))

        raw = body()
        self.loop.call_soon_threadsafe(start)
        if not done.wait(MAX_WAIT_RANGE[1] + 30):
            return 503, orjson.dumps(ApiError(503, "ServiceUnavailable", "The broker did not answer in time.").to_body())
        return got[0]


def _now(commits, job) -> tuple[object, BaseException | None]:
    try:
        return commits.transact(job), None
    except Exception as exc:
        return None, exc


def _failure(error: BaseException) -> Answer:
    from .store import unavailable

    full = unavailable(error)
    if full is not None:
        return 503, orjson.dumps(ApiError(503, "ServiceUnavailable", "The broker cannot write to its store right now; retry later.").to_body())
    log.error("queue operation failed", exc_info=error)
    return 500, orjson.dumps(ApiError(500, "InternalServerError", "The broker hit an unexpected error; see its log.").to_body())


def _int_param(query: dict[str, str], name: str, default: int, bounds: tuple[int, int]) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    low, high = bounds
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}; found '{raw}'.", "InvalidRequestParameter", name)
    return value


def _lock_tokens(raw: bytes) -> list[str]:
    try:
        payload = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}", "InvalidJson") from None
    tokens = payload.get("lockTokens") if isinstance(payload, dict) else None
    if not isinstance(tokens, list) or not tokens or len(tokens) > MAX_LOCK_TOKENS or not all(isinstance(t, str) for t in tokens):
        raise bad_request(f"The body must be {{\"lockTokens\": [...]}} with 1 to {MAX_LOCK_TOKENS} lock tokens.", "InvalidRequestBody", "lockTokens")
    return tokens
