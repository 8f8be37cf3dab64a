"""The one event model that both input schemas are parsed into and rendered from.

Event Grid accepts events in two schemas (EventGridSchema and CloudEvents 1.0). The broker keeps a
single representation so that storage, filtering and delivery have one code path each; the
`schemas` module converts between this model and the wire formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENTGRID_SCHEMA = "EventGridSchema"
CLOUDEVENT_SCHEMA = "CloudEventSchemaV1_0"
SCHEMAS = (EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA)
# A topic's inputSchema for events of the publisher's own shape, mapped by its inputSchemaMapping;
# and the delivery schema that hands them on exactly as published.
CUSTOM_INPUT_SCHEMA = "CustomEventSchema"
CUSTOM_SCHEMA = "CustomInputSchema"


@dataclass(slots=True)
class Event:
    """An accepted event, independent of the schema it arrived in.

    `source` is only set for CloudEvents input: EventGridSchema events get their `topic` (and, when
    converted, their CloudEvents `source`) from the broker's topic resource path at delivery time,
    as Azure overwrites whatever the publisher sent. `topic` is the domain topic an event published
    to a domain names (its `topic`, or a CloudEvent's `source`); None elsewhere. An event of a
    custom input schema has the published event as its `data`, as Azure delivers it.
    """

    id: str
    type: str
    time: str
    subject: str | None = None
    source: str | None = None
    data: Any = None
    data_base64: str | None = None
    data_version: str | None = None
    # CloudEvents optional and extension attributes, kept verbatim (datacontenttype, dataschema, ...).
    extensions: dict[str, Any] = field(default_factory=dict)
    input_schema: str = EVENTGRID_SCHEMA
    topic: str | None = None

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict for the store; `from_record` is its inverse."""
        record: dict[str, Any] = {"id": self.id, "type": self.type, "time": self.time, "schema": self.input_schema}
        for key in ("subject", "source", "data_version", "data_base64", "topic"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        if self.data is not None:
            record["data"] = self.data
        if self.extensions:
            record["extensions"] = self.extensions
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Event:
        return cls(
            id=record["id"],
            type=record["type"],
            time=record["time"],
            subject=record.get("subject"),
            source=record.get("source"),
            data=record.get("data"),
            data_base64=record.get("data_base64"),
            data_version=record.get("data_version"),
            extensions=record.get("extensions") or {},
            input_schema=record.get("schema", EVENTGRID_SCHEMA),
            topic=record.get("topic"),
        )
