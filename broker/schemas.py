"""Wire formats: parse publish requests into `Event`s and render `Event`s for delivery.

Two input schemas are supported, as on an Azure Event Grid custom topic:

* EventGridSchema: the body is a JSON array of Event Grid events.
* CloudEventSchemaV1_0: CloudEvents 1.0 over HTTP, structured (``application/cloudevents+json``),
  batched (``application/cloudevents-batch+json``) or binary (``ce-*`` headers, body = data).

A request is accepted whole or rejected whole: the first invalid event raises `SchemaError`, which
carries the HTTP status and renders Azure's error body shape::

    {"error": {"code": "BadRequest", "message": "...",
               "details": [{"code": "InputJsonInvalid", "message": "...", "target": "[2].eventTime"}]}}

Azure behaviour this module follows (sources: learn.microsoft.com/azure/event-grid/event-schema,
/post-to-custom-topic, /cloud-event-schema; service messages quoted in github.com/Azure/
azure-sdk-for-python/issues/16055, MicrosoftDocs/azure-docs/issues/43468, arcus-azure/
arcus.eventgrid/issues/145 and Azure/azure-sdk-for-net/issues/10684):

* Event Grid events are sent "in an array"; a single JSON object is rejected by Azure ("Unexpected
  token when reading JSON. Expected: StartArray, actual: StartObject").
* Required: id, subject, eventType, eventTime. dataVersion is optional: "If not included, will be
  stamped with an empty value". metadataVersion, if included, must be exactly "1". topic is stamped
  by Event Grid (see the deviation noted in `_eventgrid_event`).
* Properties outside the schema are rejected ("This resource is configured for 'EventGridEvent'
  schema. Received unexpected property 'source' in JSON which does not conform to the expected
  schema."); property names are matched case-insensitively, like the service's JSON reader.
* The array and each event are limited to 1 MB; exceeding either gives 413 Payload Too Large.
* A CloudEvents topic requires a CloudEvents content type, otherwise 415 with "The Content-Type
  header is either missing or it doesn't have a valid value. ...".
* EventGridSchema input can be delivered as CloudEvents; CloudEvents input cannot be delivered in
  the Event Grid schema (Azure refuses such subscriptions because CloudEvents extension attributes
  have no place in it). `delivery_supported` encodes that table; `render` still offers a best-effort
  CloudEvents -> EventGridSchema mapping for tooling.

Why the `cloudevents` library is not used on the parse path: its HTTP binding (2.2.0) falls back to
a plain string when a JSON body fails to parse (Azure answers 400), parses `time` with dateutil's
permissive ``isoparse`` into a datetime (losing the publisher's exact string and accepting forms
RFC 3339 does not), has no batch (``cloudevents-batch+json``) reader, and builds a validated object
per event on the hot path. The checks it does make are the CloudEvents 1.0 ones implemented below;
the unit tests use the library as an independent oracle for interoperability instead.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from broker import codec
from broker.events import CLOUDEVENT_SCHEMA, CUSTOM_INPUT_SCHEMA, CUSTOM_SCHEMA, EVENTGRID_SCHEMA, Event

AUTO_SCHEMA = "Auto"

# Documented limits: "the array can have a total size of up to 1 MB. Each event in the array is
# limited to 1 MB." (Azure measured slightly higher in practice; the documented values are used.)
MAX_EVENT_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 1024 * 1024

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
CLOUDEVENTS_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
JSON_CONTENT_TYPE = "application/json"

# (input schema, delivery schema) pairs Azure supports.
SUPPORTED_DELIVERY = frozenset(
    {
        (EVENTGRID_SCHEMA, EVENTGRID_SCHEMA),
        (EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA),
        (CLOUDEVENT_SCHEMA, CLOUDEVENT_SCHEMA),
        (CUSTOM_INPUT_SCHEMA, CUSTOM_SCHEMA),
        (CUSTOM_INPUT_SCHEMA, EVENTGRID_SCHEMA),
        (CUSTOM_INPUT_SCHEMA, CLOUDEVENT_SCHEMA),
    }
)
# The delivery schema of a subscription that names none: the event's own (a custom one as published).
DEFAULT_DELIVERY = {CUSTOM_INPUT_SCHEMA: CUSTOM_SCHEMA}

# The names Azure uses for the schemas in its error messages.
_AZURE_SCHEMA_NAME = {EVENTGRID_SCHEMA: "EventGridEvent", CLOUDEVENT_SCHEMA: "CloudEventV10"}

# HTTP status -> the error code Azure puts in "error.code" (the HttpStatusCode name).
_STATUS_CODE = {400: "BadRequest", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType"}

INVALID_JSON = "InputJsonInvalid"


class SchemaError(Exception):
    """A publish request that Event Grid would refuse; `status` is the HTTP status to answer with.

    400: malformed JSON or an event that breaks its schema; 413: request or event too large;
    415: a CloudEvents topic received a body without a CloudEvents content type (Azure's answer).
    """

    def __init__(self, status: int, code: str, message: str, details: list[dict] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details if details is not None else [{"code": code, "message": message}]

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def _fail(status: int, message: str, detail_code: str, target: str | None = None) -> SchemaError:
    detail: dict[str, Any] = {"code": detail_code, "message": message}
    if target is not None:
        detail["target"] = target
    return SchemaError(status, _STATUS_CODE[status], message, [detail])


# --------------------------------------------------------------------------------------------------
# Helpers


def dumps(obj: Any) -> bytes:
    """Compact JSON (UTF-8) for delivery bodies."""
    return codec.dumps(obj)


def _load(body: bytes, target: str = "body") -> Any:
    if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark is harmless; orjson refuses it
        body = body[3:]
    try:
        return codec.loads(body)
    except codec.JSONDecodeError as exc:
        raise _fail(400, f"The request body is not valid UTF-8 JSON: {exc}.", INVALID_JSON, target) from None


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): v for k, v in headers.items()}


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _is_json_media_type(media_type: str) -> bool:
    return media_type in ("application/json", "text/json") or media_type.endswith("+json")


_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?",
    re.ASCII,
)


def is_valid_time(value: Any, *, require_offset: bool) -> bool:
    """RFC 3339 / ISO-8601 extended date-time (seconds required, any number of fraction digits).

    The time zone offset is required when `require_offset` (CloudEvents `time` is an RFC 3339
    timestamp); Event Grid's `eventTime` is read as a DateTime by the service, which also takes
    an unqualified local form, so it is accepted there.
    """
    return isinstance(value, str) and _valid_time(value, require_offset)


@lru_cache(maxsize=4096)  # events of one batch often share a timestamp
def _valid_time(value: str, require_offset: bool) -> bool:
    m = _TIME_RE.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second, _, zulu, sign, offset_hour, offset_minute = m.groups()
    if sign:
        if int(offset_hour) > 23 or int(offset_minute) > 59:
            return False
    elif require_offset and not zulu:
        return False
    second_value = int(second)
    try:
        # RFC 3339 allows a leap second (60); datetime does not, so check the rest with 59.
        datetime(int(year), int(month), int(day), int(hour), int(minute), min(second_value, 59))
    except ValueError:
        return False
    return second_value <= 60


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _describe(index: int, raw: Any) -> str:
    event_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(event_id, str) and event_id:
        return f"(event index {index}, id '{event_id}')"
    return f"(event index {index})"


def _check_event_size(raw: Any, index: int, body_size: int) -> None:
    if body_size <= MAX_EVENT_BYTES:
        return  # an event written compactly is never longer than the body it came in
    size = len(codec.dumps(raw))
    if size > MAX_EVENT_BYTES:
        raise _fail(
            413,
            f"The event exceeds the maximum allowed event size of {MAX_EVENT_BYTES} bytes: it is "
            f"{size} bytes. {_describe(index, raw)}",
            "EventTooLarge",
            f"[{index}]",
        )


# --------------------------------------------------------------------------------------------------
# Parsing


def parse(body: bytes, headers: Mapping[str, str], input_schema: str, mapping: InputMapping | None = None,
          domain: bool = False) -> list[Event]:
    """Validate a publish request and return its events (all of them, or raise `SchemaError`).

    `input_schema` is the topic's schema: EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA or "Auto" (detect:
    a binary-mode ``ce-specversion`` header, a CloudEvents content type, or JSON objects carrying
    "specversion" mean CloudEvents; anything else is read as EventGridSchema) or CUSTOM_INPUT_SCHEMA
    with its `mapping`. For a `domain`, every event must name its domain topic (Event.topic).
    """
    events = _parse(body, headers, input_schema, mapping)
    if domain:
        for index, event in enumerate(events):
            _domain_topic(event, index)
    else:
        for event in events:
            event.topic = None  # (what a publisher sends there is overwritten with the topic's path)
    return events


def _parse(body: bytes, headers: Mapping[str, str], input_schema: str, mapping: InputMapping | None) -> list[Event]:
    if input_schema == CUSTOM_INPUT_SCHEMA:
        if mapping is None:
            raise ValueError("a custom input schema needs its mapping")
        _check_request_size(body)
        return _custom_events(_load_nonempty(body), len(body), mapping)
    if input_schema not in (EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA, AUTO_SCHEMA):
        raise ValueError(f"unknown input schema {input_schema!r}")
    _check_request_size(body)
    lowered = _lower_headers(headers)
    media_type = _media_type(lowered.get("content-type"))
    structured = media_type in (CLOUDEVENTS_CONTENT_TYPE, CLOUDEVENTS_BATCH_CONTENT_TYPE)
    binary = "ce-specversion" in lowered and not structured

    if input_schema == CLOUDEVENT_SCHEMA or (input_schema == AUTO_SCHEMA and (structured or binary)):
        if binary:
            return [_binary_cloudevent(body, lowered, media_type)]
        if not structured:
            raise _fail(
                415,
                "The Content-Type header is either missing or it doesn't have a valid value. The "
                "content type header must either be application/cloudevents+json; charset=utf-8 or "
                "application/cloudevents-batch+json; charset=UTF-8.",
                "UnsupportedMediaType",
                "Content-Type",
            )
        payload = _load_nonempty(body)
        if media_type == CLOUDEVENTS_CONTENT_TYPE:
            if not isinstance(payload, dict):
                raise _fail(
                    400,
                    "A request with Content-Type application/cloudevents+json must contain one JSON "
                    "object; send an array as application/cloudevents-batch+json.",
                    INVALID_JSON,
                    "body",
                )
            return _cloudevents([payload], len(body))
        if not isinstance(payload, list):
            raise _fail(
                400,
                "Unexpected token when reading JSON. Expected: StartArray, actual: StartObject. A "
                "request with Content-Type application/cloudevents-batch+json must contain a JSON array.",
                INVALID_JSON,
                "body",
            )
        return _cloudevents(payload, len(body))

    payload = _load_nonempty(body)
    if input_schema == AUTO_SCHEMA and _looks_like_cloudevents(payload):
        return _cloudevents(payload if isinstance(payload, list) else [payload], len(body))
    # Azure reads an EventGridSchema topic's body whatever its Content-Type says: a CloudEvents
    # body sent there is refused for its properties ("Received unexpected property 'source'").
    return _eventgrid_events(payload, len(body))


def _check_request_size(body: bytes) -> None:
    if len(body) > MAX_REQUEST_BYTES:
        raise _fail(
            413,
            f"The request body is {len(body)} bytes, which exceeds the maximum allowed size of "
            f"{MAX_REQUEST_BYTES} bytes.",
            "RequestTooLarge",
        )


def _load_nonempty(body: bytes) -> Any:
    if not body.strip():
        raise _fail(400, "The request body is empty; it must contain the events as JSON.", INVALID_JSON, "body")
    return _load(body)


def _looks_like_cloudevents(payload: Any) -> bool:
    first = payload[0] if isinstance(payload, list) and payload else payload
    return isinstance(first, dict) and "specversion" in first


# EventGridSchema ----------------------------------------------------------------------------------

_EG_PROPERTIES = ("id", "topic", "subject", "eventType", "eventTime", "data", "dataVersion", "metadataVersion")
_EG_BY_LOWER = {name.lower(): name for name in _EG_PROPERTIES}
_EG_NAME = _AZURE_SCHEMA_NAME[EVENTGRID_SCHEMA]


def _eventgrid_events(payload: Any, body_size: int) -> list[Event]:
    if not isinstance(payload, list):
        raise _fail(
            400,
            "Unexpected token when reading JSON. Expected: StartArray, actual: "
            f"{'StartObject' if isinstance(payload, dict) else type(payload).__name__}. Event Grid "
            "schema events must be sent in a JSON array, even a single event.",
            INVALID_JSON,
            "body",
        )
    if not payload:
        raise _fail(
            400,
            f"This resource is configured to receive event in '{_EG_NAME}' schema. The JSON received "
            "does not conform to the expected schema: the array contains no events.",
            INVALID_JSON,
            "body",
        )
    events = []
    for index, raw in enumerate(payload):
        _check_event_size(raw, index, body_size)
        events.append(_eventgrid_event(raw, index))
    return events


def _eventgrid_event(raw: Any, index: int) -> Event:
    def bad(message: str, field: str | None = None) -> SchemaError:
        target = f"[{index}].{field}" if field else f"[{index}]"
        return _fail(400, f"{message} {_describe(index, raw)}", INVALID_JSON, target)

    if not isinstance(raw, dict):
        raise bad(
            f"This resource is configured to receive event in '{_EG_NAME}' schema. The JSON received "
            "does not conform to the expected schema: each event must be a JSON object."
        )
    props: dict[str, Any] = {}
    for key, value in raw.items():
        name = _EG_BY_LOWER.get(key.lower())
        if name is None:
            raise bad(
                f"This resource is configured for '{_EG_NAME}' schema. Received unexpected property "
                f"'{key}' in JSON which does not conform to the expected schema.",
                key,
            )
        props[name] = value

    for name in ("id", "eventType", "subject"):
        value = props.get(name)
        if value is None:
            raise bad(f"This resource is configured for '{_EG_NAME}' schema and requires '{name}' property to be set.", name)
        if not isinstance(value, str) or not value:
            raise bad(f"The '{name}' property must be a non-empty string.", name)

    event_time = props.get("eventTime")
    if event_time is None:
        raise bad(f"This resource is configured for '{_EG_NAME}' schema and requires 'eventTime' property to be set.", "eventTime")
    if not is_valid_time(event_time, require_offset=False):
        raise bad(
            f"The 'eventTime' property value '{event_time}' is not a valid date-time; use an RFC 3339 "
            "timestamp such as 2017-06-26T18:41:00.9584103Z.",
            "eventTime",
        )

    data_version = props.get("dataVersion")
    if data_version is None:
        data_version = ""  # Azure: "If not included, will be stamped with an empty value"
    elif not isinstance(data_version, str):
        raise bad("The 'dataVersion' property must be a string.", "dataVersion")

    metadata_version = props.get("metadataVersion")
    if metadata_version is not None and metadata_version != "1":
        raise bad(
            f"The 'metadataVersion' property must be '1' when included; found '{metadata_version}'.",
            "metadataVersion",
        )

    # Deviation: Azure documents that an included `topic` "must match the Event Grid topic Azure
    # Resource Manager ID exactly". The topic's ARM path is not known here and the emulator is
    # reached under many names, so any string is accepted and `render` stamps the real path. (To a
    # domain, `topic` names the domain topic: `parse` checks it there.)
    topic = props.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise bad("The 'topic' property must be a string.", "topic")

    return Event(
        id=props["id"],
        type=props["eventType"],
        time=event_time,
        subject=props["subject"],
        data=props.get("data"),
        data_version=data_version,
        input_schema=EVENTGRID_SCHEMA,
        topic=topic,
    )


# CloudEvents --------------------------------------------------------------------------------------

_CE_NAME = _AZURE_SCHEMA_NAME[CLOUDEVENT_SCHEMA]
_CE_CORE = ("specversion", "id", "source", "type", "subject", "time", "data", "data_base64")
_CE_EXTENSION_NAME = re.compile(r"[a-z0-9]+")


def _cloudevents(payload: list[Any], body_size: int) -> list[Event]:
    if not payload:
        raise _fail(
            400,
            f"This resource is configured to receive event in '{_CE_NAME}' schema. The JSON received "
            "does not conform to the expected schema: the array contains no events.",
            INVALID_JSON,
            "body",
        )
    events = []
    for index, raw in enumerate(payload):
        _check_event_size(raw, index, body_size)
        events.append(_cloudevent(raw, index, lambda field, i=index: f"[{i}].{field}" if field else f"[{i}]"))
    return events


def _cloudevent(raw: Any, index: int, where: Callable[[str | None], str]) -> Event:
    def bad(message: str, field: str | None = None) -> SchemaError:
        return _fail(400, f"{message} {_describe(index, raw)}", INVALID_JSON, where(field))

    if not isinstance(raw, dict):
        raise bad(
            f"This resource is configured to receive event in '{_CE_NAME}' schema. The JSON received "
            "does not conform to the expected schema: each event must be a JSON object."
        )

    for name in ("specversion", "id", "source", "type"):
        value = raw.get(name)
        if value is None:
            raise bad(f"This resource is configured for '{_CE_NAME}' schema and requires '{name}' property to be set.", name)
        if not isinstance(value, str) or not value:
            raise bad(f"The '{name}' attribute must be a non-empty string.", name)
    if raw["specversion"] != "1.0":
        raise bad(f"The 'specversion' attribute must be '1.0'; found '{raw['specversion']}'.", "specversion")

    for name in ("subject", "datacontenttype", "dataschema"):
        value = raw.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise bad(f"The '{name}' attribute, when present, must be a non-empty string.", name)

    time = raw.get("time")
    if time is None:
        # CloudEvents makes `time` optional; the broker needs one for ordering and storage, so
        # the receive time is stamped (Azure does not document what it does here).
        time = _now_iso()
    elif not is_valid_time(time, require_offset=True):
        raise bad(
            f"The 'time' attribute value '{time}' is not a valid RFC 3339 timestamp "
            "(e.g. 2019-11-18T15:13:39.4589254Z).",
            "time",
        )

    data = raw.get("data")
    data_base64 = raw.get("data_base64")
    if data is not None and data_base64 is not None:
        raise bad("An event must not contain both 'data' and 'data_base64'.", "data_base64")
    if data_base64 is not None:
        if not isinstance(data_base64, str):
            raise bad("The 'data_base64' member must be a base64 string.", "data_base64")
        try:
            base64.b64decode(data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise bad("The 'data_base64' member is not valid base64.", "data_base64") from None

    extensions: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _CE_CORE or value is None:
            continue
        if not _CE_EXTENSION_NAME.fullmatch(name):
            raise bad(
                f"Attribute name '{name}' is invalid: CloudEvents attribute names consist of lower-case "
                "letters ('a' to 'z') and digits ('0' to '9') only.",
                name,
            )
        if isinstance(value, (dict, list)):
            raise bad(f"The value of attribute '{name}' must be a string, number or boolean.", name)
        extensions[name] = value

    return Event(
        id=raw["id"],
        type=raw["type"],
        time=time,
        subject=raw.get("subject"),
        source=raw["source"],
        data=data,
        data_base64=data_base64,
        extensions=extensions,
        input_schema=CLOUDEVENT_SCHEMA,
    )


def _binary_cloudevent(body: bytes, headers: dict[str, str], media_type: str) -> Event:
    """HTTP binary content mode: attributes in ce-* headers (percent-encoded), data in the body.

    Azure documents binary mode for namespace topics; the emulator accepts it on any CloudEvents
    topic. A JSON Content-Type makes the body `data`; any other body is kept as `data_base64`.
    """
    attributes: dict[str, Any] = {}
    header_size = 0
    for name, value in headers.items():
        if name.startswith("ce-") and len(name) > 3:
            attributes[name[3:]] = unquote(value)
            header_size += len(name) + len(value)
    content_type = headers.get("content-type")
    if content_type:
        attributes["datacontenttype"] = content_type
    for reserved in ("data", "data_base64"):
        attributes.pop(reserved, None)

    # Size: the body plus the attribute headers (base64 inflation is not charged to the publisher).
    size = len(body) + header_size
    if size > MAX_EVENT_BYTES:
        raise _fail(
            413,
            f"The event exceeds the maximum allowed event size of {MAX_EVENT_BYTES} bytes: it is "
            f"{size} bytes. {_describe(0, attributes)}",
            "EventTooLarge",
            "body",
        )
    if body:
        if _is_json_media_type(media_type):
            attributes["data"] = _load(body, "body")
        else:
            attributes["data_base64"] = base64.b64encode(body).decode("ascii")

    def where(field: str | None) -> str:
        if field in ("data", "data_base64"):
            return "body"
        if field == "datacontenttype":
            return "Content-Type"
        return f"ce-{field}" if field else "headers"

    return _cloudevent(attributes, 0, where)


# Custom input schema --------------------------------------------------------------------------------

# Event Grid fields a mapping may fill: those taking only a source field, and those that may also
# have a default value (Azure's JsonField and JsonFieldWithDefault).
_MAPPED_FIELDS = ("id", "topic", "eventTime")
_DEFAULTED_FIELDS = ("eventType", "subject", "dataVersion")


@dataclass(frozen=True, slots=True)
class InputMapping:
    """A topic's `inputSchemaMapping` (type Json), validated: for each Event Grid field, the
    publisher's field it comes from and the value used when the event has no such field."""

    source: dict[str, str]  # Event Grid field -> the publisher's field
    default: dict[str, str]  # Event Grid field -> default value

    def to_spec(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        for name in (*_MAPPED_FIELDS, *_DEFAULTED_FIELDS):
            entry = {}
            if name in self.source:
                entry["sourceField"] = self.source[name]
            if name in self.default:
                entry["defaultValue"] = self.default[name]
            if entry:
                props[name] = entry
        return {"inputSchemaMappingType": "Json", "properties": props}


def compile_mapping(spec: Any, target: str = "properties.inputSchemaMapping") -> InputMapping:
    """Validate an ARM `inputSchemaMapping`; raise SchemaError(400) naming the bad field."""
    def bad(message: str, where: str) -> SchemaError:
        return _fail(400, message, "InvalidInputSchemaMapping", where)

    if not isinstance(spec, dict):
        raise bad("A topic with inputSchema CustomEventSchema needs an inputSchemaMapping object.", target)
    kind = spec.get("inputSchemaMappingType")
    if kind != "Json":
        raise bad(f"inputSchemaMappingType must be 'Json'; found {kind!r}.", f"{target}.inputSchemaMappingType")
    props = spec.get("properties", {})
    if not isinstance(props, dict):
        raise bad("'properties' of the input schema mapping must be an object.", f"{target}.properties")
    source, default = {}, {}
    known = {n.lower(): n for n in (*_MAPPED_FIELDS, *_DEFAULTED_FIELDS)}
    for key, entry in props.items():
        name = known.get(key.lower())
        where = f"{target}.properties.{key}"
        if name is None:
            raise bad(f"'{key}' is not a field an input schema mapping can fill; it can fill {', '.join(known.values())}.", where)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise bad(f"The mapping of '{name}' must be an object.", where)
        allowed = {"sourceField", "defaultValue"} if name in _DEFAULTED_FIELDS else {"sourceField"}
        for field_name, value in entry.items():
            if field_name not in allowed:
                raise bad(f"The mapping of '{name}' takes only {' and '.join(sorted(allowed))}; found '{field_name}'.", f"{where}.{field_name}")
            if value is not None and (not isinstance(value, str) or (field_name == "sourceField" and not value)):
                raise bad(f"'{field_name}' of the mapping of '{name}' must be a non-empty string.", f"{where}.{field_name}")
        if entry.get("sourceField"):
            source[name] = entry["sourceField"]
        if entry.get("defaultValue") is not None:
            default[name] = entry["defaultValue"]
    for name in ("eventType", "subject"):  # Azure: "at least one of these two properties should be provided"
        if name not in source and name not in default:
            raise bad(f"The input schema mapping must give '{name}' a sourceField or a defaultValue.", f"{target}.properties.{name}")
    return InputMapping(source, default)


def _custom_events(payload: Any, body_size: int, mapping: InputMapping) -> list[Event]:
    if not isinstance(payload, list):
        raise _fail(
            400,
            "Unexpected token when reading JSON. Expected: StartArray, actual: "
            f"{'StartObject' if isinstance(payload, dict) else type(payload).__name__}. Events of a custom input schema "
            "must be sent in a JSON array, even a single event.",
            INVALID_JSON,
            "body",
        )
    if not payload:
        raise _fail(400, "The JSON received contains no events.", INVALID_JSON, "body")
    events = []
    for index, raw in enumerate(payload):
        _check_event_size(raw, index, body_size)
        events.append(_custom_event(raw, index, mapping))
    return events


def _custom_event(raw: Any, index: int, mapping: InputMapping) -> Event:
    def bad(message: str, field: str | None = None) -> SchemaError:
        return _fail(400, f"{message} {_describe(index, raw)}", INVALID_JSON, f"[{index}].{field}" if field else f"[{index}]")

    if not isinstance(raw, dict):
        raise bad("Each event of a custom input schema must be a JSON object.")

    def value(name: str, default: str | None = None) -> str | None:
        source = mapping.source.get(name)
        found = raw.get(source) if source else None
        if found is None:
            return mapping.default.get(name, default)
        if isinstance(found, bool) or not isinstance(found, (str, int, float)):
            raise bad(f"The field '{source}', mapped to '{name}', must be a string; found {type(found).__name__}.", source)
        return str(found)

    event_type, subject = value("eventType"), value("subject")
    for name, found in (("eventType", event_type), ("subject", subject)):
        if not found:
            source = mapping.source.get(name)
            raise bad(f"The event has no '{source}' field, which is mapped to '{name}', and the mapping gives no default value.", source)
    event_time = value("eventTime")
    if event_time is None:
        event_time = _now_iso()  # Azure stamps the time it received an event whose time is not mapped
    elif not is_valid_time(event_time, require_offset=False):
        field = mapping.source["eventTime"]
        raise bad(f"The field '{field}', mapped to 'eventTime', holds '{event_time}', which is not a valid date-time.", field)
    return Event(
        id=value("id") or str(uuid.uuid4()),  # an unmapped id is generated, as Azure does
        type=event_type,
        time=event_time,
        subject=subject,
        data=raw,  # Azure's mapped event carries the published one as its data
        data_version=value("dataVersion", ""),
        input_schema=CUSTOM_INPUT_SCHEMA,
        topic=value("topic"),
    )


# Domains ----------------------------------------------------------------------------------------

_DOMAIN_TOPIC_NAME = re.compile(r"[A-Za-z0-9_.-]{3,50}", re.ASCII)


def _domain_topic(event: Event, index: int) -> None:
    """An event published to a domain names its domain topic: `topic` (Event Grid and custom
    schemas) or `source` (CloudEvents), as the domain topic's name or its full resource id."""
    field = "source" if event.input_schema == CLOUDEVENT_SCHEMA else "topic"
    given = event.source if field == "source" else event.topic
    name = given
    if given and "/" in given:  # a full resource id: .../domains/{domain}/topics/{domain topic}
        parts = given.rstrip("/").split("/")
        name = parts[-1] if len(parts) >= 4 and parts[-2].lower() == "topics" and parts[-4].lower() == "domains" else None
    if not name or not _DOMAIN_TOPIC_NAME.fullmatch(name):
        # Azure's own words for it.
        raise _fail(400, f"Required property '{field}' needs to either be a full resource id or should be just the name of "
                    f"the domain topic. Found: {given or ''}. (event index {index}, id '{event.id}')", INVALID_JSON, f"[{index}].{field}")
    event.topic = name


# --------------------------------------------------------------------------------------------------
# Rendering


def filter_schema(input_schema: str) -> str:
    """The schema filters see an event in: its own, or the Event Grid fields a custom one maps to."""
    return EVENTGRID_SCHEMA if input_schema == CUSTOM_INPUT_SCHEMA else input_schema


def delivery_supported(input_schema: str, delivery_schema: str) -> bool:
    """Whether Azure can deliver events of `input_schema` in `delivery_schema`."""
    return (input_schema, delivery_schema) in SUPPORTED_DELIVERY


def render(event: Event, schema: str, topic_path: str) -> dict[str, Any]:
    """The event as delivered in `schema`; `topic_path` is the topic's ARM resource path.

    EventGridSchema: `topic` is always the topic path (Azure stamps it), `metadataVersion` "1".
    EventGridSchema -> CloudEvents: source = topic path, type = eventType, time = eventTime,
    subject = subject, data = data, and dataschema = "#" + dataVersion (Azure's converted sample
    shows ``"dataschema": "#"`` for an event whose dataVersion is empty).
    CloudEvents -> EventGridSchema is not offered by Azure (see `delivery_supported`); the mapping
    here is best effort: type -> eventType, time -> eventTime, subject (or "") -> subject,
    dataschema "#v" -> dataVersion "v", data_base64 delivered as the base64 string; source and
    extension attributes are dropped.
    """
    if schema == CUSTOM_SCHEMA:
        if event.input_schema != CUSTOM_INPUT_SCHEMA:
            raise ValueError("only events of a custom input schema can be delivered in CustomInputSchema")
        return event.data
    if schema == EVENTGRID_SCHEMA:
        if event.input_schema != CLOUDEVENT_SCHEMA:
            data = event.data
            data_version = event.data_version or ""
        else:
            data = event.data if event.data_base64 is None else event.data_base64
            dataschema = event.extensions.get("dataschema")
            data_version = dataschema[1:] if isinstance(dataschema, str) and dataschema.startswith("#") else ""
        # Key order of Azure's published samples.
        return {
            "topic": topic_path,
            "subject": event.subject or "",
            "eventType": event.type,
            "eventTime": event.time,
            "id": event.id,
            "data": data,
            "dataVersion": data_version,
            "metadataVersion": "1",
        }

    if schema == CLOUDEVENT_SCHEMA:
        out: dict[str, Any] = {"specversion": "1.0", "id": event.id}
        if event.input_schema != CLOUDEVENT_SCHEMA:
            out["source"] = topic_path
            out["type"] = event.type
            if event.subject:
                out["subject"] = event.subject
            out["time"] = event.time
            if event.data is not None:
                out["data"] = event.data
            out["dataschema"] = "#" + (event.data_version or "")
            return out
        out["source"] = event.source
        out["type"] = event.type
        if event.subject is not None:
            out["subject"] = event.subject
        out["time"] = event.time
        if event.data_base64 is not None:
            out["data_base64"] = event.data_base64
        elif event.data is not None:
            out["data"] = event.data
        for name, value in event.extensions.items():
            out.setdefault(name, value)
        return out

    raise ValueError(f"unknown delivery schema {schema!r}")


def content_type(schema: str, batch: bool) -> str:
    """The Content-Type of a delivery request.

    Azure documents "application/json; charset=utf-8" for the Event Grid schema (the body is always
    an array) and "application/cloudevents+json; charset=utf-8" for a CloudEvent; a batch of
    CloudEvents uses the CloudEvents JSON batch format.
    """
    if schema in (EVENTGRID_SCHEMA, CUSTOM_SCHEMA):
        return "application/json; charset=utf-8"
    if schema == CLOUDEVENT_SCHEMA:
        return f"{CLOUDEVENTS_BATCH_CONTENT_TYPE if batch else CLOUDEVENTS_CONTENT_TYPE}; charset=utf-8"
    raise ValueError(f"unknown delivery schema {schema!r}")
