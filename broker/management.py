"""The emulator's own management calls, beside Azure Resource Manager's (arm.py): the validation
URL a subscriber GETs to finish manual validation, and the dead letters an event subscription keeps
in the store (`{event subscription}/deadLetters[/{id}[/redeliver]]`, `.../deadLetters/redeliver`).
Errors have Azure's shape: `{"error": {...}}`.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from .dispatcher import dead_letter_record
from .errors import ApiError, bad_request, not_found

bp = Blueprint("management", __name__)

MAX_PAGE = 1000


def engine():
    return current_app.extensions["broker"]


@bp.get("/validate")
def validate():
    """The `validationUrl` sent in the handshake: a GET completes manual validation."""
    args = request.args
    eng = engine()
    if not eng.validator.confirm(args.get("subscription", ""), args.get("code", "")):
        raise ApiError(400, "InvalidValidationCode", "Unknown subscription or wrong validation code.")
    eng.dispatcher.wake()
    return jsonify({"validated": True, "subscription": args.get("subscription")})


def subscription_extension(eng, sub, method: str, rest: list[str]):
    """`{event subscription}/deadLetters...`: list, read, redeliver and purge its dead letters."""
    if not rest or rest[0].lower() != "deadletters":
        raise ApiError(404, "NotFound", f"An event subscription has no '{'/'.join(rest)}'.")
    rest = rest[1:]
    if not rest:
        if method == "GET":
            return _list_dead_letters(eng, sub)
        if method == "DELETE":
            return jsonify({"purged": eng.store.deliveries.purge_dead_letters(sub.id)})
    elif rest == ["redeliver"] and method == "POST":
        return jsonify({"redelivered": eng.redeliver(sub, None)}), 202
    elif rest[0].isdigit():
        delivery_id = int(rest[0])
        if len(rest) == 1 and method == "GET":
            row = eng.store.deliveries.dead_letter(sub.id, delivery_id)
            if row is None:
                raise not_found(f"Dead letter {delivery_id} does not exist for subscription '{sub.name}'.")
            return jsonify(_dead_letter(row, sub))
        if rest[1:] == ["redeliver"] and method == "POST":
            count = eng.redeliver(sub, delivery_id)
            if not count:
                raise not_found(f"Dead letter {delivery_id} does not exist for subscription '{sub.name}'.")
            return jsonify({"redelivered": count}), 202
    raise ApiError(404, "NotFound", f"No dead-letter operation {method} .../deadLetters/{'/'.join(rest)}.")


def _list_dead_letters(eng, sub):
    skip = _int_arg("skip", 0)
    top = _int_arg("top", 100)
    if not 1 <= top <= MAX_PAGE:
        raise bad_request(f"top must be from 1 to {MAX_PAGE}.", "InvalidQuery", "top")
    rows, total = eng.store.deliveries.dead_letters(sub.id, skip, top)
    page = {"value": [_dead_letter(r, sub) for r in rows], "count": total}
    if skip + len(rows) < total:
        page["nextLink"] = f"{request.base_url}?skip={skip + len(rows)}&top={top}"
    return jsonify(page)


def _dead_letter(row: dict, sub) -> dict:
    return {"deliveryId": row["id"], **dead_letter_record(row, sub)}


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
