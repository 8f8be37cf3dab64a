"""The Azure Resource Manager router: one dispatch for every kind of resource.

An ARM path is a resource id, `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.EventGrid/
{type}/{name}`, nesting `/{childType}/{childName}`, with event subscriptions also reached as extension
resources at `{resource id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}`. A path is
parsed once into a `Target` (the kinds and names it names, a trailing collection or action), and
the method decides the rest: GET, PUT, PATCH, DELETE of a resource, GET of a collection, POST of an
action. The emulator's short routes (`/topics/{t}`, `/domains/{d}/topics/{dt}`, `/namespaces/{ns}`,
and what nests under them) are the same paths without the subscription and resource group.

Any api-version, subscription id and resource group is accepted; a resource remembers the ones it
was created under (its id shows them), and is found only under those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from . import management
from .api import json_object
from .errors import ApiError, bad_request
from .kinds import APIS, Request, location_of, not_found, tags_of
from .resources import CHILDREN, DOMAIN_TOPIC, SCOPES, SUBSCRIPTION, TOP, TOPIC, Kind, Resource, check_name

log = logging.getLogger("broker.arm")

bp = Blueprint("arm", __name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # Azure Resource Manager's request limit
ACTIONS = ("listkeys", "regeneratekey", "getfullurl", "getdeliveryattributes")


@dataclass
class Target:
    arm_subscription: str | None  # None: a short route (any, and the defaults for a new resource)
    resource_group: str | None
    chain: list[tuple[Kind, str]] = field(default_factory=list)
    collection: Kind | None = None  # a trailing collection: GET lists it
    action: str | None = None  # a trailing POST action, lower case
    rest: list[str] = field(default_factory=list)  # what follows an event subscription (dead letters)

    @property
    def via_arm(self) -> bool:
        return self.arm_subscription is not None


def parse(path: str) -> Target:
    """A path (ARM or short) as a Target; ApiError(404) for one that names no resource type."""
    segments = [s for s in path.split("/") if s]
    target = Target(None, None)
    i = 0
    if segments and segments[0].lower() == "subscriptions":
        if len(segments) < 2:
            raise _no_route(path)
        target.arm_subscription = segments[1]
        i = 2
        if i + 1 < len(segments) and segments[i].lower() == "resourcegroups":
            target.resource_group = segments[i + 1]
            i += 2
    while i < len(segments):
        segment = segments[i].lower()
        if segment == "providers":
            if i + 1 >= len(segments) or segments[i + 1].lower() != "microsoft.eventgrid":
                raise ApiError(404, "InvalidResourceNamespace", f"The resource namespace '{segments[i + 1] if i + 1 < len(segments) else ''}' is invalid.")
            i += 2
            continue
        parent = target.chain[-1][0] if target.chain else None
        if parent is SUBSCRIPTION and not (i == len(segments) - 1 and segment in ACTIONS):
            target.rest = segments[i:]
            break
        kind = _kind_of(segment, parent)
        if kind is None:
            if i == len(segments) - 1 and segment in ACTIONS and target.chain:
                target.action = segment
                break
            raise _no_route(path)
        if i + 1 >= len(segments):
            target.collection = kind
            break
        target.chain.append((kind, segments[i + 1]))
        i += 2
    if not target.chain and target.collection is None:
        raise _no_route(path)
    return target


def _kind_of(segment: str, parent: Kind | None) -> Kind | None:
    if parent is None:
        return TOP.get(segment) or (SUBSCRIPTION if segment == "eventsubscriptions" else None)
    if segment == "eventsubscriptions" and parent.name in SCOPES:
        return SUBSCRIPTION
    return CHILDREN.get(parent.name, {}).get(segment)


def _no_route(path: str) -> ApiError:
    return ApiError(404, "NotFound", f"No Event Grid resource or collection at '{path}'.")


# -- HTTP -------------------------------------------------------------------------------------------


def engine():
    return current_app.extensions["broker"]


@bp.route("/subscriptions/<path:rest>", methods=["GET", "PUT", "PATCH", "DELETE", "POST"])
def arm_route(rest: str):
    return handle(parse("/subscriptions/" + rest))


@bp.route("/topics", methods=["GET"], defaults={"rest": ""})
@bp.route("/topics/<path:rest>", methods=["GET", "PUT", "PATCH", "DELETE", "POST"])
def topics_route(rest: str):
    return handle(parse("/topics/" + rest))


@bp.route("/domains", methods=["GET"], defaults={"rest": ""})
@bp.route("/domains/<path:rest>", methods=["GET", "PUT", "PATCH", "DELETE", "POST"])
def domains_route(rest: str):
    return handle(parse("/domains/" + rest))


@bp.route("/namespaces", methods=["GET"], defaults={"rest": ""})
@bp.route("/namespaces/<path:rest>", methods=["GET", "PUT", "PATCH", "DELETE", "POST"])
def namespaces_route(rest: str):
    return handle(parse("/namespaces/" + rest))


def caller_base_url(config) -> str:
    """How the caller reached the broker (`https://127.0.0.1:5443`), for the endpoints an answer
    reports. The HTTPS port's requests arrive through the TLS terminator as plain HTTP, so they are
    known by the port they were sent to."""
    host = request.host
    port = host.rsplit(":", 1)[-1] if ":" in host and not host.endswith("]") else None
    scheme = "https" if config.https_port and port == str(config.https_port) else request.scheme
    return f"{scheme}://{host}"


def handle(target: Target):
    eng = engine()
    method = request.method
    body = json_object(MAX_BODY_BYTES, empty_ok=True) if method in ("PUT", "PATCH", "POST") else {}
    req = Request(body, target.via_arm, caller_base_url(eng.config), patch=method == "PATCH", public_url=eng.config.base_url)
    auto_created = None
    subscribing = method == "PUT" and target.collection is None and not target.rest and target.chain[-1][0] is SUBSCRIPTION
    if subscribing and len(target.chain) >= 3 and target.chain[-2][0] is DOMAIN_TOPIC:
        auto_created = _domain_topic_for(eng, target)
    elif (subscribing and not target.via_arm and len(target.chain) == 2 and target.chain[0][0] is TOPIC
          and eng.registry.get(TOPIC, target.chain[0][1]) is None):
        # The short route subscribes to a topic not published to yet: created, as a first publish would
        # (BROKER_AUTO_CREATE_TOPICS).
        check_name(TOPIC, target.chain[0][1])
        auto_created = eng.topic_for_publish(target.chain[0][1])
    try:
        return _handle(eng, target, method, body, req)
    except BaseException:
        if auto_created is not None:
            eng.registry.delete(auto_created)
        raise


def _handle(eng, target: Target, method: str, body: dict[str, Any], req: Request):
    parent = _resolve(eng, target, target.chain if target.collection else target.chain[:-1])
    if target.collection is not None:
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"A collection takes GET only, not {method}.")
        return jsonify({"value": _list(eng, target, parent, req)})
    kind, name = target.chain[-1]
    if kind is SUBSCRIPTION:
        return _subscription(eng, target, parent, name, method, req)
    found = _child(eng, target, kind, name, parent)
    api = APIS[kind.name]
    if target.action is not None:
        action = api.actions().get(target.action)
        if action is None or method != "POST":
            raise ApiError(404 if action is None else 405, "NotFound", f"{kind.arm_type} has no action '{target.action}'.")
        if found is None:
            raise not_found(kind, name, target.resource_group)
        return jsonify(action(eng, found, req))
    if method == "GET":
        if found is None:
            raise not_found(kind, name, target.resource_group)
        return jsonify(api.render(found, req))
    if method in ("PUT", "PATCH"):
        if method == "PATCH" and found is None:
            raise not_found(kind, name, target.resource_group)
        if found is None:
            check_name(kind, name)
            if parent is None:
                _check_unique(eng, target, kind, name)
        settings = api.settings(req, found, parent)
        resource, created = eng.registry.put(
            kind, found.name if found else name, parent, settings, arm_subscription=target.arm_subscription,
            resource_group=target.resource_group, location=location_of(body) if api.tracked else None,
            tags=tags_of(body) if api.tracked else None)
        log.info("resource saved", extra={"kind": kind.name, "resource": resource.label, "new": created})
        return jsonify(api.render(resource, req)), _saved_status(target, kind, method, created)
    if method == "DELETE":
        if found is None:
            return Response(status=204)
        if kind.name == "topic" and found.name.lower() == eng.config.default_topic.lower():
            raise ApiError(400, "InvalidOperation", "The default topic cannot be deleted.")
        eng.registry.delete(found)
        eng.dispatcher.wake()
        log.info("resource deleted", extra={"kind": kind.name, "resource": found.label})
        return Response(status=_deleted_status(target))
    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here.")


def _resolve(eng, target: Target, chain: list[tuple[Kind, str]]) -> Resource | None:
    """The resource the chain names (each must exist), or None for an empty chain."""
    parent = None
    for kind, name in chain:
        found = _child(eng, target, kind, name, parent)
        if found is None:
            raise not_found(kind, name, target.resource_group)
        parent = found
    return parent


def _child(eng, target: Target, kind: Kind, name: str, parent: Resource | None) -> Resource | None:
    found = eng.registry.get(kind, name, parent)
    if found is not None and parent is None and not _in_scope(found, target):
        return None
    return found


def _in_scope(resource: Resource, target: Target) -> bool:
    if target.arm_subscription is not None and resource.arm_subscription.lower() != target.arm_subscription.lower():
        return False
    return target.resource_group is None or resource.resource_group.lower() == target.resource_group.lower()


def _check_unique(eng, target: Target, kind: Kind, name: str) -> None:
    other = eng.registry.get(kind, name)
    if other is not None:  # the same name elsewhere: names of top-level resources are unique, as in a region of Azure
        raise ApiError(409, "Conflict", f"A resource of type {kind.arm_type} named '{name}' already exists in resource group "
                       f"'{other.resource_group}' of subscription '{other.arm_subscription}'.")


def _list(eng, target: Target, parent: Resource | None, req: Request) -> list[dict[str, Any]]:
    kind = target.collection
    if kind is SUBSCRIPTION:
        if parent is not None:
            subs = parent.subscriptions
        else:  # every event subscription under the subscription (and resource group)
            subs = [s for s in eng.registry.subscriptions() if _in_scope(_top(s.scope), target)]
        return [s.to_resource() for s in sorted(subs, key=lambda s: s.name.lower())]
    api = APIS[kind.name]
    if parent is None:
        items = [r for r in eng.registry.top(kind) if _in_scope(r, target)]
    else:
        items = sorted(parent.children.values(), key=lambda r: r.name.lower())
    return [api.render(r, req) for r in items if r.kind is kind]


def _top(resource: Resource) -> Resource:
    while resource.parent is not None:
        resource = resource.parent
    return resource


# -- event subscriptions ------------------------------------------------------------------------------


def _subscription(eng, target: Target, scope: Resource | None, name: str, method: str, req: Request):
    if scope is None:
        raise ApiError(404, "NotFound", "Event subscriptions of an Azure subscription or resource group are not emulated; "
                       "create them on a topic, domain, domain topic or namespace topic.")
    sub = scope.subscription(name)
    if target.rest:
        if sub is None:
            raise _no_subscription(name, scope)
        return management.subscription_extension(eng, sub, method, target.rest)
    if target.action is not None:
        if method != "POST" or target.action not in ("getfullurl", "getdeliveryattributes"):
            raise ApiError(404, "NotFound", f"Event subscriptions have no action '{target.action}'.")
        if sub is None:
            raise _no_subscription(name, scope)
        if target.action == "getfullurl":
            if sub.queue is not None:
                raise bad_request("getFullUrl applies to WebHook destinations; this one is a StorageQueue.", "InvalidEndpointType")
            return jsonify({"endpointUrl": sub.endpoint})
        return jsonify({"value": sub.spec["destination"].get("properties", {}).get("deliveryAttributeMappings", [])})
    if method == "GET":
        if sub is None:
            raise _no_subscription(name, scope)
        return jsonify(sub.to_resource())
    if method in ("PUT", "PATCH"):
        body = req.body
        if method == "PATCH":
            if sub is None:
                raise _no_subscription(name, scope)
            body = {"properties": _merge_update(sub.spec, req.body)}
        saved, created = eng.put_subscription(scope, name, body)
        return jsonify(saved.to_resource()), _saved_status(target, SUBSCRIPTION, method, created, scope)
    if method == "DELETE":
        if sub is None:
            return Response(status=204)
        eng.delete_subscription(sub)
        domain = scope.parent
        if (scope.kind is DOMAIN_TOPIC and not scope.subscriptions and domain is not None
                and domain.properties.get("autoDeleteTopicWithLastSubscription", True)):
            eng.registry.delete(scope)  # Azure's autoDeleteTopicWithLastSubscription (the default)
        return Response(status=_deleted_status(target))
    raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here.")


# Status codes. Through ARM, as Azure answers its long-running operations, which the management
# SDK's pollers insist on (an operation answered otherwise raises there): a PUT is 201 whether it
# created or updated, a PATCH 201 (200 for namespace resources, whose PATCH takes no 201), a DELETE
# 202 (204 when there was nothing). The short routes answer as plain REST does: 201 or 200, 200.
_NAMESPACE_KINDS = frozenset({"namespace", "namespacetopic"})


def _saved_status(target: Target, kind: Kind, method: str, created: bool, scope: Resource | None = None) -> int:
    if not target.via_arm:
        return 201 if created else 200
    if method == "PUT":
        return 201
    in_namespace = kind.name in _NAMESPACE_KINDS or (scope is not None and scope.kind.name in _NAMESPACE_KINDS)
    return 200 if in_namespace or kind.name in ("topic", "domain") else 201


def _deleted_status(target: Target) -> int:
    return 202 if target.via_arm else 200


def _no_subscription(name: str, scope: Resource) -> ApiError:
    return ApiError(404, "ResourceNotFound", f"The Resource 'Microsoft.EventGrid/eventSubscriptions/{name}' was not found on '{scope.label}'.")


def _merge_update(spec: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """An EventSubscriptionUpdateParameters body (its fields at the top level, as the SDK sends them,
    or under `properties`) applied to a stored spec: each field given replaces the stored one."""
    update = body.get("properties", body)
    if not isinstance(update, dict):
        raise ApiError(400, "InvalidRequestBody", "The update must be an object.")
    return {**spec, **{k: v for k, v in update.items() if v is not None}}


def _domain_topic_for(eng, target: Target) -> Resource | None:
    """A subscription PUT on a domain topic that does not exist yet creates it when its domain
    creates them with their first subscription (autoCreateTopicWithFirstSubscription, Azure's
    default); returns the domain topic so created (to remove it again if the PUT fails)."""
    domain = _resolve(eng, target, target.chain[:-2])
    name = target.chain[-2][1]
    if eng.registry.get(DOMAIN_TOPIC, name, domain) is not None or not domain.properties.get("autoCreateTopicWithFirstSubscription", True):
        return None
    check_name(DOMAIN_TOPIC, name)
    created, _ = eng.registry.put(DOMAIN_TOPIC, name, domain, {})
    return created


