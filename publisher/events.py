"""Wrapping order payloads in the SDK's event types, for either input schema of a topic."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

EVENT_TYPE = "NewOrder"
# CloudEvents needs a source; Event Grid schema events get theirs (topic) from the broker instead.
CLOUDEVENT_SOURCE = "/shop/checkout"
SCHEMAS = ("eventgrid", "cloudevents")


def event_id(rng: random.Random) -> str:
    """A version-4 UUID drawn from `rng`: unique like uuid4(), but a seeded run repeats its ids,
    which is how to show the subscribers skipping a redelivered event."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def new_order_event(order: dict[str, Any], *, schema: str, rng: random.Random) -> EventGridEvent | CloudEvent:
    subject = f"orders/{order['orderId']}"
    if schema == "eventgrid":
        return EventGridEvent(subject=subject, event_type=EVENT_TYPE, data=order, data_version="1.0", id=event_id(rng))
    if schema == "cloudevents":
        return CloudEvent(
            source=CLOUDEVENT_SOURCE,
            type=EVENT_TYPE,
            subject=subject,
            data=order,
            datacontenttype="application/json",
            id=event_id(rng),
        )
    raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")


def new_order_events(
    orders: Iterable[dict[str, Any]], *, schema: str, rng: random.Random
) -> Iterator[EventGridEvent | CloudEvent]:
    return (new_order_event(order, schema=schema, rng=rng) for order in orders)
