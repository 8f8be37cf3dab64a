"""An Event Grid webhook receiver as a Flask blueprint: handshakes, parsing, idempotency, status codes.

A service supplies only `handler(event)` for the event types it cares about; this module decides what
the broker is told:

| outcome                                             | status | the broker then            |
|-----------------------------------------------------|--------|----------------------------|
| every event handled, already done, or not ours      | 200    | is done with the delivery  |
| handler raised `RetryableError` or returned False   | 503    | retries the delivery       |
| another delivery of the same id is still running    | 503    | retries (then finds it done)|
| handler raised anything else (a bug)                | 500    | retries                    |
| handler raised `RejectedEvent` (bad data)           | 400    | dead-letters, no retry     |
| body is not events (bad JSON, no id/type)           | 400    | dead-letters, no retry     |
| body is not JSON at all (content type)              | 415    | retries (as Azure does)    |

Events of a batch are handled in order and each success is recorded at once, so when a later event
fails and the broker retries the whole batch, the earlier ones are skipped, not redone. A retryable
failure stops the batch (the next events would likely fail the same way, e.g. SMTP down); a rejected
event doesn't: the rest of the batch is still handled and the 400 lists what was rejected.

Handshakes (no handler involved):
- Event Grid schema: a `Microsoft.EventGrid.SubscriptionValidationEvent` (header
  `aeg-event-type: SubscriptionValidation`) is answered `{"validationResponse": data.validationCode}`.
- CloudEvents 1.0 webhook spec: `OPTIONS` with `WebHook-Request-Origin` is answered with
  `WebHook-Allowed-Origin` (that origin) and `WebHook-Allowed-Rate: *`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request

from servicekit.idempotency import Claim, ProcessedEvents

log = logging.getLogger(__name__)

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
EVENTGRID_SCHEMA = "EventGridSchema"
CLOUDEVENT_SCHEMA = "CloudEventSchemaV1_0"


class RetryableError(Exception):
    """The handler failed for a reason that may pass (a dependency is down): have the broker retry."""


class RejectedEvent(Exception):
    """The event can never be handled as sent (its data breaks a rule): retrying would not help."""


class MalformedBody(ValueError):
    """The request body is not one event or an array of events in a schema this receiver knows."""


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One delivered event, the same shape whichever schema it arrived in."""

    id: str
    type: str
    data: Any
    schema: str
    subject: str | None = None
    time: str | None = None
    source: str | None = None


Handler = Callable[[ReceivedEvent], "bool | None"]


