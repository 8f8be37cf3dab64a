"""The one publish pipeline, for every publish route, as plain WSGI in front of the Flask app:

    POST /api/events                         the default topic
    POST /topics/{topic}/api/events          a custom topic (created on first publish, BROKER_AUTO_CREATE_TOPICS)
    POST /domains/{domain}/api/events        an event domain: each event names its domain topic
    POST /publish                            the prototype's `{"eventType": ..., "data": ...}`, on the default topic

Each publish is resolved to what it is published to, authenticated with that resource's keys or a
SAS token, parsed in its input schema (EventGridSchema, CloudEvents 1.0, a custom schema through
its mapping), routed through each subscription's filter and stored with its deliveries in one
commit; only then is it answered.

This is the hottest path of the emulator (every event of a load test comes through it), so it
bypasses Flask: measured on a 2-core machine, Flask's request context, routing and response objects
cost about as much as all of the broker's own work per request. Served on the delivery loop
(serving.py), a publish is answered through `later` once its group commit is in.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from urllib.parse import parse_qs

import orjson

from . import auth, codec, pull, schemas
from .errors import ApiError, bad_request
from .events import CLOUDEVENT_SCHEMA, EVENTGRID_SCHEMA, Event
from .resources import DOMAIN, NAMESPACE, NAMESPACE_TOPIC, TOPIC, Resource
from .serving import LATER
from .store import unavailable

log = logging.getLogger("broker.ingress")

_ROUTES = re.compile(r"^(?:/api/events|/topics/([^/]+)/api/events|/domains/([^/]+)/api/events|(/publish))/?$")
_NAMESPACE_PUBLISH = re.compile(r"^/namespaces/([^/]+)/topics/([^/:]+):publish$")
MAX_NAMESPACE_EVENTS = 1000  # Azure's limit per publish to a namespace topic

# API versions the official SDKs sent when this was written. Any other version is accepted and
# logged once: an emulator that rejects the SDK's next api-version breaks its users' builds.
MAX_API_VERSIONS_NOTED = 32
KNOWN_API_VERSIONS = frozenset({"2018-01-01", "2023-06-01-preview", "2023-11-01", "2024-06-01"})


def is_publish(method: str, path: str) -> bool:
    """Whether a request is one this middleware serves on the server's I/O thread. A receive,
    which may wait up to two minutes, is one only when it can be answered later (the common case,
    see serving.py); otherwise it goes to a worker thread, which may wait."""
    if method != "POST":
        return False
    if _ROUTES.match(path) is not None or _NAMESPACE_PUBLISH.match(path) is not None:
        return True
    parts = pull.split(path)
    return parts is not None and parts[3] != "receive"


def is_data_plane(path: str) -> bool:
    """Whether a path is one this middleware answers (any method)."""
    return _ROUTES.match(path) is not None or _NAMESPACE_PUBLISH.match(path) is not None or pull.split(path) is not None


Answer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body
_OK: Answer = ("200 OK", [("Content-Length", "0")], b"")
_EMPTY_JSON: Answer = ("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")], b"{}")


class PublishMiddleware:
    def __init__(self, app, engine) -> None:
        self.app = app
        self.engine = engine

    def __call__(self, environ, start_response):
        answer = self.respond(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                              lambda: _headers(environ), lambda: _read_body(environ))
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def respond(self, method: str, path: str, query_string: str, headers: Callable[[], dict[str, str]],
                body: Callable[[], bytes], later: Callable[[Answer], None] | None = None) -> Answer | object | None:
        """Serve a publish request: (status line, headers, body) in WSGI's terms, or None for a
        request that is not a publish. `headers()` gives the request headers by lower-case name,
        `body()` the body, both read only when needed.

        Called on the delivery loop's thread with `later`, a valid publish is answered through
        `later(answer)` once stored (`Engine.accept_soon`), and this returns `LATER`."""
        match = _ROUTES.match(path)
        namespaced = _NAMESPACE_PUBLISH.match(path) if match is None else None
        pulled = pull.split(path) if match is None and namespaced is None else None
        if match is None and namespaced is None and pulled is None:
            return None
        refused = self.engine.guard.check(method, path, headers(), data_plane=True)
        if refused is not None:
            return _error(refused)
        if method != "POST":
            return _error(ApiError(405, "MethodNotAllowed", "This endpoint only takes POST."), [("Allow", "POST")])
        if later is not None and not self.engine.client.on_loop():
            later = None  # (a server polled by some other loop: the engine's loop would be woken from outside)
        if pulled is not None:
            return self._pull(pulled, path, query_string, headers, body, later)
        if namespaced is not None:
            return self._namespace_publish(namespaced.groups(), path, query_string, headers, body, later)
        topic_name, domain_name, prototype = match.groups()
        answered: list[Answer] = []

        def then(exc: BaseException | None, routed: int, event: Event | None = None, channel: Resource | None = None) -> None:
            answer = _answer(exc) if exc is not None or not prototype else _prototype_answer(event, channel, routed)
            if later is None:
                answered.append(answer)
            else:
                later(answer)

        try:
            self.publish(topic_name, domain_name, bool(prototype), path, query_string, headers(), body, then, later is not None)
        except Exception as exc:
            return _answer(exc)
        return answered[0] if later is None else LATER

    def publish(self, topic_name: str | None, domain_name: str | None, prototype: bool, path: str, query_string: str,
                headers: dict[str, str], body: Callable[[], bytes], then: Callable[..., None], soon: bool) -> None:
        """Validate and store a publish: `then(error, deliveries, ...)` runs once it is stored (soon
        after, with `soon`; before returning otherwise). Invalid ones raise instead."""
        eng = self.engine
        query = _query(query_string)
        name = domain_name or topic_name or eng.config.default_topic
        try:
            channel = self._channel(name, domain_name is not None)
            events = self._validate(channel, prototype, path, query, headers, body)
            if channel.id == 0:
                # A topic created by this publish, now that the request has proved valid (a refused
                # publish leaves no topic behind). Created meanwhile by someone else, it may have
                # keys or another schema: then the publish is checked against it.
                created = eng.topic_for_publish(name)
                if created.keys != channel.keys or created.input_schema != channel.input_schema:
                    events = self._validate(created, prototype, path, query, headers, body)
                channel = created
        except auth.AuthError as exc:
            eng.metrics.rejected.labels(eng.metrics.topic_label(name), exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.message) from None
        except schemas.SchemaError as exc:
            eng.metrics.rejected.labels(eng.metrics.topic_label(name), exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.message, exc.details) from None
        except ApiError as exc:
            eng.metrics.rejected.labels(eng.metrics.topic_label(name), exc.code).inc()
            raise
        self._note_version(query.get("api-version"))
        event = events[0] if prototype else None
        if soon:
            eng.accept_soon(channel, events, lambda exc, routed: then(exc, routed, event, channel))
        else:
            then(None, eng.accept(channel, events), event, channel)

    def _pull(self, parts, path: str, query_string: str, headers, body, later) -> Answer | object:
        query = _query(query_string)
        if later is None:
            if not self.engine.client.on_loop():  # a worker thread: it waits for the answer
                return _json_answer(*self.engine.pull.respond_blocking(parts, path, query, headers(), body))
            answered: list = []  # the loop's own thread cannot wait for the loop: answered at once
            try:
                self.engine.pull.respond(parts, path, query, headers(), body, answered.append, wait=False)
            except Exception as exc:
                return _answer(exc)
            return _json_answer(*answered[0])
        loop = self.engine.client.loop
        try:
            # Through the loop: a store write run right here answers before this returns LATER.
            self.engine.pull.respond(parts, path, query, headers(), body, lambda a: loop.call_soon(later, _json_answer(*a)))
        except Exception as exc:
            return _answer(exc)
        return LATER

    def _namespace_publish(self, names: tuple[str, str], path: str, query_string: str, headers, body, later) -> Answer | object:
        """`POST /namespaces/{ns}/topics/{t}:publish`: CloudEvents, at most 1,000 of them in 1 MB;
        answered 200 with an empty JSON object (the SDK reads one)."""
        eng = self.engine
        query = _query(query_string)
        namespace, topic_name = names
        try:
            ns = eng.registry.get(NAMESPACE, namespace)
            channel = eng.registry.get(NAMESPACE_TOPIC, topic_name, ns) if ns is not None else None
            if channel is None:
                raise ApiError(404, "NotFound", f"Namespace topic '{namespace}/{topic_name}' does not exist.")
            hdrs = headers()
            auth.authenticate(hdrs, channel.keys, path, query=query)
            raw = body()
            if hdrs.get("content-type", "").lower().startswith(schemas.CLOUDEVENTS_CONTENT_TYPE) and raw.lstrip()[:1] == b"[":
                # The SDK sends an array even where it was told to say application/cloudevents+json.
                hdrs = {**hdrs, "content-type": schemas.CLOUDEVENTS_BATCH_CONTENT_TYPE}
            events = schemas.parse(raw, hdrs, CLOUDEVENT_SCHEMA)
            if len(events) > MAX_NAMESPACE_EVENTS:
                raise ApiError(400, "BadRequest", f"A publish to a namespace topic holds at most {MAX_NAMESPACE_EVENTS} events; "
                               f"this one holds {len(events)}.")
        except auth.AuthError as exc:
            return _error(ApiError(exc.status, exc.code, exc.message))
        except schemas.SchemaError as exc:
            return _error(ApiError(exc.status, exc.code, exc.message, exc.details))
        except ApiError as exc:
            return _error(exc)
        self._note_version(query.get("api-version"))

        def then(exc: BaseException | None, _routed: int) -> Answer:
            return _answer(exc) if exc is not None else _EMPTY_JSON

        if later is None:
            try:
                eng.accept(channel, events)
            except Exception as exc:
                return _answer(exc)
            return _EMPTY_JSON
        eng.accept_soon(channel, events, lambda exc, routed: later(then(exc, routed)))
        return LATER

    def _channel(self, name: str, domain: bool) -> Resource:
        """What the publish goes to. An unknown topic is, until the publish proves valid, a
        stand-in with id 0: anonymous, taking either schema."""
        eng = self.engine
        if domain:
            found = eng.registry.get(DOMAIN, name)
            if found is None:
                raise ApiError(404, "NotFound", f"Domain '{name}' does not exist.")
            return found
        found = eng.registry.get(TOPIC, name)
        if found is not None:
            return found
        if not eng.config.auto_create_topics:
            raise ApiError(404, "NotFound", f"Topic '{name}' does not exist.")
        return Resource(0, TOPIC, name, None, "", "", "", None, {"inputSchema": "Auto", "keys": []}, 0.0, 0.0)

    def _validate(self, channel: Resource, prototype: bool, path: str, query: dict[str, str], headers: dict[str, str],
                  body: Callable[[], bytes]) -> list[Event]:
        auth.authenticate(headers, channel.keys, path, query=query)
        if prototype:
            return [prototype_event(body())]
        return schemas.parse(body(), headers, channel.input_schema, channel.mapping, domain=channel.kind is DOMAIN)

    def _note_version(self, version: str | None) -> None:
        seen = self.engine.seen_api_versions
        # Bounded: a client sending a new api-version on every request must not grow the set or
        # the log without limit; past the bound further unknown versions are accepted silently.
        if version and version not in KNOWN_API_VERSIONS and version not in seen and len(seen) < MAX_API_VERSIONS_NOTED:
            seen.add(version)
            log.warning("accepting an api-version this emulator has not seen before", extra={"api_version": version})


def prototype_event(raw: bytes) -> Event:
    """The prototype's `{"eventType": "NewOrder", "data": {...}}` (optional `subject`, `id`,
    `dataVersion`) as one Event Grid event."""
    if len(raw) > schemas.MAX_REQUEST_BYTES:
        raise ApiError(413, "RequestEntityTooLarge", f"The request body is larger than the limit of {schemas.MAX_REQUEST_BYTES} bytes.")
    try:
        payload = codec.loads(raw)
    except codec.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}", "InvalidJson") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "InvalidRequestBody")
    event_type = payload.get("eventType")
    if not isinstance(event_type, str) or not event_type.strip():
        raise bad_request("'eventType' is required and must be a non-empty string.", "InvalidEvent", "eventType")
    subject = payload.get("subject", event_type)
    if not isinstance(subject, str) or not subject:
        raise bad_request("'subject' must be a non-empty string.", "InvalidEvent", "subject")
    event_id = payload.get("id", str(uuid.uuid4()))
    if not isinstance(event_id, str) or not event_id:
        raise bad_request("'id' must be a non-empty string.", "InvalidEvent", "id")
    return Event(
        id=event_id,
        type=event_type,
        time=datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        subject=subject,
        data=payload.get("data"),
        data_version=str(payload.get("dataVersion", "1.0")),
        input_schema=EVENTGRID_SCHEMA,
    )


def _prototype_answer(event: Event, channel: Resource, routed: int) -> Answer:
    """The prototype's answer: 202 and how many subscriptions will get the event."""
    body = orjson.dumps({"status": "accepted", "id": event.id, "topic": channel.name, "subscriptions": routed})
    return "202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body


