"""The live dashboard: one HTML page at `/`, JSON read endpoints and a server-sent event stream.

    GET /                                  the page (assets under /dashboard/static/, nothing from a CDN)
    GET /dashboard/api/topics              topics, domains and namespaces, their subscriptions and delivery counts
    GET /dashboard/api/events?limit=&before=   recent events (newest first) with deliveries and attempts
    GET /dashboard/api/events/<seq>        one event in full: per delivery the headers and body sent
    GET /dashboard/api/deadletters?limit=  dead-lettered deliveries across all subscriptions
    GET /dashboard/stream                  text/event-stream of the engine's activity feed

The page publishes and redelivers through the broker's own publish and management APIs, so what
it shows is exactly what any other client would get.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, render_template, request

from . import codec, schemas
from .dispatcher import topic_path
from .errors import ApiError, bad_request, not_found
from .events import CLOUDEVENT_SCHEMA, Event
from .resources import DOMAIN, NAMESPACE, NAMESPACE_TOPIC, TOPIC
from .subscriptions import Subscription

bp = Blueprint(
    "dashboard", __name__, static_folder="static", static_url_path="/dashboard/static", template_folder="templates"
)

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# The page's own stylesheet and script only: any injected markup could not run or phone home.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class StreamSettings:
    """Per-app stream tuning (in app.extensions, so tests can shorten the waits).

    Every stream holds one waitress worker thread for as long as it is open, so the number of open
    streams is capped below the thread count and each stream ends after `max_seconds` (the browser's
    EventSource reconnects by itself): a forgotten tab can never starve the publish API.
    """

    heartbeat_seconds: float = 15.0
    poll_seconds: float = 1.0  # longest a stream thread waits before re-checking disconnect/shutdown
    max_seconds: float = 300.0
    retry_ms: int = 3000
    max_streams: int = 4
    slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(self.max_streams)


def settings(app=None) -> StreamSettings:
    app = app or current_app
    found = app.extensions.get("dashboard")
    if found is None:
        threads = app.extensions["broker"].config.threads
        # dict.setdefault is atomic: two first requests racing still share one object.
        found = app.extensions.setdefault("dashboard", StreamSettings(max_streams=max(1, threads // 2)))
    return found


def engine():
    return current_app.extensions["broker"]


# -- the page -------------------------------------------------------------------------------------


@bp.get("/")
def page():
    eng = engine()
    resp = Response(render_template("dashboard.html", default_topic=eng.config.default_topic), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.after_request
def _no_sniff(resp: Response) -> Response:
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


# -- JSON views -----------------------------------------------------------------------------------


@bp.get("/dashboard/api/topics")
def topics():
    """Topics, domains (with their topics) and namespaces (with theirs), each with its
    subscriptions and their delivery counts."""
    eng = engine()
    counts = eng.store.deliveries.counts()
    events = eng.store.deliveries.events_per_topic()
    reg = eng.registry

    def card(r, **more) -> dict[str, Any]:
        out = {"name": r.name, "path": r.path, "subscriptions": [_subscription(s, counts.get(s.id, {}))
                                                                  for s in sorted(r.subscriptions, key=lambda s: s.name.lower())]}
        if r.kind.events:
            out.update(inputSchema=r.input_schema, anonymous=not r.keys, events=events.get(r.id, 0),
                       endpoint=f"{eng.config.base_url}{r.short_path}" + ("/api/events" if r.kind is not NAMESPACE_TOPIC else ""))
        return {**out, **more}

    def kids(r) -> list[dict[str, Any]]:
        return [card(c) for c in sorted(r.children.values(), key=lambda c: c.name.lower())]

    return _json({
        "topics": [card(t) for t in reg.top(TOPIC)],
        "domains": [card(d, topics=kids(d)) for d in reg.top(DOMAIN)],
        "namespaces": [card(n, topics=kids(n), anonymous=not n.keys) for n in reg.top(NAMESPACE)],
        "defaultTopic": eng.config.default_topic,
    })


def _subscription(sub, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "name": sub.name,
        "url": sub.short_path,
        "mode": sub.mode,  # push | queue (a namespace topic's subscription the application pulls from)
        "lockSeconds": sub.lock_seconds if sub.mode == "queue" else None,
        "endpoint": sub.endpoint if sub.queue is None else f"Storage queue {sub.queue.queue_name}",
        "filter": sub.spec.get("filter") or sub.spec.get("filtersConfiguration") or {},
        "deliverySchema": sub.delivery_schema or "same as input",
        "state": sub.state,
        "stateDetail": sub.state_detail,
        "maxDeliveryAttempts": sub.retry.max_delivery_attempts,
        "eventTimeToLiveInMinutes": sub.retry.event_ttl_minutes,
        "maxEventsPerBatch": sub.max_events_per_batch,
        "deadLetter": sub.dead_letter,
        "counts": {
            "delivered": counts.get("delivered", 0),
            "pending": counts.get("pending", 0) + counts.get("inflight", 0),
            "locked": counts.get("locked", 0),
            "dropped": counts.get("dropped", 0),
            "deadlettered": counts.get("deadlettered", 0),
        },
    }


@bp.get("/dashboard/api/events")
def events():
    eng = engine()
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    before = _int_arg("before", None, 1, 2**62)
    rows = eng.store.deliveries.recent_events(limit, before)
    deliveries = eng.store.deliveries.of_events([r["seq"] for r in rows])
    attempts = _by_delivery(eng.store.deliveries.attempts_for([d["id"] for d in deliveries]))
    names = _Names(eng, rows, deliveries)
    per_event: dict[int, list] = {}
    for d in deliveries:
        per_event.setdefault(d["event_seq"], []).append(_delivery(d, attempts.get(d["id"], []), names, with_headers=False))
    out = [_event_summary(r, per_event.get(r["seq"], []), names) for r in rows]
    # `before` for the next (older) page; null when this page reached the oldest stored event.
    return _json({"events": out, "before": rows[-1]["seq"] if len(rows) == limit else None})


@bp.get("/dashboard/api/events/<int:seq>")
def event_detail(seq: int):
    eng = engine()
    row = eng.store.deliveries.event(seq)
    if row is None:
        raise not_found(f"Event {seq} is not in the store (never accepted, or pruned after retention).")
    event = Event.from_record(codec.loads(row["body"]))
    deliveries = eng.store.deliveries.of_events([seq])
    attempts = _by_delivery(eng.store.deliveries.attempts_for([d["id"] for d in deliveries]))
    names = _Names(eng, [row], deliveries)
    path = names.path(row["topic"], event.topic)
    out = _event_summary(row, [], names)
    out["inputSchema"] = event.input_schema
    out["event"] = schemas.render(event, schemas.filter_schema(event.input_schema), path)
    out["eventJson"] = _pretty(out["event"])
    for d in deliveries:
        item = _delivery(d, attempts.get(d["id"], []), names, with_headers=True)
        sub = eng.registry.find(d["subscription"])
        item["subscriptionDeleted"] = sub is None
        item.update(_rendered_body(event, sub, topic_path(sub, event.topic) if sub is not None else path))
        out["deliveries"].append(item)
    return _json(out)


def _rendered_body(event: Event, sub, topic_path: str) -> dict[str, Any]:
    """The body this subscription is sent for this event, built as the dispatcher builds it: one
    CloudEvent alone is a JSON object, anything else a JSON array. A batched request also carried
    the other events of its batch (see each attempt's batchSize)."""
    if sub is None:  # deleted since: show the event in its input schema
        schema, single = schemas.filter_schema(event.input_schema), False
    else:
        schema = sub.schema_for(event.input_schema)
        single = schema == CLOUDEVENT_SCHEMA and sub.max_events_per_batch == 1
    try:
        rendered = schemas.render(event, schema, topic_path)
    except ValueError as exc:
        return {"deliverySchema": schema, "body": None, "bodyError": str(exc)}
    body = rendered if single else [rendered]
    return {"deliverySchema": schema, "body": body, "bodyJson": _pretty(body)}


def _pretty(value: Any) -> str:
    """Indented JSON text for the page to show verbatim: a browser's JSON.parse would round any
    integer beyond 2**53, and the point of the view is to show exactly what was sent."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@bp.get("/dashboard/api/deadletters")
def dead_letters():
    eng = engine()
    limit = _int_arg("limit", 100, 1, MAX_LIMIT)
    rows, total = eng.store.deliveries.all_dead_letters(limit)
    names = _Names(eng, [], rows)
    return _json({
        "total": total,
        "deadLetters": [
            {
                "deliveryId": r["id"], "topic": names.scope(r["subscription"]), "subscription": names.subscription(r["subscription"]),
                "url": names.url(r["subscription"]), "seq": r["event_seq"],
                "eventId": r["event_id"], "type": r["event_type"], "subject": r["subject"],
                "reason": r["dead_letter_reason"], "lastStatus": r["last_status"], "lastOutcome": r["last_outcome"],
                "attempts": r["attempts"], "lastAttemptAt": r["last_attempt_at"], "at": r["done_at"],
            }
            for r in rows
        ],
    })


class _Names:
    """Names for the resource ids of stored rows: from the registry, or from the store for a
    resource deleted since (its row is kept a while for this)."""

    def __init__(self, eng, events: list[dict], deliveries: list[dict]) -> None:
        self.registry = eng.registry
        ids = {r["topic"] for r in events} | {d["subscription"] for d in deliveries}
        unknown = [i for i in ids if eng.registry.find(i) is None]
        self.gone = eng.store.resources.names(unknown)
        parents = [p for _, _, p, _ in self.gone.values() if p is not None and p not in self.gone and eng.registry.find(p) is None]
        self.gone.update(eng.store.resources.names(parents))

    def _label(self, resource_id: int | None) -> str:
        found = self.registry.find(resource_id) if resource_id is not None else None
        if found is not None:
            return found.label
        kind, name, parent, _ = self.gone.get(resource_id, ("", "(deleted)", None, True))
        return f"{self._label(parent)}/{name}" if parent is not None and kind != "subscription" else name

    def scope(self, sub_id: int) -> str:
        found = self.registry.find(sub_id)
        if isinstance(found, Subscription):
            return found.scope.label
        parent = self.gone.get(sub_id, (None, None, None, True))[2]
        return self._label(parent) if parent is not None else "(deleted)"

    def subscription(self, sub_id: int) -> str:
        found = self.registry.find(sub_id)
        if found is not None:
            return found.name
        return self.gone.get(sub_id, ("", "(deleted)", None, True))[1]

    def url(self, sub_id: int) -> str | None:
        found = self.registry.find(sub_id)
        return found.short_path if isinstance(found, Subscription) else None

    def topic(self, topic_id: int, domain_topic: str | None) -> str:
        label = self._label(topic_id)
        return f"{label}/{domain_topic}" if domain_topic else label

    def path(self, topic_id: int, domain_topic: str | None) -> str:
        found = self.registry.find(topic_id)
        if found is None:
            return f"(deleted)/{self._label(topic_id)}"
        return f"{found.path}/topics/{domain_topic}" if found.kind is DOMAIN and domain_topic else found.path


def _event_summary(row: dict, deliveries: list[dict], names: _Names) -> dict[str, Any]:
    try:
        record = codec.loads(row["body"])
        time_, domain_topic = record.get("time"), record.get("topic")
    except (codec.JSONDecodeError, AttributeError):
        time_, domain_topic = None, None
    return {
        "seq": row["seq"], "topic": names.topic(row["topic"], domain_topic), "id": row["event_id"], "type": row["event_type"],
        "subject": row["subject"], "time": time_, "receivedAt": row["received_at"], "deliveries": deliveries,
    }


def _delivery(d: dict, attempts: list[dict], names: _Names, with_headers: bool) -> dict[str, Any]:
    # Attempts come in order; a redelivered dead letter starts again at attempt 1, and the whole
    # history (earlier rounds included) is the timeline the developer wants to see.
    return {
        "id": d["id"], "subscription": names.subscription(d["subscription"]), "status": d["status"], "attemptCount": d["attempts"],
        "nextAttemptAt": d["next_attempt_at"] if d["status"] in ("pending", "inflight") else None,
        "expiresAt": d["expires_at"], "lastStatus": d["last_status"], "lastOutcome": d["last_outcome"],
        "lastLatencyMs": d["last_latency_ms"], "deadLetterReason": d["dead_letter_reason"], "doneAt": d["done_at"],
        "attempts": [_attempt(a, with_headers) for a in attempts],
    }


def _attempt(a: dict, with_headers: bool) -> dict[str, Any]:
    out = {
        "attempt": a["attempt"], "at": a["at"], "statusCode": a["status_code"], "latencyMs": a["latency_ms"],
        "outcome": a["outcome"], "error": a["error"], "batchSize": a["batch_size"],
    }
    if with_headers:
        out["headers"] = a["headers"] or {}
    return out


def _by_delivery(attempts: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for a in attempts:
        out.setdefault(a["delivery_id"], []).append(a)
    return out


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer.", "InvalidQuery", name) from None
    if not low <= value <= high:
        raise bad_request(f"{name} must be from {low} to {high}.", "InvalidQuery", name)
    return value


def _json(payload: Any) -> Response:
    resp = Response(codec.dumps(payload), mimetype="application/json")  # event data may hold huge integers
    resp.headers["Cache-Control"] = "no-store"
    return resp


# -- the live stream --------------------------------------------------------------------------------


@bp.get("/dashboard/stream")
def stream():
    """The activity feed as server-sent events (`event: event` / `event: attempt`, JSON data)."""
    eng = engine()
    conf = settings()
    if not conf.slots.acquire(blocking=False):
        err = ApiError(503, "TooManyStreams", f"At most {conf.max_streams} dashboard streams can be open at once; close another tab.")
        resp = Response(orjson.dumps(err.to_body()), status=503, mimetype="application/json")
        resp.headers["Retry-After"] = "10"
        return resp
    feed = eng.feed.listen()
    released = threading.Event()

    def release() -> None:
        # Runs from the generator's finally and from the response's close(), whichever comes first:
        # a generator that never started has no finally to run, but close() is always called.
        if not released.is_set():
            released.set()
            eng.feed.unlisten(feed)
            conf.slots.release()

    disconnected = request.environ.get("waitress.client_disconnected", lambda: False)
    resp = Response(_frames(eng, conf, feed, disconnected, release), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer the stream
    resp.call_on_close(release)
    return resp


def _frames(eng, conf: StreamSettings, feed: queue.Queue, disconnected, release) -> Iterator[bytes]:
    """Every wait is bounded by `poll_seconds`, so the thread notices a stopped engine or a closed
    connection within that; a closed client also makes the next write raise, which ends this
    generator and runs `release` (waitress closes the app iterator)."""
    started = time.monotonic()
    was_running = eng.started
    last_write = started
    try:
        yield f"retry: {conf.retry_ms}\n: connected\n\n".encode()
        while True:
            now = time.monotonic()
            if now - started >= conf.max_seconds or disconnected() or (was_running and not eng.started):
                return
            try:
                items = [feed.get(timeout=conf.poll_seconds)]
            except queue.Empty:
                if time.monotonic() - last_write >= conf.heartbeat_seconds:
                    last_write = time.monotonic()
                    yield b": heartbeat\n\n"
                continue
            while len(items) < 200:  # a burst goes out as one write
                try:
                    items.append(feed.get_nowait())
                except queue.Empty:
                    break
            last_write = time.monotonic()
            yield b"".join(_frame(item) for item in items)
    finally:
        release()


def _frame(item: dict[str, Any]) -> bytes:
    kind = item.get("kind", "message")
    payload = {k: v for k, v in item.items() if k != "kind"}
    # orjson never emits a raw newline, so one `data:` line always carries the whole object.
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
