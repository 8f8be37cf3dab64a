"""The resource model: the kinds of Event Grid resource the emulator serves and what each one is.

    kind            ARM type                                   parent           takes events  holds keys
    topic           Microsoft.EventGrid/topics                 -                yes           yes
    domain          Microsoft.EventGrid/domains                -                yes           yes
    domaintopic     Microsoft.EventGrid/domains/topics         domain           (via domain)  (domain's)
    namespace       Microsoft.EventGrid/namespaces             -                -             yes
    namespacetopic  Microsoft.EventGrid/namespaces/topics      namespace        yes           (namespace's)
    subscription    .../eventSubscriptions                     any of the above but namespace

A `Resource` is one of them as the registry holds it in memory. Its `children` and `subscriptions`
are replaced, never changed in place (copy on write, see registry.py), so the publish path reads
them without a lock. Names follow Azure's rules, ASCII only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import bad_request

if TYPE_CHECKING:
    from .schemas import InputMapping
    from .subscriptions import Subscription

PROVIDER = "Microsoft.EventGrid"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # as stored (resources.kind)
    segment: str  # its collection's name in an ARM path ("topics")
    arm_type: str
    parent: str | None  # the kind it lives under
    name_pattern: re.Pattern
    name_rule: str  # the rule, for the error message
    events: bool = False  # events are published to it
    keys: bool = False  # it holds access keys (its children use them)


def _names(low: int, high: int, extra: str = "") -> re.Pattern:
    return re.compile(rf"[A-Za-z0-9-{extra}]{{{low},{high}}}", re.ASCII)


TOPIC = Kind("topic", "topics", f"{PROVIDER}/topics", None, _names(3, 50), "3-50 characters: letters, digits and hyphens",
             events=True, keys=True)
DOMAIN = Kind("domain", "domains", f"{PROVIDER}/domains", None, _names(3, 50), "3-50 characters: letters, digits and hyphens",
              events=True, keys=True)
DOMAIN_TOPIC = Kind("domaintopic", "topics", f"{PROVIDER}/domains/topics", "domain", _names(3, 50, "_."),
                    "3-50 characters: letters, digits, hyphens, underscores and periods")
NAMESPACE = Kind("namespace", "namespaces", f"{PROVIDER}/namespaces", None, _names(3, 50),
                 "3-50 characters: letters, digits and hyphens", keys=True)
NAMESPACE_TOPIC = Kind("namespacetopic", "topics", f"{PROVIDER}/namespaces/topics", "namespace", _names(3, 50),
                       "3-50 characters: letters, digits and hyphens", events=True)
SUBSCRIPTION = Kind("subscription", "eventSubscriptions", f"{PROVIDER}/eventSubscriptions", None, _names(3, 64),
                    "3-64 characters: letters, digits and hyphens")

KINDS = {k.name: k for k in (TOPIC, DOMAIN, DOMAIN_TOPIC, NAMESPACE, NAMESPACE_TOPIC, SUBSCRIPTION)}
# The kinds found at the top of a resource group, by their ARM collection name (lower case).
TOP = {k.segment.lower(): k for k in (TOPIC, DOMAIN, NAMESPACE)}
# The kinds found under a parent kind, by collection name.
CHILDREN = {"domain": {"topics": DOMAIN_TOPIC}, "namespace": {"topics": NAMESPACE_TOPIC}}
# Scopes an event subscription can have.
SCOPES = frozenset({"topic", "domain", "domaintopic", "namespacetopic"})


def check_name(kind: Kind, name: Any) -> str:
    """The name, or a 400 in Azure's shape naming the rule it breaks."""
    if not isinstance(name, str) or not kind.name_pattern.fullmatch(name):
        label = {"subscription": "Event subscription", "domaintopic": "Domain topic", "namespacetopic": "Namespace topic"}.get(
            kind.name, kind.name.capitalize())
        raise bad_request(f"{label} name '{name}' is invalid: it must be {kind.name_rule}.", "InvalidResourceName", "name")
    return name


@dataclass(eq=False, slots=True)
class Resource:
    id: int
    kind: Kind
    name: str
    parent: Resource | None
    arm_subscription: str
    resource_group: str
    location: str
    tags: dict[str, str] | None
    properties: dict[str, Any]  # the kind's settings as validated (kinds.py); "keys" is internal
    created_at: float
    updated_at: float
    mapping: InputMapping | None = None  # a custom input schema's compiled mapping (topics and domains)
    children: dict[str, Resource] = field(default_factory=dict)  # lower-case name -> child; replaced, never changed
    subscriptions: tuple[Subscription, ...] = ()  # replaced, never changed
    deleted: bool = False

    @property
    def path(self) -> str:
        """Its Azure Resource Manager id, as Azure writes it into every delivered event's `topic`."""
        if self.parent is not None:
            return f"{self.parent.path}/{self.kind.segment}/{self.name}"
        return (f"/subscriptions/{self.arm_subscription}/resourceGroups/{self.resource_group}"
                f"/providers/{PROVIDER}/{self.kind.segment}/{self.name}")

    @property
    def short_path(self) -> str:
        """Its path on the emulator's short routes: `/topics/t`, `/domains/d/topics/dt`."""
        prefix = self.parent.short_path if self.parent is not None else ""
        return f"{prefix}/{self.kind.segment}/{self.name}"

    @property
    def keys(self) -> list[str]:
        """The access keys that authenticate publishes to it ([] = anonymous)."""
        if self.kind.keys:
            return self.properties.get("keys") or []
        return self.parent.keys if self.parent is not None else []

    @property
    def input_schema(self) -> str:
        if self.kind is NAMESPACE_TOPIC:
            return "CloudEventSchemaV1_0"
        if self.kind is DOMAIN_TOPIC and self.parent is not None:
            return self.parent.input_schema
        return self.properties.get("inputSchema", "EventGridSchema")

    @property
    def label(self) -> str:
        """How the dashboard and the logs name it: `orders`, `shop/orders` for a domain topic."""
        return self.name if self.parent is None else f"{self.parent.name}/{self.name}"

    def subscription(self, name: str) -> Subscription | None:
        lower = name.lower()
        for sub in self.subscriptions:
            if sub.name.lower() == lower:
                return sub
        return None

    def child(self, name: str) -> Resource | None:
        return self.children.get(name.lower())
