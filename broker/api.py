"""The original prototype's `/subscribe`, mapped onto the default topic, the same store and the
same delivery path as Event Grid's subscriptions (its `/publish` goes through `ingress`, with every
other publish), and the JSON body helpers of the management API.
"""

from __future__ import annotations

import hashlib
import logging

import orjson
from flask import Blueprint, current_app, jsonify, request

from . import schemas
from .errors import ApiError, bad_request
from .subscriptions import validate_endpoint

log = logging.getLogger("broker.api")

bp = Blueprint("publish", __name__)

def engine():
    return current_app.extensions["broker"]


def limited_body(limit: int) -> bytes:
    """The request body, or 413 in Azure's shape when it is larger than `limit` bytes."""
    length = request.content_length
    if length is None or length <= limit:
        body = request.stream.read(limit + 1) if length is None else request.get_data(cache=False)
        if len(body) <= limit:
            return body
    raise ApiError(413, "RequestEntityTooLarge", f"The request body is larger than the limit of {limit} bytes.")


# -- the original prototype's API ---------------------------------------------------------------
# (`POST /publish` is served by the publish pipeline, ingress.py, like every other publish.)


@bp.post("/subscribe")
def legacy_subscribe():
    """`{"eventType": "NewOrder", "endpoint": "http://host:port/path"}` -> a subscription on the
    default topic filtered on that type. The prototype had no handshake, so neither do these."""
    eng = engine()
    payload = json_object(schemas.MAX_REQUEST_BYTES)
    event_type = payload.get("eventType")
    if not isinstance(event_type, str) or not event_type.strip():
        raise bad_request("'eventType' is required and must be a non-empty string.", "InvalidSubscription", "eventType")
    endpoint = validate_endpoint(payload.get("endpoint"), "endpoint")
    name = "legacy-" + hashlib.sha1(f"{event_type}\n{endpoint}".encode()).hexdigest()[:12]
    body = {
        "properties": {
            "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint, "skipValidation": True}},
            "filter": {"includedEventTypes": [event_type]},
        }
    }
    sub, created = eng.put_subscription(eng.topic_for_publish(eng.config.default_topic), name, body)
    return jsonify({"status": "subscribed", "subscription": sub.name, "topic": sub.scope.name, "eventType": event_type, "endpoint": endpoint}), (201 if created else 200)


def json_object(limit: int, empty_ok: bool = False) -> dict:
    """The request body as a JSON object (at most `limit` bytes); an empty body is `{}` if `empty_ok`."""
    raw = limited_body(limit)
    if empty_ok and not raw.strip():
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}", "InvalidJson") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "InvalidRequestBody")
    return payload
