"""The running broker: store, registry, dispatcher and validator wired together.

One `Engine` per app (kept in `app.extensions["broker"]`); nothing lives at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from . import codec, schemas
from .activity import ActivityFeed
from .config import Config
from .dispatcher import Dispatcher
from .errors import ApiError
from .events import Event
from .kinds import APIS, Request
from .metrics import Metrics
from .pull import Pull
from .registry import Registry
from .resources import DOMAIN, DOMAIN_TOPIC, NAMESPACE, NAMESPACE_TOPIC, TOPIC, Kind, Resource, check_name
from .retry import Clock
from .security import Guard
from .store import Claimed, Store
from .subscriptions import STATE_AWAITING, STATE_FAILED, STATE_SUCCEEDED, Subscription, parse
from .validation import Validator
from .webhook import WebhookClient

log = logging.getLogger("broker.engine")


class Engine:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock(config.time_scale)
        self.store = Store(Path(config.data_dir) / "broker.db", config.sync, config.azure_subscription_id, config.resource_group)
        self.registry = Registry(self.store, self.clock, config.azure_subscription_id, config.resource_group)
        self.metrics = Metrics(self)
        self.feed = ActivityFeed()
        self.client = WebhookClient()
        self.store.commits.lazy_writes_on(self.client.on_loop, lambda delay, fn: self.client.loop.call_later(delay, fn))
        self.dispatcher = Dispatcher(self.store, self.registry, self.client, self.clock, config, self.metrics, self.feed)
        self.validator = Validator(self.registry, self.client, self.clock, config)
        self.pull = Pull(self)
        self.guard = Guard.from_config(config)
        self.started = False
        self.seen_api_versions: set[str] = set()
        self._pass: list[tuple[_Batch, Callable[[BaseException | None, int], None]]] = []  # see accept_soon
        if self.registry.get(TOPIC, config.default_topic) is None:
            self.create(TOPIC, config.default_topic)
        if config.config_file:
            self.apply_config_file(Path(config.config_file))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.dispatcher.start()
        self.validator.start(on_validated=self.dispatcher.wake)
        self.started = True

    def stop(self) -> None:
        self.validator.stop()
        self.dispatcher.stop()
        self.client.close()
        self.store.close()
        self.started = False

    # -- resources -------------------------------------------------------------------------------

    def create(self, kind: Kind, name: str, parent: Resource | None = None, properties: dict[str, Any] | None = None,
               via_arm: bool = False) -> Resource:
        """Create or update a resource from its ARM `properties` (the config file, the default topic)."""
        check_name(kind, name)
        existing = self.registry.get(kind, name, parent)
        settings = APIS[kind.name].settings(Request({"properties": properties or {}}, via_arm, self.config.base_url), existing, parent)
        return self.registry.put(kind, name, parent, settings)[0]

    # -- publishing ------------------------------------------------------------------------------

    def topic_for_publish(self, name: str) -> Resource:
        """The topic a publish to /topics/{name}/api/events goes to, created if it does not exist
        (BROKER_AUTO_CREATE_TOPICS): anonymous, taking either schema."""
        topic = self.registry.get(TOPIC, name)
        if topic is None:
            if not self.config.auto_create_topics:
                raise ApiError(404, "NotFound", f"Topic '{name}' does not exist.")
            topic = self.create(TOPIC, name)
        return topic

    def accept(self, channel: Resource, events: list[Event]) -> int:
        """Store a batch with its fan-out in one transaction, then hand the deliveries over; return
        how many deliveries it created.

        The filter of each subscription is evaluated here, at publish time, as Azure does: a
        subscription created later does not receive events published before it existed.
        """
        batch = _Batch(self, channel, events)
        seqs, delivery_id = self.store.deliveries.append(*batch.rows)
        return batch.accepted(seqs, delivery_id)

    def accept_soon(self, channel: Resource, events: list[Event], then: Callable[[BaseException | None, int], None]) -> None:
        """`accept` for a publish served on the delivery loop's thread, without waiting there: the
        batches accepted in one pass of the loop share one commit (each still all-or-nothing), and
        `then(error, deliveries)` runs on the loop's thread once its batch is stored (error None)
        or refused."""
        self._pass.append((_Batch(self, channel, events), then))
        if len(self._pass) == 1:
            self.client.loop.call_soon(self._commit_pass)

    def _commit_pass(self) -> None:
        batches, self._pass = self._pass, []
        loop = self.client.loop

        def done(batch: _Batch, then, result, error: BaseException | None) -> None:
            routed = 0
            if error is None:
                try:
                    routed = batch.accepted(*result)
                except Exception as exc:  # stored all the same: the deliveries go out after a restart's recovery
                    log.exception("accepted batch could not be handed to the dispatcher")
                    error = exc
            if self.client.on_loop():
                then(error, routed)
            else:  # committed by the writer thread: another write held the store
                loop.call_soon_threadsafe(then, error, routed)

        try:
            self.store.commits.transact_soon(
                [(self.store.deliveries.appending(*batch.rows), partial(done, batch, then)) for batch, then in batches])
        except Exception as exc:  # the store is closed: the broker is stopping
            for _, then in batches:
                then(exc, 0)

    # -- subscriptions ---------------------------------------------------------------------------

    def put_subscription(self, scope: Resource, name: str, body: Any, validate_now: bool = True) -> tuple[Subscription, bool]:
        """Create or replace an event subscription. With `validate_now` the handshake runs inside
        the call (the API's PUT, as Azure); otherwise in the background (declared subscriptions).

        Returns (subscription, created). Raises ApiError(400) if the handshake fails.
        """
        sub = parse(scope, name, body)
        if sub.queue is not None and self.dispatcher.storage is None:
            raise ApiError(400, "InvalidEndpointType", "StorageQueue destinations need a storage account: start the broker with "
                           "BROKER_STORAGE_CONNECTION_STRING (UseDevelopmentStorage=true for Azurite).",
                           [{"code": "InvalidEndpointType", "message": "No storage account is configured.", "target": "properties.destination.endpointType"}])
        input_schema = scope.input_schema
        if input_schema != "Auto" and not schemas.delivery_supported(input_schema, sub.schema_for(input_schema)):
            raise ApiError(400, "InvalidDeliverySchema", f"Events of '{scope.label}' arrive as {input_schema} and "
                           f"cannot be delivered as {sub.delivery_schema}, as in Azure.", [{"code": "InvalidDeliverySchema",
                           "message": "Unsupported input/delivery schema pair.", "target": "properties.eventDeliverySchema"}])
        existing = scope.subscription(name)
        if existing is not None:
            if existing.spec == sub.spec and existing.state != STATE_FAILED:  # unchanged re-declaration keeps its validation
                return existing, False
            if existing.endpoint == sub.endpoint and existing.state == STATE_SUCCEEDED:
                sub.state, sub.validation_code = STATE_SUCCEEDED, existing.validation_code
        if sub.state != STATE_SUCCEEDED:
            if sub.skip_validation:
                sub.state = STATE_SUCCEEDED
            elif validate_now:
                sub.state, sub.state_detail = self.validator.handshake(sub)
                if sub.state == STATE_AWAITING:  # no answer at all is a failure for an API call
                    sub.state = STATE_FAILED
            else:
                sub.state = STATE_AWAITING
        created = self.registry.save_subscription(sub)
        if sub.state == STATE_AWAITING:
            self.validator.wake()
        self.dispatcher.wake()
        log.info("subscription saved", extra={"topic": scope.label, "subscription": sub.name, "state": sub.state, "endpoint": sub.endpoint})
        if sub.state == STATE_FAILED:
            raise ApiError(400, "UrlValidationFailed", sub.state_detail or "Webhook validation handshake failed.",
                           [{"code": "UrlValidationFailed", "message": sub.state_detail, "target": "properties.destination.properties.endpointUrl"}])
        return sub, created

    def delete_subscription(self, sub: Subscription) -> None:
        self.registry.delete_subscription(sub)
        self.dispatcher.wake()  # its lane gives back what it holds
        log.info("subscription deleted", extra={"topic": sub.scope.label, "subscription": sub.name})

    # -- dead letters ----------------------------------------------------------------------------

    def redeliver(self, sub: Subscription, delivery_id: int | None) -> int:
        now = self.clock.now()
        count = self.store.deliveries.redeliver(sub.id, delivery_id, now, now + self.clock.scaled(sub.retry.ttl_seconds))
        self.dispatcher.wake()
        return count

    # -- declared configuration --------------------------------------------------------------------

    def apply_config_file(self, path: Path) -> None:
        """Topics, domains and namespaces from BROKER_CONFIG, with their subscriptions; changes made
        since through the API are kept unless the file declares the same thing differently."""
        try:
            spec = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SystemExit(f"BROKER_CONFIG {path}: cannot read JSON: {exc}") from None
        if not isinstance(spec, dict) or not all(isinstance(spec.get(k, []), list) for k in ("topics", "domains", "namespaces")):
            raise SystemExit(f"BROKER_CONFIG {path}: expected {{\"topics\": [...], \"domains\": [...], \"namespaces\": [...]}}")
        counts = {}
        for section, kind, children in (("topics", TOPIC, ()), ("domains", DOMAIN, (("topics", DOMAIN_TOPIC),)),
                                        ("namespaces", NAMESPACE, (("topics", NAMESPACE_TOPIC),))):
            entries = spec.get(section, [])
            counts[section] = len(entries)
            for entry in entries:
                try:
                    self._declare(kind, entry, None, children)
                except (KeyError, TypeError) as exc:
                    raise SystemExit(f"BROKER_CONFIG {path}: missing or wrong field {exc} in {entry!r}") from None
                except ApiError as exc:
                    raise SystemExit(f"BROKER_CONFIG {path}: {exc.message} ({exc.details})") from None
        log.info("applied config file", extra={"path": str(path), **counts})

    def _declare(self, kind: Kind, entry: dict, parent: Resource | None, children: tuple) -> None:
        # The file's shorthand puts a topic's settings beside its name ("inputSchema", "keys"); the
        # ARM shape ("properties": {...}) works too.
        properties = dict(entry.get("properties") or {})
        for key in ("inputSchema", "keys", "inputSchemaMapping"):
            if key in entry:
                properties[key] = entry[key]
        resource = self.create(kind, entry["name"], parent, properties)
        for s in entry.get("subscriptions", []):
            self.put_subscription(resource, s["name"], s, validate_now=False)
        for section, child_kind in children:
            for child in entry.get(section, []):
                self._declare(child_kind, child, resource, ())


class _Batch:
    """One publish's events on their way into the store: routed, serialised, then (`accepted`)
    handed to the dispatcher, counted and shown."""

    def __init__(self, engine: Engine, channel: Resource, events: list[Event]) -> None:
        self.engine, self.channel, self.events = engine, channel, events
        self.now = now = engine.clock.now()
        scoped = tuple(s for s in channel.subscriptions if s.routable)
        domain = channel.kind is DOMAIN
        # Every subscription any event of the batch may reach, each once.
        subs = list(scoped)
        if domain:
            seen = {s.id for s in subs}
            for name in {e.topic.lower() for e in events}:
                child = channel.children.get(name)
                if child is not None:
                    subs += [s for s in child.subscriptions if s.routable and s.id not in seen]
        direct = engine.dispatcher.direct(subs, len(events)) if subs else set()
        self.claimed = {sub.id: sub.id in direct for sub in subs}
        self.expires = {sub.id: now + engine.clock.scaled(sub.retry.ttl_seconds) for sub in subs}
        self.records, self.routes, self.paths = [], [], []
        filtered = any(not s.filter.matches_everything for s in scoped)
        for event in events:
            candidates, path, check = scoped, channel.path, filtered
            if domain:
                child = channel.children.get(event.topic.lower())
                path = f"{channel.path}/topics/{event.topic}"
                if child is not None:
                    candidates = scoped + tuple(s for s in child.subscriptions if s.routable)
                    check = any(not s.filter.matches_everything for s in candidates)
            route = candidates
            if check:
                envelope = schemas.render(event, schemas.filter_schema(event.input_schema), path)
                route = [s for s in candidates if s.filter.matches_everything or s.filter.matches(envelope)]
            self.records.append((event.id, event.type, event.subject, codec.dumps(event.to_record())))
            self.routes.append(route)
            self.paths.append(path)
        self.rows = (channel.id, self.records, [[(s.id, self.expires[s.id], self.claimed[s.id]) for s in route] for route in self.routes], now)

    def accepted(self, seqs: list[int], delivery_id: int) -> int:
        """After the commit: the deliveries to their lanes (or the dispatcher woken for them), the
        counters, the log and the dashboard's feed. Returns how many deliveries were made."""
        eng, channel, events, routes, now = self.engine, self.channel, self.events, self.routes, self.now
        deliveries = sum(map(len, routes))
        if deliveries:
            handed: dict[int, tuple[Subscription, list[Claimed]]] = {}
            pending = False
            eng.dispatcher.renderings.add(
                [(seq, event, {sub.schema_for(event.input_schema) for sub in route}, path)
                 for seq, event, route, path in zip(seqs, events, routes, self.paths, strict=True) if route])
            orphaned: list[int] = []
            queued: set[int] = set()
            for seq, row, route in zip(seqs, self.records, routes, strict=True):
                for sub in route:
                    if sub.deleted:  # deleted after this batch was routed, and before or while it was stored
                        orphaned.append(delivery_id)
                    elif sub.mode == "queue":
                        queued.add(sub.id)
                    elif self.claimed[sub.id]:
                        handed.setdefault(sub.id, (sub, []))[1].append(Claimed(delivery_id, seq, 0, now, self.expires[sub.id], row[3]))
                    else:
                        pending = True
                    delivery_id += 1
            if orphaned:
                eng.store.deliveries.drop(orphaned, "SubscriptionDeleted", now)
            if handed:
                eng.dispatcher.hand_over(list(handed.values()))
            if queued:
                eng.pull.notify(list(queued))  # receives waiting on these queues answer now
            if pending:
                eng.dispatcher.wake()  # only when there is something for it to claim
        eng.metrics.child(eng.metrics.accepted, channel.label).inc(len(events))
        if log.isEnabledFor(logging.INFO):
            log.info(
                "accepted batch",
                extra={"topic": channel.label, "count": len(events), "event_ids": [e.id for e in events][:20], "deliveries": deliveries},
            )
        if eng.feed.has_listeners:
            for seq, event, route in zip(seqs, events, routes, strict=True):
                eng.feed.publish("event", {
                    "seq": seq, "topic": _event_label(channel, event), "id": event.id, "type": event.type, "subject": event.subject,
                    "time": event.time, "receivedAt": now, "subscriptions": [sub.name for sub in route],
                })
        return deliveries


def _event_label(channel: Resource, event: Event) -> str:
    return f"{channel.name}/{event.topic}" if channel.kind is DOMAIN and event.topic else channel.label

