"""The ARM-shaped management API: topics, event subscriptions, keys, manual validation and
dead letters. Bodies follow Azure's resource shape (`{"properties": {...}}`); lists are
`{"value": [...]}`; errors `{"error": {...}}`.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from .api import json_object
from .auth import generate_key
from .dispatcher import dead_letter_record
from .errors import ApiError, bad_request, not_found

bp = Blueprint("management", __name__)

MAX_PAGE = 1000
MAX_BODY_BYTES = 4 * 1024 * 1024  # Azure Resource Manager's request limit


def engine():
    return current_app.extensions["broker"]


def _body() -> dict:
    return json_object(MAX_BODY_BYTES, empty_ok=True)


# -- topics -------------------------------------------------------------------------------------


@bp.get("/topics")
def list_topics():
    eng = engine()
    return jsonify({"value": [eng.topic_resource(t) for t in eng.registry.topics()]})


@bp.get("/topics/<topic>")
def get_topic(topic: str):
    eng = engine()
    return jsonify(eng.topic_resource(eng.registry.require(topic)))


@bp.put("/topics/<topic>")
def put_topic(topic: str):
    """`{"properties": {"inputSchema": "CloudEventSchemaV1_0", "keys": ["..."]}}` -- `keys` is the
    emulator's way to set access keys; `"generateKeys": true` makes two like Azure does."""
    eng = engine()
    props = _body().get("properties") or {}
    if not isinstance(props, dict):
        raise bad_request("'properties' must be an object.", "InvalidRequestBody", "properties")
    existed = eng.registry.topic(topic) is not None
    keys = props.get("keys")
    if props.get("generateKeys"):
        keys = [generate_key(), generate_key()]
    t = eng.registry.put_topic(topic, props.get("inputSchema"), keys)
    return jsonify(eng.topic_resource(t)), (200 if existed else 201)


@bp.delete("/topics/<topic>")
def delete_topic(topic: str):
    eng = engine()
    if topic.lower() == eng.config.default_topic.lower():
        raise bad_request("The default topic cannot be deleted.", "InvalidOperation")
    return Response(status=200 if eng.registry.delete_topic(topic) else 204)


@bp.post("/topics/<topic>/listKeys")
def list_keys(topic: str):
    t = engine().registry.require(topic)
    return jsonify({"key1": t.keys[0] if t.keys else None, "key2": t.keys[1] if len(t.keys) > 1 else None})


@bp.post("/topics/<topic>/regenerateKey")
def regenerate_key(topic: str):
    t = engine().registry.regenerate_key(topic, _body().get("keyName", ""))
    return jsonify({"key1": t.keys[0], "key2": t.keys[1]})


# -- event subscriptions --------------------------------------------------------------------------


@bp.get("/topics/<topic>/eventSubscriptions")
def list_subscriptions(topic: str):
    eng = engine()
    t = eng.registry.require(topic)
    path = eng.config.topic_path(t.name)
    return jsonify({"value": [s.to_resource(path, t.input_schema) for s in sorted(t.subscriptions.values(), key=lambda s: s.name.lower())]})


@bp.get("/topics/<topic>/eventSubscriptions/<name>")
def get_subscription(topic: str, name: str):
    sub = _require_sub(topic, name)
    return jsonify(_resource(sub))


@bp.put("/topics/<topic>/eventSubscriptions/<name>")
def put_subscription(topic: str, name: str):
    sub, created = engine().put_subscription(topic, name, _body())
    return jsonify(_resource(sub)), (201 if created else 200)


@bp.delete("/topics/<topic>/eventSubscriptions/<name>")
def delete_subscription(topic: str, name: str):
    return Response(status=200 if engine().registry.delete_subscription(topic, name) else 204)


@bp.post("/topics/<topic>/eventSubscriptions/<name>/getFullUrl")
def full_url(topic: str, name: str):
    return jsonify({"endpointUrl": _require_sub(topic, name).endpoint})


@bp.get("/validate")
def validate():
    """The `validationUrl` sent in the handshake: a GET completes manual validation."""
    args = request.args
    if not engine().validator.confirm(args.get("topic", ""), args.get("subscription", ""), args.get("code", "")):
        raise ApiError(400, "InvalidValidationCode", "Unknown subscription or wrong validation code.")
    engine().dispatcher.wake()
    return jsonify({"validated": True, "subscription": args.get("subscription")})


# -- dead letters --------------------------------------------------------------------------------


@bp.get("/topics/<topic>/eventSubscriptions/<name>/deadLetters")
def list_dead_letters(topic: str, name: str):
    eng = engine()
    sub = _require_sub(topic, name)
    skip = _int_arg("skip", 0)
    top = _int_arg("top", 100)
    if not 1 <= top <= MAX_PAGE:
        raise bad_request(f"top must be from 1 to {MAX_PAGE}.", "InvalidQuery", "top")
    rows, total = eng.store.dead_letters(sub.topic, sub.name, skip, top)
    path = eng.config.topic_path(sub.topic)
    page = {"value": [_dead_letter(r, sub, path) for r in rows], "count": total}
    if skip + len(rows) < total:
        page["nextLink"] = f"{request.base_url}?skip={skip + len(rows)}&top={top}"
    return jsonify(page)


@bp.get("/topics/<topic>/eventSubscriptions/<name>/deadLetters/<int:delivery_id>")
def get_dead_letter(topic: str, name: str, delivery_id: int):
    eng = engine()
    sub = _require_sub(topic, name)
    row = eng.store.dead_letter(sub.topic, sub.name, delivery_id)
    if row is None:
        raise not_found(f"Dead letter {delivery_id} does not exist for subscription '{name}'.")
    return jsonify(_dead_letter(row, sub, eng.config.topic_path(sub.topic)))


@bp.post("/topics/<topic>/eventSubscriptions/<name>/deadLetters/<int:delivery_id>/redeliver")
def redeliver_one(topic: str, name: str, delivery_id: int):
    count = engine().redeliver(topic, name, delivery_id)
    if not count:
        raise not_found(f"Dead letter {delivery_id} does not exist for subscription '{name}'.")
    return jsonify({"redelivered": count}), 202


@bp.post("/topics/<topic>/eventSubscriptions/<name>/deadLetters/redeliver")
def redeliver_all(topic: str, name: str):
    return jsonify({"redelivered": engine().redeliver(topic, name, None)}), 202


@bp.delete("/topics/<topic>/eventSubscriptions/<name>/deadLetters")
def purge_dead_letters(topic: str, name: str):
    sub = _require_sub(topic, name)
    return jsonify({"purged": engine().store.purge_dead_letters(sub.topic, sub.name)})


def _dead_letter(row: dict, sub, topic_path: str) -> dict:
    return {"deliveryId": row["id"], **dead_letter_record(row, sub, topic_path)}


def _resource(sub) -> dict:
    eng = engine()
    return sub.to_resource(eng.config.topic_path(sub.topic), eng.registry.require(sub.topic).input_schema)


def _require_sub(topic: str, name: str):
    sub = engine().registry.subscription(topic, name)
    if sub is None:
        raise not_found(f"Event subscription '{name}' does not exist on topic '{topic}'.")
    return sub


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer.", "InvalidQuery", name) from None
    if value < 0:
        raise bad_request(f"{name} must not be negative.", "InvalidQuery", name)
    return value
