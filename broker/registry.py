"""Every resource the broker serves, in memory: the publish path reads them here without touching
SQLite, and every change is written to the store first, so it survives a restart and a failed
write changes nothing.

Concurrency: writers (management calls on waitress's worker threads, the validator thread) take
`_lock` and, holding it, write through to the store and then swap in new collections. Readers (the
publish path on the delivery loop, the dispatcher, the dashboard) take no lock: every collection
they read -- `Resource.children`, `Resource.subscriptions`, the top-level index, the tuple of all
subscriptions -- is replaced whole, never changed in place, so a reader sees the old one or the new
one, never one halfway changed. Nothing outside this module runs under `_lock`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from . import schemas
from .errors import ApiError
from .resources import KINDS, SUBSCRIPTION, TOPIC, Kind, Resource
from .store import ResourceRow, Store
from .subscriptions import Subscription, parse

log = logging.getLogger("broker.registry")


class Registry:
    def __init__(self, store: Store, clock, arm_subscription: str, resource_group: str, location: str = "local") -> None:
        self.store = store
        self.clock = clock
        self.arm_subscription = arm_subscription
        self.resource_group = resource_group
        self.location = location
        self._lock = threading.RLock()
        self._ids: dict[int, Resource | Subscription] = {}
        self._top: dict[tuple[str, str], Resource] = {}  # (kind name, lower-case name) -> resource
        self._subscriptions: tuple[Subscription, ...] = ()
        self._load(store.resources.all())

    def _load(self, rows: list[ResourceRow]) -> None:
        for row in rows:  # parents come first
            parent = self._ids.get(row.parent) if row.parent is not None else None
            if row.parent is not None and not isinstance(parent, Resource):
                log.error("skipping a stored resource whose parent is gone", extra={"resource": row.name, "kind": row.kind})
                continue
            if row.kind == SUBSCRIPTION.name:
                try:
                    sub = parse(parent, row.name, {"properties": row.properties})
                except ApiError as exc:  # a spec stored by an older version that no longer validates
                    log.error("skipping stored subscription", extra={"subscription": row.name, "error": exc.message})
                    continue
                sub.id, sub.created_at = row.id, row.created_at
                sub.state, sub.state_detail, sub.validation_code = row.state, row.state_detail, row.validation_code
                parent.subscriptions = (*parent.subscriptions, sub)
                self._ids[sub.id] = sub
                continue
            resource = Resource(row.id, KINDS[row.kind], row.name, parent, row.arm_subscription, row.resource_group,
                                row.location, row.tags, row.properties, row.created_at, row.updated_at)
            resource.mapping = _mapping(resource)
            if parent is None:
                self._top[(row.kind, row.name.lower())] = resource
            else:
                parent.children = {**parent.children, row.name.lower(): resource}
            self._ids[row.id] = resource
        self._subscriptions = tuple(s for s in self._ids.values() if isinstance(s, Subscription))

    # -- reading ---------------------------------------------------------------------------------

    def get(self, kind: Kind, name: str, parent: Resource | None = None) -> Resource | None:
        if parent is None:
            return self._top.get((kind.name, name.lower()))
        found = parent.children.get(name.lower())
        return found if found is not None and found.kind is kind else None

    def topic(self, name: str) -> Resource | None:
        """A custom topic by name."""
        return self.get(TOPIC, name)

    def subscription(self, topic: str, name: str) -> Subscription | None:
        """An event subscription of a custom topic, by the topic's and its own name."""
        found = self.get(TOPIC, topic)
        return found.subscription(name) if found is not None else None

    def top(self, kind: Kind) -> list[Resource]:
        return sorted((r for r in self._top.values() if r.kind is kind), key=lambda r: r.name.lower())

    def find(self, resource_id: int) -> Resource | Subscription | None:
        return self._ids.get(resource_id)

    def subscriptions(self) -> tuple[Subscription, ...]:
        """Every event subscription (a snapshot: the tuple is never changed)."""
        return self._subscriptions

    # -- resources -------------------------------------------------------------------------------

    def put(self, kind: Kind, name: str, parent: Resource | None, properties: dict[str, Any], *,
            arm_subscription: str | None = None, resource_group: str | None = None, location: str | None = None,
            tags: dict[str, str] | None = None) -> tuple[Resource, bool]:
        """Create or update a resource; return it and whether it was created. `properties` are the
        kind's settings, already validated (kinds.py)."""
        now = self.clock.now()
        with self._lock:
            existing = self.get(kind, name, parent)
            if existing is not None:
                row = ResourceRow(kind.name, existing.name, parent.id if parent else None, existing.arm_subscription,
                                  existing.resource_group, properties, existing.location if location is None else location,
                                  existing.tags if tags is None else tags, created_at=existing.created_at, updated_at=now,
                                  id=existing.id)
                self.store.resources.save(row)
                probe = Resource(existing.id, kind, existing.name, parent, existing.arm_subscription, existing.resource_group,
                                 row.location, row.tags, properties, existing.created_at, now)
                mapping = _mapping(probe)
                # One assignment each: a publish reads either the old settings or the new ones.
                existing.location, existing.tags, existing.updated_at = row.location, row.tags, now
                existing.mapping, existing.properties = mapping, properties
                return existing, False
            arm_subscription = parent.arm_subscription if parent else (arm_subscription or self.arm_subscription)
            resource_group = parent.resource_group if parent else (resource_group or self.resource_group)
            row = ResourceRow(kind.name, name, parent.id if parent else None, arm_subscription, resource_group, properties,
                              location if location is not None else (self.location if parent is None else ""), tags,
                              created_at=now, updated_at=now)
            resource = Resource(0, kind, name, parent, arm_subscription, resource_group, row.location, tags, properties, now, now)
            resource.mapping = _mapping(resource)  # before the write: a bad mapping is refused, not stored
            resource.id = self.store.resources.save(row)
            if parent is None:
                self._top = {**self._top, (kind.name, name.lower()): resource}
            else:
                parent.children = {**parent.children, name.lower(): resource}
            self._ids[resource.id] = resource
            return resource, True

    def delete(self, resource: Resource) -> None:
        """Delete a resource with everything under it: its children and their event subscriptions
        stop receiving at once, and their deliveries still to be made are dropped."""
        reason = f"{_title(resource.kind)}Deleted"
        with self._lock:
            doomed = list(_subtree(resource))
            subs = [s for r in doomed for s in r.subscriptions]
            for sub in subs:
                sub.deleted = True  # before the write: a publish routed from now on leaves it out
            try:
                self.store.resources.delete([r.id for r in doomed] + [s.id for s in subs], [s.id for s in subs], reason, self.clock.now())
            except BaseException:
                for sub in subs:
                    sub.deleted = False
                raise
            for r in doomed:
                r.deleted = True
                self._ids.pop(r.id, None)
            for sub in subs:
                self._ids.pop(sub.id, None)
            if resource.parent is None:
                self._top = {k: v for k, v in self._top.items() if v is not resource}
            else:
                resource.parent.children = {k: v for k, v in resource.parent.children.items() if v is not resource}
            self._subscriptions = tuple(s for s in self._subscriptions if not s.deleted)

    # -- event subscriptions ---------------------------------------------------------------------

    def save_subscription(self, sub: Subscription) -> bool:
        """Create or replace an event subscription in its scope; return whether it was created."""
        now = self.clock.now()
        with self._lock:
            scope = sub.scope
            if scope.deleted:
                raise ApiError(404, "ResourceNotFound", f"The {_title(scope.kind).lower()} '{scope.label}' was deleted.")
            existing = scope.subscription(sub.name)
            if existing is not None:
                sub.id, sub.name, sub.created_at = existing.id, existing.name, existing.created_at
            else:
                sub.created_at = now
            row = ResourceRow(SUBSCRIPTION.name, sub.name, scope.id, scope.arm_subscription, scope.resource_group, sub.spec,
                              state=sub.state, state_detail=sub.state_detail, validation_code=sub.validation_code,
                              created_at=sub.created_at, updated_at=now, id=existing.id if existing else None)
            sub.id = self.store.resources.save(row)
            others = tuple(s for s in scope.subscriptions if s is not existing)
            scope.subscriptions = (*others, sub)
            self._ids[sub.id] = sub
            self._subscriptions = (*(s for s in self._subscriptions if s is not existing), sub)
            return existing is None

    def set_state(self, sub: Subscription, state: str, detail: str | None = None) -> None:
        with self._lock:
            if sub.deleted:
                return
            self.store.resources.set_state(sub.id, state, detail, self.clock.now())
            sub.state, sub.state_detail = state, detail

    def delete_subscription(self, sub: Subscription) -> None:
        with self._lock:
            sub.deleted = True  # before the write: a publish routed from now on leaves it out
            try:
                self.store.resources.delete([sub.id], [sub.id], "SubscriptionDeleted", self.clock.now())
            except BaseException:
                sub.deleted = False
                raise
            sub.scope.subscriptions = tuple(s for s in sub.scope.subscriptions if s is not sub)
            self._ids.pop(sub.id, None)
            self._subscriptions = tuple(s for s in self._subscriptions if s is not sub)


def _mapping(resource: Resource) -> schemas.InputMapping | None:
    if resource.kind.events and resource.properties.get("inputSchema") == "CustomEventSchema":
        try:
            return schemas.compile_mapping(resource.properties.get("inputSchemaMapping"))
        except schemas.SchemaError as exc:
            raise ApiError(exc.status, exc.code, exc.message, exc.details) from None
    return None


def _subtree(resource: Resource) -> Iterable[Resource]:
    yield resource
    for child in resource.children.values():
        yield from _subtree(child)


def _title(kind: Kind) -> str:
    return {"domaintopic": "DomainTopic", "namespacetopic": "NamespaceTopic"}.get(kind.name, kind.name.capitalize())
