"""What each kind of resource looks like through Azure Resource Manager: how a PUT or PATCH body is
validated into the settings the registry stores, how a resource is rendered back, and the POST
actions it has (listKeys, regenerateKey, getFullUrl). The router (arm.py) is the same for all of
them: adding a kind adds a `KindApi` here, not a route.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from . import auth
from .errors import ApiError, bad_request
from .events import CLOUDEVENT_SCHEMA, CUSTOM_INPUT_SCHEMA, EVENTGRID_SCHEMA
from .resources import DOMAIN, DOMAIN_TOPIC, NAMESPACE, NAMESPACE_TOPIC, TOPIC, Kind, Resource

AUTO_SCHEMA = "Auto"  # the emulator's own: each publish in whichever of the two schemas it comes
INPUT_SCHEMAS = (EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA, CUSTOM_INPUT_SCHEMA, AUTO_SCHEMA)

# Settings Azure takes and returns unchanged (the emulator does not act on them), with a check of
# their shape: name -> (allowed values or a type).
_PASSED_THROUGH: dict[str, tuple | type] = {
    "publicNetworkAccess": ("Enabled", "Disabled", "SecuredByPerimeter"),
    "minimumTlsVersionAllowed": ("1.0", "1.1", "1.2"),
    "dataResidencyBoundary": ("WithinGeopair", "WithinRegion"),
    "disableLocalAuth": bool,
    "inboundIpRules": list,
    "eventTypeInfo": dict,
}


@dataclass
class Request:
    """What a management request says, beyond the resource it names."""

    body: dict[str, Any]
    via_arm: bool  # an ARM path (/subscriptions/...), not one of the emulator's short aliases
    base_url: str  # how the caller reached the broker, for the endpoints the answer reports
    patch: bool = False
    public_url: str = ""  # BROKER_PUBLIC_URL's base: a namespace's host name (reported without a scheme)
    extra: dict[str, Any] = field(default_factory=dict)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _props(body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties")
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise bad_request("'properties' must be an object.", "InvalidRequestBody", "properties")
    return props


def tags_of(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise bad_request("'tags' must be an object of string values.", "InvalidRequestBody", "tags")
    return tags


def location_of(body: dict[str, Any]) -> str | None:
    location = body.get("location")
    if location is not None and (not isinstance(location, str) or not location.strip()):
        raise bad_request("'location' must be a non-empty string.", "InvalidRequestBody", "location")
    return location


def _passed_through(props: dict[str, Any], out: dict[str, Any]) -> None:
    for name, allowed in _PASSED_THROUGH.items():
        if name not in props or props[name] is None:
            continue
        value = props[name]
        ok = isinstance(value, allowed) if isinstance(allowed, type) else value in allowed
        if not ok:
            expected = f"a {allowed.__name__}" if isinstance(allowed, type) else "one of " + ", ".join(allowed)
            raise bad_request(f"properties.{name} must be {expected}.", "InvalidRequestBody", f"properties.{name}")
        out[name] = value


def _keys(props: dict[str, Any], existing: Resource | None, req: Request) -> list[str]:
    """Access keys: as given (`keys`, the emulator's way to choose them), generated (`generateKeys`,
    or any resource created through ARM, as Azure gives every topic two), or kept."""
    if "keys" in props and props["keys"] is not None:
        keys = props["keys"]
        if not isinstance(keys, list) or len(keys) > 2 or not all(isinstance(k, str) and k for k in keys):
            raise bad_request("keys must be a list of at most two non-empty strings.", "InvalidRequestBody", "properties.keys")
        return list(keys)
    generate = props.get("generateKeys")
    if generate is not None and not isinstance(generate, bool):
        raise bad_request("generateKeys must be a boolean.", "InvalidRequestBody", "properties.generateKeys")
    if generate or (existing is None and req.via_arm and generate is None):
        return [auth.generate_key(), auth.generate_key()]
    return list(existing.properties.get("keys") or []) if existing else []


class KindApi:
    kind: Kind
    collection_type: str = ""  # set from kind
    tracked = True  # a tracked resource (location, tags) rather than a proxy one

    def settings(self, req: Request, existing: Resource | None, parent: Resource | None) -> dict[str, Any]:
        """The settings to store for a PUT (or PATCH, `req.patch`) of `req.body`."""
        return {}

    def properties(self, resource: Resource, req: Request) -> dict[str, Any]:
        """The `properties` of the resource as ARM returns it."""
        return {"provisioningState": "Succeeded"}

    def render(self, resource: Resource, req: Request) -> dict[str, Any]:
        out: dict[str, Any] = {"id": resource.path, "name": resource.name, "type": resource.kind.arm_type}
        if self.tracked:
            out["location"] = resource.location
            out["tags"] = resource.tags or {}
        out["systemData"] = {"createdAt": _iso(resource.created_at), "lastModifiedAt": _iso(resource.updated_at),
                             "createdByType": "User", "lastModifiedByType": "User"}
        out["properties"] = self.properties(resource, req)
        out.update(self.extra(resource))
        return out

    def extra(self, resource: Resource) -> dict[str, Any]:
        return {}

    def actions(self) -> dict[str, Any]:
        """POST actions: name (lower case) -> fn(engine, resource, req) -> answer body."""
        return {}


class _Publishable(KindApi):
    """Topics and domains: publish endpoints with keys and an input schema."""

    endpoint_path = ""

    def settings(self, req: Request, existing: Resource | None, parent: Resource | None) -> dict[str, Any]:
        props = _props(req.body)
        out: dict[str, Any] = {}
        if req.patch and existing is not None:
            out.update({k: v for k, v in existing.properties.items()})
        schema = props.get("inputSchema")
        if schema is None:
            schema = existing.properties.get("inputSchema") if existing else (EVENTGRID_SCHEMA if req.via_arm else AUTO_SCHEMA)
        if schema not in INPUT_SCHEMAS:
            raise bad_request(f"inputSchema must be one of {', '.join(INPUT_SCHEMAS)}.", "InvalidInputSchema", "properties.inputSchema")
        out["inputSchema"] = schema
        mapping = props.get("inputSchemaMapping", existing.properties.get("inputSchemaMapping") if existing else None)
        if schema == CUSTOM_INPUT_SCHEMA:
            out["inputSchemaMapping"] = mapping  # compiled (and refused if bad) by the registry
        else:
            out.pop("inputSchemaMapping", None)
            if props.get("inputSchemaMapping") is not None:
                raise bad_request("inputSchemaMapping is only for inputSchema CustomEventSchema.", "InvalidInputSchemaMapping",
                                  "properties.inputSchemaMapping")
        out["keys"] = _keys(props, existing, req)
        _passed_through(props, out)
        return out

    def properties(self, resource: Resource, req: Request) -> dict[str, Any]:
        stored = resource.properties
        out: dict[str, Any] = {
            "provisioningState": "Succeeded",
            "endpoint": f"{req.base_url}/{self.endpoint_path}/{resource.name}/api/events",
            "inputSchema": stored.get("inputSchema", EVENTGRID_SCHEMA),
            "metricResourceId": str(uuid.uuid5(uuid.NAMESPACE_URL, resource.path.lower())),
            "publicNetworkAccess": "Enabled",
            "inboundIpRules": [],
            "disableLocalAuth": False,
            "dataResidencyBoundary": "WithinGeopair",
            "minimumTlsVersionAllowed": "1.2",
        }
        if resource.mapping is not None:
            out["inputSchemaMapping"] = resource.mapping.to_spec()
        out.update({k: v for k, v in stored.items() if k in _PASSED_THROUGH})
        return out

    def extra(self, resource: Resource) -> dict[str, Any]:
        return {"sku": {"name": "Basic"}, "identity": {"type": "None"}, **({"kind": "Azure"} if resource.kind is TOPIC else {})}

    def actions(self) -> dict[str, Any]:
        return {"listkeys": list_keys, "regeneratekey": regenerate_key}


class TopicApi(_Publishable):
    kind = TOPIC
    endpoint_path = "topics"


class DomainApi(_Publishable):
    kind = DOMAIN
    endpoint_path = "domains"

    def settings(self, req: Request, existing: Resource | None, parent: Resource | None) -> dict[str, Any]:
        out = super().settings(req, existing, parent)
        props = _props(req.body)
        for name in ("autoCreateTopicWithFirstSubscription", "autoDeleteTopicWithLastSubscription"):
            value = props.get(name)
            if value is None:
                value = existing.properties.get(name, True) if existing else True  # Azure's default
            if not isinstance(value, bool):
                raise bad_request(f"properties.{name} must be a boolean.", "InvalidRequestBody", f"properties.{name}")
            out[name] = value
        return out

    def properties(self, resource: Resource, req: Request) -> dict[str, Any]:
        out = super().properties(resource, req)
        for name in ("autoCreateTopicWithFirstSubscription", "autoDeleteTopicWithLastSubscription"):
            out[name] = resource.properties.get(name, True)
        return out


class DomainTopicApi(KindApi):
    kind = DOMAIN_TOPIC
    tracked = False


class NamespaceApi(KindApi):
    kind = NAMESPACE

    def settings(self, req: Request, existing: Resource | None, parent: Resource | None) -> dict[str, Any]:
        props = _props(req.body)
        out: dict[str, Any] = {}
        if req.patch and existing is not None:
            out.update(existing.properties)
        # Every namespace has keys (its topics authenticate with them), however it was created.
        out["keys"] = list(existing.keys) if (req.patch and existing) else _keys(props, existing, replace(req, via_arm=True))
        _passed_through(props, out)
        if "isZoneRedundant" in props:
            if not isinstance(props["isZoneRedundant"], bool):
                raise bad_request("properties.isZoneRedundant must be a boolean.", "InvalidRequestBody", "properties.isZoneRedundant")
            out["isZoneRedundant"] = props["isZoneRedundant"]
        return out

    def properties(self, resource: Resource, req: Request) -> dict[str, Any]:
        host = req.public_url.split("://", 1)[-1]
        out = {
            "provisioningState": "Succeeded",
            # Azure gives the data-plane host name without a scheme; here it includes the path that
            # leads to the namespace, so "https://" + hostname is its endpoint.
            "topicsConfiguration": {"hostname": f"{host}/namespaces/{resource.name}"},
            "isZoneRedundant": resource.properties.get("isZoneRedundant", False),
            "publicNetworkAccess": "Enabled",
            "inboundIpRules": [],
            "minimumTlsVersionAllowed": "1.2",
        }
        out.update({k: v for k, v in resource.properties.items() if k in _PASSED_THROUGH})
        return out

    def extra(self, resource: Resource) -> dict[str, Any]:
        return {"sku": {"name": "Standard", "capacity": 1}, "identity": {"type": "None"}}

    def actions(self) -> dict[str, Any]:
        return {"listkeys": list_keys, "regeneratekey": regenerate_key}


class NamespaceTopicApi(KindApi):
    kind = NAMESPACE_TOPIC
    tracked = False

    def actions(self) -> dict[str, Any]:
        # A namespace topic's keys are its namespace's (the emulator keeps one pair per namespace).
        return {"listkeys": lambda eng, r, req: list_keys(eng, r.parent, req),
                "regeneratekey": lambda eng, r, req: regenerate_key(eng, r.parent, req)}

    def settings(self, req: Request, existing: Resource | None, parent: Resource | None) -> dict[str, Any]:
        props = _props(req.body)
        out: dict[str, Any] = dict(existing.properties) if (req.patch and existing) else {}
        schema = props.get("inputSchema", CLOUDEVENT_SCHEMA)
        if schema != CLOUDEVENT_SCHEMA:
            raise bad_request("A namespace topic takes CloudEventSchemaV1_0 only.", "InvalidInputSchema", "properties.inputSchema")
        publisher = props.get("publisherType", "Custom")
        if publisher != "Custom":
            raise bad_request("publisherType must be Custom.", "InvalidRequestBody", "properties.publisherType")
        days = props.get("eventRetentionInDays", out.get("eventRetentionInDays", 1))
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 7:
            raise bad_request("properties.eventRetentionInDays must be an integer from 1 to 7.", "InvalidRequestBody",
                              "properties.eventRetentionInDays")
        out["eventRetentionInDays"] = days
        return out

    def properties(self, resource: Resource, req: Request) -> dict[str, Any]:
        return {"provisioningState": "Succeeded", "publisherType": "Custom", "inputSchema": CLOUDEVENT_SCHEMA,
                "eventRetentionInDays": resource.properties.get("eventRetentionInDays", 1)}


def list_keys(engine, resource: Resource, req: Request) -> dict[str, Any]:
    keys = resource.keys
    return {"key1": keys[0] if keys else None, "key2": keys[1] if len(keys) > 1 else None}


def regenerate_key(engine, resource: Resource, req: Request) -> dict[str, Any]:
    name = req.body.get("keyName", "")
    index = {"key1": 0, "key2": 1}.get(name.lower() if isinstance(name, str) else "")
    if index is None:
        raise bad_request("keyName must be key1 or key2.", "InvalidRequestBody", "keyName")
    keys = list(resource.keys) + [auth.generate_key() for _ in range(2 - len(resource.keys))]
    keys[index] = auth.generate_key()
    engine.registry.put(resource.kind, resource.name, resource.parent, {**resource.properties, "keys": keys})
    return {"key1": keys[0], "key2": keys[1]}


APIS: dict[str, KindApi] = {api.kind.name: api for api in (TopicApi(), DomainApi(), DomainTopicApi(), NamespaceApi(), NamespaceTopicApi())}


def not_found(kind: Kind, name: str, resource_group: str | None) -> ApiError:
    """ARM's answer for a resource that does not exist."""
    where = f" under resource group '{resource_group}'" if resource_group else ""
    return ApiError(404, "ResourceNotFound", f"The Resource '{kind.arm_type}/{name}'{where} was not found.")