def _optional_text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def _parse_event(raw: Any, index: int) -> ReceivedEvent:
    if not isinstance(raw, dict):
        raise MalformedBody(f"event {index} is not a JSON object")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedBody(f"event {index} has no string id")
    if "specversion" in raw:
        if raw["specversion"] != "1.0":
            raise MalformedBody(f"event {index} has specversion {raw['specversion']!r}; only 1.0 is supported")
        event_type = raw.get("type")
        data = raw.get("data")
        if "data_base64" in raw:
            try:
                data = base64.b64decode(raw["data_base64"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise MalformedBody(f"event {index} has invalid data_base64") from None
        schema, time_key = CLOUDEVENT_SCHEMA, "time"
    elif "eventType" in raw:
        event_type, data = raw.get("eventType"), raw.get("data")
        schema, time_key = EVENTGRID_SCHEMA, "eventTime"
    else:
        raise MalformedBody(f"event {index} is neither EventGridSchema (eventType) nor CloudEvents (specversion)")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedBody(f"event {index} has no string type")
    return ReceivedEvent(
        id=event_id,
        type=event_type,
        data=data,
        schema=schema,
        subject=_optional_text(raw, "subject"),
        time=_optional_text(raw, time_key),
        source=_optional_text(raw, "source") or _optional_text(raw, "topic"),
    )


def parse_events(body: bytes) -> list[ReceivedEvent]:
    """Parse a delivery body: one event object or a non-empty array of them, in either schema."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedBody(f"body is not valid JSON: {error}") from None
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise MalformedBody("body is an empty array")
    return [_parse_event(raw, index) for index, raw in enumerate(items)]


def _is_json(mimetype: str) -> bool:
    # application/json, application/cloudevents+json, application/cloudevents-batch+json, ...
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _error(status: int, message: str, **fields: Any) -> tuple[Response, int]:
    # Same shape as servicekit.service's errors, so every failure the broker logs reads alike.
    return jsonify(error=message, status=status, **fields), status


def create_webhook_blueprint(
    handler: Handler,
    *,
    event_types: Collection[str],
    processed: ProcessedEvents,
    log_fields: Callable[[ReceivedEvent], Mapping[str, Any]] | None = None,
    allowed_origins: Collection[str] | None = None,
    path: str = "/events",
    name: str = "webhook",
) -> Blueprint:
    """The `path` endpoint (POST deliveries, OPTIONS handshake) calling `handler` once per new event id.

    `handler` returns None/True on success; False or `RetryableError` ask for a retry; `RejectedEvent`
    marks the event as permanently bad. Events whose type is not in `event_types` are acknowledged and
    ignored. `log_fields(event)` adds domain fields (order_id) to this module's log lines.
    `allowed_origins` limits the CloudEvents handshake; None allows any origin, which suits a local
    emulator where the broker's origin is whatever host name compose gives it.
    """
    blueprint = Blueprint(name, __name__)
    wanted = frozenset(event_types)
    origins = None if allowed_origins is None else frozenset(allowed_origins)

    def fields_for(event: ReceivedEvent) -> dict[str, Any]:
        fields = {
            "event_id": event.id,
            "event_type": event.type,
            "subscription": request.headers.get("aeg-subscription-name"),
            "delivery_count": request.headers.get("aeg-delivery-count"),
        }
        if log_fields is not None:
            fields.update(log_fields(event))
        return fields

    def handshake() -> Response | tuple[Response, int]:
        origin = request.headers.get("WebHook-Request-Origin")
        if origin is None:
            response = Response(status=200)
            response.headers["Allow"] = "OPTIONS, POST"
            return response
        if origins is not None and origin not in origins:
            log.warning("refused webhook handshake", extra={"origin": origin})
            return _error(403, f"origin {origin!r} is not allowed")
        log.info("accepted webhook handshake", extra={"origin": origin})
        response = Response(status=200)
        response.headers["WebHook-Allowed-Origin"] = origin
        response.headers["WebHook-Allowed-Rate"] = "*"
        return response

    def validation_response(events: list[ReceivedEvent]) -> tuple[Response, int]:
        event = next((e for e in events if e.type == VALIDATION_EVENT), None)
        code = event.data.get("validationCode") if event and isinstance(event.data, dict) else None
        if not isinstance(code, str) or not code:
            return _error(400, "subscription validation without a data.validationCode")
        log.info("answered subscription validation", extra=fields_for(event))
        return jsonify(validationResponse=code), 200

    def handle(event: ReceivedEvent) -> tuple[Response, int] | str | None:
        """Run the handler for one claimed event and record the outcome. Returns None when it was
        handled, the reason when it was rejected, or the error response that stops the batch."""
        fields = fields_for(event)
        try:
            ok = handler(event) is not False
        except RetryableError as error:
            processed.release(event.id, str(error))
            log.warning("event failed, asking for a retry: %s", error, extra=fields)
            return _error(503, str(error), eventId=event.id)
        except RejectedEvent as error:
            processed.release(event.id, f"rejected: {error}")
            log.error("event rejected: %s", error, extra=fields)
            return str(error)
        except Exception as error:
            processed.release(event.id, repr(error))
            log.exception("handler crashed", extra=fields)
            return _error(500, "internal error while handling the event", eventId=event.id)
        if not ok:
            processed.release(event.id, "handler returned False")
            log.warning("event failed, asking for a retry", extra=fields)
            return _error(503, "event could not be processed yet", eventId=event.id)
        processed.complete(event.id)
        return None

    @blueprint.route(path, methods=["POST", "OPTIONS"])
    def events() -> Any:
        if request.method == "OPTIONS":
            return handshake()
        if request.mimetype and not _is_json(request.mimetype):
            return _error(415, f"content type {request.mimetype!r} is not JSON")
        try:
            batch = parse_events(request.get_data())
        except MalformedBody as error:
            log.warning("malformed delivery: %s", error)
            return _error(400, str(error))

        aeg_type = request.headers.get("aeg-event-type", "")
        if aeg_type == "SubscriptionValidation" or any(e.type == VALIDATION_EVENT for e in batch):
            return validation_response(batch)

        counts = {"received": len(batch), "processed": 0, "duplicates": 0, "ignored": 0}
        rejected: list[dict[str, str]] = []
        for event in batch:
            if event.type not in wanted:
                counts["ignored"] += 1
                log.info("ignored event of an unhandled type", extra=fields_for(event))
                continue
            claim = processed.claim(event.id, event.type)
            if claim is Claim.DONE:
                counts["duplicates"] += 1
                log.info("skipped duplicate event", extra=fields_for(event))
                continue
            if claim is Claim.IN_FLIGHT:
                log.warning("event is being processed by another delivery", extra=fields_for(event))
                response, status = _error(503, "event is being processed by another delivery", eventId=event.id)
                response.headers["Retry-After"] = "1"
                return response, status
            outcome = handle(event)
            if outcome is None:
                counts["processed"] += 1
            elif isinstance(outcome, str):
                rejected.append({"eventId": event.id, "error": outcome})
            else:
                return outcome
        if rejected:
            return _error(400, "some events were rejected", rejected=rejected, **counts)
        return jsonify(counts), 200

    return blueprint
