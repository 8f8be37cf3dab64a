"""The publish endpoints as plain WSGI: `POST /api/events` and `POST /topics/{topic}/api/events`.

This is the hottest path of the emulator (every event of a load test comes through it), so it sits
in front of the Flask app as WSGI middleware: measured on a 2-core machine, Flask's request context,
routing and response objects cost about as much as all of the broker's own work per request (~350
microseconds). Everything else -- management, dashboard, the prototype's API -- stays in Flask, and
errors here have exactly the shape the Flask error handlers produce.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import parse_qs

import orjson

from . import auth, schemas
from .errors import ApiError
from .serving import LATER
from .topics import Topic

log = logging.getLogger("broker.ingress")

PUBLISH_PATH = re.compile(r"^(?:/topics/([^/]+))?/api/events/?$")

# API versions the official SDKs sent when this was written. Any other version is accepted and
# logged once: an emulator that rejects the SDK's next api-version breaks its users' builds.
KNOWN_API_VERSIONS = frozenset({"2018-01-01", "2023-06-01-preview", "2023-11-01", "2024-06-01"})


def is_publish(method: str, path: str) -> bool:
    """Whether a request is one this middleware serves (the server runs those on its I/O thread)."""
    return method == "POST" and PUBLISH_PATH.match(path) is not None


Answer = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body
_OK: Answer = ("200 OK", [("Content-Length", "0")], b"")


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
        match = PUBLISH_PATH.match(path)
        if not match:
            return None
        if method != "POST":
            return _error(ApiError(405, "MethodNotAllowed", "The publish endpoint only takes POST."), [("Allow", "POST")])
        topic = match.group(1) or self.engine.config.default_topic
        if later is not None and not self.engine.client.on_loop():
            later = None  # (a server polled by some other loop: the engine's loop would be woken from outside)
        try:
            self.publish(topic, path, query_string, headers(), body, None if later is None else lambda exc: later(_answer(exc)))
        except Exception as exc:
            return _answer(exc)
        return _OK if later is None else LATER  # Azure answers an accepted publish with 200 and an empty body

    def publish(self, topic_name: str, path: str, query_string: str, headers: dict[str, str], body: Callable[[], bytes],
                then: Callable[[BaseException | None], None] | None = None) -> None:
        """Validate and store a publish: before returning, or (`then`) soon after, calling then(error)."""
        eng = self.engine
        query = _query(query_string)
        topic = eng.registry.topic(topic_name)
        try:
            if topic is None:
                # An unknown topic is created only once the request has proved valid: a refused
                # publish must not leave a topic behind. Until then it is what it would be.
                if not eng.config.auto_create_topics:
                    raise ApiError(404, "NotFound", f"Topic '{topic_name}' does not exist.")
                topic = Topic(topic_name)
            auth.authenticate(headers, topic.keys, path, query=query)
            version = query.get("api-version")
            if version and version not in KNOWN_API_VERSIONS and version not in eng.seen_api_versions:
                eng.seen_api_versions.add(version)
                log.warning("accepting an api-version this emulator has not seen before", extra={"api_version": version})
            events = schemas.parse(body(), headers, topic.input_schema)
        except auth.AuthError as exc:
            eng.metrics.rejected.labels(topic_name, exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.message) from None
        except schemas.SchemaError as exc:
            eng.metrics.rejected.labels(topic_name, exc.code).inc()
            raise ApiError(exc.status, exc.code, exc.message, exc.details) from None
        except ApiError as exc:
            eng.metrics.rejected.labels(topic_name, exc.code).inc()
            raise
        if eng.registry.topic(topic_name) is None:
            topic = eng.topic_for_publish(topic_name)
        if then is None:
            eng.accept(topic, events)
        else:
            eng.accept_soon(topic, events, then)


def _answer(exc: BaseException | None) -> Answer:
    """The answer to a publish that was stored (None) or failed with `exc`."""
    if exc is None:
        return _OK
    if not isinstance(exc, ApiError):
        log.error("publish failed", exc_info=exc)
        exc = ApiError(500, "InternalServerError", "The broker hit an unexpected error; see its log.")
    return _error(exc)


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


def _error(exc: ApiError, extra_headers: list | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
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


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
            415: "Unsupported Media Type", 500: "Internal Server Error", 503: "Service Unavailable"}
