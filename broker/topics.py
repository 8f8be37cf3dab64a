"""Topics and their subscriptions: an in-memory view of the store, kept in step on every change.

The publish path reads this registry (keys, input schema, compiled filters) without touching SQLite;
management calls write through to the store first, so runtime changes survive a restart.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from . import auth
from .errors import ApiError, bad_request, not_found
from .store import Store
from .subscriptions import Subscription, parse

log = logging.getLogger("broker.topics")

INPUT_SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0", "Auto")


@dataclass(slots=True)
class Topic:
    name: str
    input_schema: str = "Auto"
    keys: list[str] = field(default_factory=list)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # lower-case name -> sub


class Registry:
    def __init__(self, store: Store, clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.RLock()
        self._topics: dict[str, Topic] = {}
        for row in store.topics():
            self._topics[row["name"].lower()] = Topic(row["name"], row["input_schema"], row["keys"])
        for row in store.subscriptions():
            topic = self._topics.get(row["topic"].lower())
            if topic is None:
                continue
            try:
                sub = parse(topic.name, row["name"], {"properties": row["spec"]})
            except ApiError as exc:  # a spec stored by an older version that no longer validates
                log.error("skipping stored subscription", extra={"subscription": row["name"], "error": exc.message})
                continue
            sub.state, sub.state_detail, sub.validation_code = row["state"], row["state_detail"], row["validation_code"]
            topic.subscriptions[sub.name.lower()] = sub

    # -- topics ----------------------------------------------------------------------------------

    def topic(self, name: str) -> Topic | None:
        return self._topics.get(name.lower())

    def topics(self) -> list[Topic]:
        with self._lock:
            return sorted(self._topics.values(), key=lambda t: t.name.lower())

    def require(self, name: str) -> Topic:
        topic = self.topic(name)
        if topic is None:
            raise not_found(f"Topic '{name}' does not exist.")
        return topic

    def put_topic(self, name: str, input_schema: str | None = None, keys: list[str] | None = None) -> Topic:
        """Create or update a topic. A new topic is anonymous unless keys are given (`keys=[]`)."""
        if not name or not all(c.isalnum() or c == "-" for c in name) or not 3 <= len(name) <= 50:
            raise bad_request(f"Topic name '{name}' must be 3-50 characters of letters, digits and hyphens.", "InvalidName", "name")
        if input_schema is not None and input_schema not in INPUT_SCHEMAS:
            raise bad_request(f"inputSchema must be one of {', '.join(INPUT_SCHEMAS)}.", "InvalidInputSchema", "properties.inputSchema")
        if keys is not None and (not isinstance(keys, list) or len(keys) > 2 or not all(isinstance(k, str) and k for k in keys)):
            raise bad_request("keys must be a list of at most two non-empty strings.", "InvalidRequestBody", "properties.keys")
        with self._lock:
            existing = self.topic(name)
            schema = input_schema or (existing.input_schema if existing else "Auto")
            new_keys = keys if keys is not None else (existing.keys if existing else [])
            self.store.upsert_topic(existing.name if existing else name, schema, new_keys, self.clock.now())
            if existing:
                existing.input_schema, existing.keys = schema, list(new_keys)
                return existing
            topic = Topic(name, schema, list(new_keys))
            self._topics[name.lower()] = topic
            return topic

    def regenerate_key(self, name: str, key_name: str) -> Topic:
        topic = self.require(name)
        index = {"key1": 0, "key2": 1}.get(key_name)
        if index is None:
            raise bad_request("keyName must be key1 or key2.", "InvalidRequestBody", "keyName")
        keys = list(topic.keys) + [auth.generate_key() for _ in range(2 - len(topic.keys))]
        keys[index] = auth.generate_key()
        return self.put_topic(name, keys=keys)

    def delete_topic(self, name: str) -> bool:
        with self._lock:
            if not self.store.delete_topic(name):
                return False
            self._topics.pop(name.lower(), None)
            return True

    # -- subscriptions ---------------------------------------------------------------------------

    def subscription(self, topic: str, name: str) -> Subscription | None:
        t = self.topic(topic)
        return t.subscriptions.get(name.lower()) if t else None

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return [s for t in self._topics.values() for s in t.subscriptions.values()]

    def save_subscription(self, sub: Subscription) -> None:
        with self._lock:
            topic = self.require(sub.topic)
            self.store.upsert_subscription(
                topic.name, sub.name, sub.spec, sub.state, sub.state_detail, sub.validation_code, self.clock.now()
            )
            topic.subscriptions[sub.name.lower()] = sub

    def set_state(self, sub: Subscription, state: str, detail: str | None = None) -> None:
        with self._lock:
            sub.state, sub.state_detail = state, detail
            self.store.set_subscription_state(sub.topic, sub.name, state, detail, self.clock.now())

    def delete_subscription(self, topic: str, name: str) -> bool:
        with self._lock:
            t = self.topic(topic)
            if t is None or name.lower() not in t.subscriptions:
                return False
            self.store.delete_subscription(t.name, name)
            del t.subscriptions[name.lower()]
            return True
