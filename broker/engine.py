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
from .metrics import Metrics
from .retry import Clock
from .store import Claimed, Store
from .subscriptions import STATE_AWAITING, STATE_FAILED, STATE_SUCCEEDED, Subscription, parse
from .topics import Registry, Topic
from .validation import Validator
from .webhook import WebhookClient

log = logging.getLogger("broker.engine")


class Engine:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock(config.time_scale)
        self.store = Store(Path(config.data_dir) / "broker.db", config.sync)
        self.registry = Registry(self.store, self.clock)
        self.metrics = Metrics(self.store)
        self.feed = ActivityFeed()
        self.client = WebhookClient()
        self.store.lazy_writes_on(self.client.on_loop, lambda delay, fn: self.client.loop.call_later(delay, fn))
        self.dispatcher = Dispatcher(self.store, self.registry, self.client, self.clock, config, self.metrics, self.feed)
        self.validator = Validator(self.registry, self.client, self.clock, config)
        self.started = False
        self.seen_api_versions: set[str] = set()
        self._pass: list[tuple[_Batch, Callable[[BaseException | None], None]]] = []  # see accept_soon
        if self.registry.topic(config.default_topic) is None:
            self.registry.put_topic(config.default_topic)
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

    # -- publishing ------------------------------------------------------------------------------

    def topic_for_publish(self, name: str) -> Topic:
        topic = self.registry.topic(name)
        if topic is None:
            if not self.config.auto_create_topics:
                raise ApiError(404, "NotFound", f"Topic '{name}' does not exist.")
            topic = self.registry.put_topic(name)
        return topic

    def accept(self, topic: Topic, events: list[Event]) -> int:
        """Store a batch with its fan-out in one transaction, then wake the dispatcher; return how
        many deliveries it created.

        The filter of each subscription is evaluated here, at publish time, as Azure does: a
        subscription created later does not receive events published before it existed.
        """
        batch = _Batch(self, topic, events)
        seqs, delivery_id = self.store.append(*batch.rows)
        return batch.accepted(seqs, delivery_id)

    def accept_soon(self, topic: Topic, events: list[Event], then: Callable[[BaseException | None], None]) -> None:
        """`accept` for a publish served on the delivery loop's thread, without waiting there: the
        batches accepted in one pass of the loop share one commit (each still all-or-nothing), and
        `then(error)` runs on the loop's thread once its batch is stored (error None) or refused."""
        self._pass.append((_Batch(self, topic, events), then))
        if len(self._pass) == 1:
            self.client.loop.call_soon(self._commit_pass)

    def _commit_pass(self) -> None:
        batches, self._pass = self._pass, []
        loop = self.client.loop

        def done(batch: _Batch, then, result, error: BaseException | None) -> None:
            if error is None:
                try:
                    batch.accepted(*result)
                except Exception as exc:  # stored all the same: the deliveries go out after a restart's recovery
                    log.exception("accepted batch could not be handed to the dispatcher")
                    error = exc
            if self.client.on_loop():
                then(error)
            else:  # committed by the writer thread: another write held the store
                loop.call_soon_threadsafe(then, error)

        try:
            self.store.transact_soon([(self.store.appending(*batch.rows), partial(done, batch, then)) for batch, then in batches])
        except Exception as exc:  # the store is closed: the broker is stopping
            for _, then in batches:
                then(exc)

    # -- subscriptions ---------------------------------------------------------------------------

    def put_subscription(self, topic_name: str, name: str, body: Any, validate_now: bool = True) -> tuple[Subscription, bool]:
        """Create or replace a subscription. With `validate_now` the handshake runs inside the call
        (the API's PUT, as Azure); otherwise in the background (declared subscriptions).

        Returns (subscription, created). Raises ApiError(400) if the handshake fails.
        """
        topic = self.registry.topic(topic_name) or self.topic_for_publish(topic_name)
        sub = parse(topic.name, name, body)
        if topic.input_schema != "Auto" and not schemas.delivery_supported(topic.input_schema, sub.schema_for(topic.input_schema)):
            raise ApiError(400, "InvalidDeliverySchema", f"Events of topic '{topic.name}' arrive as {topic.input_schema} and "
                           f"cannot be delivered as {sub.delivery_schema}, as in Azure.", [{"code": "InvalidDeliverySchema",
                           "message": "Unsupported input/delivery schema pair.", "target": "properties.eventDeliverySchema"}])
        existing = self.registry.subscription(topic.name, name)
        if existing is not None:
            sub.name = existing.name
            if existing.spec == sub.spec:  # unchanged re-declaration keeps its validation
                sub.state, sub.state_detail, sub.validation_code = existing.state, existing.state_detail, existing.validation_code
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
        self.registry.save_subscription(sub)
        if sub.state == STATE_AWAITING:
            self.validator.wake()
        self.dispatcher.wake()
        log.info("subscription saved", extra={"topic": topic.name, "subscription": sub.name, "state": sub.state, "endpoint": sub.endpoint})
        if sub.state == STATE_FAILED:
            raise ApiError(400, "UrlValidationFailed", sub.state_detail or "Webhook validation handshake failed.",
                           [{"code": "UrlValidationFailed", "message": sub.state_detail, "target": "properties.destination.properties.endpointUrl"}])
        return sub, existing is None

    # -- dead letters ----------------------------------------------------------------------------

    def redeliver(self, topic: str, name: str, delivery_id: int | None) -> int:
        sub = self.registry.subscription(topic, name)
        if sub is None:
            raise ApiError(404, "NotFound", f"Subscription '{name}' does not exist on topic '{topic}'.")
        now = self.clock.now()
        count = self.store.redeliver(sub.topic, sub.name, delivery_id, now, now + self.clock.scaled(sub.retry.ttl_seconds))
        self.dispatcher.wake()
        return count

    # -- declared configuration --------------------------------------------------------------------

    def apply_config_file(self, path: Path) -> None:
        """Topics and subscriptions from BROKER_CONFIG; runtime changes made since are kept unless the
        file declares the same subscription differently."""
        try:
            spec = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise SystemExit(f"BROKER_CONFIG {path}: cannot read JSON: {exc}") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("topics", []), list):
            raise SystemExit(f"BROKER_CONFIG {path}: expected {{\"topics\": [...]}}")
        for t in spec.get("topics", []):
            try:
                keys = t.get("keys")
                topic = self.registry.put_topic(t["name"], t.get("inputSchema"), keys)
                for s in t.get("subscriptions", []):
                    self.put_subscription(topic.name, s["name"], s, validate_now=False)
            except (KeyError, TypeError) as exc:
                raise SystemExit(f"BROKER_CONFIG {path}: missing field {exc} in {t!r}") from None
            except ApiError as exc:
                raise SystemExit(f"BROKER_CONFIG {path}: {exc.message} ({exc.details})") from None
        log.info("applied config file", extra={"path": str(path), "topics": len(spec.get("topics", []))})

    def topic_resource(self, topic: Topic) -> dict[str, Any]:
        path = self.config.topic_path(topic.name)
        return {
            "id": path,
            "name": topic.name,
            "type": "Microsoft.EventGrid/topics",
            "properties": {
                "endpoint": f"{self.config.base_url}/topics/{topic.name}/api/events",
                "inputSchema": topic.input_schema,
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
                "disableLocalAuth": False,
                "authentication": "SharedAccessKey" if topic.keys else "Anonymous",
            },
        }