def _answer(exc: BaseException | None) -> Answer:
    """The answer to a publish that was stored (None) or failed with `exc`."""
    if exc is None:
        return _OK  # Azure answers an accepted publish with 200 and an empty body
    if not isinstance(exc, ApiError):
        full = unavailable(exc)
        if full is not None:  # the disk is full: nothing was stored, the publisher may try again
            log.warning("publish refused: the store cannot take writes", extra={"error": str(exc)})
            return _error(ApiError(503, "ServiceUnavailable", "The broker cannot store events right now (its disk is full "
                                   "or failing); nothing of this request was stored. Retry later."),
                          [("Retry-After", str(full.retry_after))])
        log.error("publish failed", exc_info=exc)
        exc = ApiError(500, "InternalServerError", "The broker hit an unexpected error; see its log.")
    return _error(exc)


def _json_answer(status: int, body: bytes) -> Answer:
    return f"{status} {_REASONS.get(status, 'OK' if status == 200 else 'Error')}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body


def _headers(environ) -> dict[str, str]:
    """The request headers by lower-case name, as auth and schemas read them (werkzeug's
    EnvironHeaders, iterated twice per request, cost more than the event's validation)."""
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers[name] = environ[key]
    return headers


def _query(raw: str) -> dict[str, str]:
    """The query string's parameters (the first value of each); `api-version=...` alone is the
    common case and needs no decoding."""
    if not raw:
        return {}
    if "&" not in raw and "%" not in raw and "+" not in raw:
        name, _, value = raw.partition("=")
        return {name: value} if name and value else {}
    return {k: v[0] for k, v in parse_qs(raw).items()}


def _error(exc: ApiError, extra_headers: list | None = None) -> Answer:
    body = orjson.dumps(exc.to_body())
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(extra_headers or [])]
    return f"{exc.status} {_REASONS.get(exc.status, 'Error')}", headers, body


def _read_body(environ) -> bytes:
    limit = schemas.MAX_REQUEST_BYTES
    raw_length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if raw_length:
        try:
            length = int(raw_length)
        except ValueError:
            raise schemas.SchemaError(400, "BadRequest", "The Content-Length header is not a number.") from None
        if length > limit:
            raise schemas.SchemaError(413, "RequestEntityTooLarge", f"The request is {length} bytes; the limit is {limit} bytes (1 MB).")
        return stream.read(length)
    body = stream.read(limit + 1)  # chunked: read at most one byte past the limit
    if len(body) > limit:
        raise schemas.SchemaError(413, "RequestEntityTooLarge", f"The request is larger than the limit of {limit} bytes (1 MB).")
    return body


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error", 503: "Service Unavailable"}