class _Batch:
    """One publish's events on their way into the store: routed, serialised, then (`accepted`)
    handed to the dispatcher, counted and shown."""

    def __init__(self, engine: Engine, topic: Topic, events: list[Event]) -> None:
        self.engine, self.topic, self.events = engine, topic, events
        self.now = now = engine.clock.now()
        subs = [s for s in topic.subscriptions.values() if s.routable]
        direct = engine.dispatcher.direct(subs, len(events)) if subs else set()
        self.claimed = {sub.name: sub.key in direct for sub in subs}
        self.expires = {sub.name: now + engine.clock.scaled(sub.retry.ttl_seconds) for sub in subs}
        filtered = [sub for sub in subs if not sub.filter.matches_everything]
        topic_path = engine.config.topic_path(topic.name)
        self.records, self.routes = [], []
        for event in events:
            route = subs
            if filtered:
                envelope = schemas.render(event, event.input_schema, topic_path)
                route = [sub for sub in subs if sub.filter.matches_everything or sub.filter.matches(envelope)]
            self.records.append((event.id, event.type, event.subject, codec.dumps(event.to_record())))
            self.routes.append(route)
        self.rows = (topic.name, self.records,
                     [[(sub.name, self.expires[sub.name], self.claimed[sub.name]) for sub in route] for route in self.routes], now)

    def accepted(self, seqs: list[int], delivery_id: int) -> int:
        """After the commit: the deliveries to their lanes (or the dispatcher woken for them), the
        counters, the log and the dashboard's feed. Returns how many deliveries were made."""
        eng, topic, events, routes, now = self.engine, self.topic, self.events, self.routes, self.now
        deliveries = sum(map(len, routes))
        if deliveries:
            handed: dict[str, tuple[Subscription, list[Claimed]]] = {}
            pending = False
            eng.dispatcher.renderings.add(
                [(seq, event, {sub.schema_for(event.input_schema) for sub in route}) for seq, event, route in zip(seqs, events, routes, strict=True) if route],
                eng.config.topic_path(topic.name),
            )
            for seq, row, route in zip(seqs, self.records, routes, strict=True):
                for sub in route:
                    if self.claimed[sub.name]:
                        handed.setdefault(sub.name, (sub, []))[1].append(Claimed(delivery_id, seq, 0, now, self.expires[sub.name], row[3]))
                    else:
                        pending = True
                    delivery_id += 1
            if handed:
                eng.dispatcher.hand_over(list(handed.values()))
            if pending:
                eng.dispatcher.wake()  # only when there is something for it to claim
        eng.metrics.child(eng.metrics.accepted, topic.name).inc(len(events))
        if log.isEnabledFor(logging.INFO):
            log.info(
                "accepted batch",
                extra={"topic": topic.name, "count": len(events), "event_ids": [e.id for e in events][:20], "deliveries": deliveries},
            )
        if eng.feed.has_listeners:
            for seq, event, route in zip(seqs, events, routes, strict=True):
                eng.feed.publish("event", {
                    "seq": seq, "topic": topic.name, "id": event.id, "type": event.type, "subject": event.subject,
                    "time": event.time, "receivedAt": now, "subscriptions": [sub.name for sub in route],
                })
        return deliveries
