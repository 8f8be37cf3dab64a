"""Event subscriptions: the Azure ARM-shaped spec, validated into what the dispatcher needs.

A subscription body looks like Azure's (WebHook and StorageQueue destinations are emulated):

    {"properties": {
        "destination": {"endpointType": "WebHook", "properties": {
            "endpointUrl": "http://order_processor:5001/events",
            "maxEventsPerBatch": 1, "preferredBatchSizeInKilobytes": 64,
            "deliveryAttributeMappings": [{"name": "X-Tenant", "type": "Static", "properties": {"value": "t1"}}],
            "skipValidation": false}},              # emulator-only: opt out of the handshake
        "filter": {"includedEventTypes": ["NewOrder"], "advancedFilters": [...]},
        "eventDeliverySchema": "EventGridSchema",
        "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
        "deadLetterDestination": {"endpointType": "StorageBlob", "properties": {"blobContainerName": "deadletter"}}}}

or, for a Storage queue (needs BROKER_STORAGE_CONNECTION_STRING; the account of `resourceId` is
the one of the connection string):

        "destination": {"endpointType": "StorageQueue", "properties": {
            "resourceId": "/subscriptions/.../providers/Microsoft.Storage/storageAccounts/devstoreaccount1",
            "queueName": "orders", "queueMessageTimeToLiveInSeconds": 300}}   # -1: forever
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import headers
from .errors import ApiError, bad_request
from .events import CLOUDEVENT_SCHEMA, CUSTOM_INPUT_SCHEMA, CUSTOM_SCHEMA, EVENTGRID_SCHEMA, SCHEMAS
from .filters import EventFilter, FilterError, compile_filter
from .resources import SUBSCRIPTION, Resource, check_name
from .retry import MAX_ATTEMPTS_RANGE, TTL_MINUTES_RANGE, RetryPolicy
from .schemas import DEFAULT_DELIVERY

MAX_EVENTS_PER_BATCH = (1, 5000)
PREFERRED_BATCH_KB = (1, 1024)
MAX_DELIVERY_ATTRIBUTES = 10

STATE_AWAITING = "AwaitingValidation"
STATE_MANUAL = "AwaitingManualAction"
STATE_SUCCEEDED = "Succeeded"
STATE_FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class DeliveryAttribute:
    name: str
    static: str | None = None
    source_field: str | None = None  # dotted path into the event, e.g. "data.orderId"


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """A StorageQueue destination."""

    queue_name: str
    message_ttl: int | None  # seconds, -1 forever; None: the storage service's default (7 days)


@dataclass(slots=True, eq=False)
class Subscription:
    scope: Resource  # the topic, domain, domain topic or namespace topic it belongs to
    name: str
    endpoint: str
    delivery_schema: str | None  # None: same as the event's input schema
    max_events_per_batch: int
    preferred_batch_bytes: int
    attributes: tuple[DeliveryAttribute, ...]
    retry: RetryPolicy
    dead_letter: bool
    skip_validation: bool
    filter: EventFilter
    spec: dict[str, Any]
    state: str = STATE_AWAITING
    state_detail: str | None = None
    validation_code: str | None = None
    mode: str = "push"  # push: the broker delivers it; queue: a namespace queue the application pulls from
    lock_seconds: int = 60  # a queue's receiveLockDurationInSeconds
    queue: QueueTarget | None = None  # a StorageQueue destination; None: a webhook (or a namespace queue)
    dead_letter_container: str | None = None  # a StorageBlob dead-letter destination's blobContainerName
    id: int = 0  # its resource id, once saved (deliveries refer to it)
    created_at: float = 0.0
    deleted: bool = False  # set before its deletion is written: no publish routes to it from then on
    # The headers of its requests that carry nothing from the event, by what they depend on (see
    # Dispatcher._headers): a PUT makes a new Subscription, and with it a new cache.
    headers_kept: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    @property
    def active(self) -> bool:
        return self.state == STATE_SUCCEEDED

    @property
    def pushed(self) -> bool:
        """The dispatcher delivers its events (a queue subscription's wait to be received)."""
        return self.mode == "push" and self.state == STATE_SUCCEEDED

    @property
    def routable(self) -> bool:
        """Events are queued for a subscription still waiting for its handshake, not for a failed
        or deleted one."""
        return self.state != STATE_FAILED and not self.deleted

    @property
    def label(self) -> str:
        """`topic/subscription` (`domain/topic/subscription` under a domain topic), for logs and metrics."""
        return f"{self.scope.label}/{self.name}"

    def schema_for(self, input_schema: str) -> str:
        """The schema it delivers an event of `input_schema` in."""
        return self.delivery_schema or DEFAULT_DELIVERY.get(input_schema, input_schema)

    @property
    def path(self) -> str:
        """Its ARM id: an extension resource of its scope, or a child of a namespace topic."""
        if self.scope.kind.name == "namespacetopic":
            return f"{self.scope.path}/eventSubscriptions/{self.name}"
        return f"{self.scope.path}/providers/Microsoft.EventGrid/eventSubscriptions/{self.name}"

    @property
    def short_path(self) -> str:
        """Its path on the emulator's short routes (`/topics/t/eventSubscriptions/s`)."""
        return f"{self.scope.short_path}/eventSubscriptions/{self.name}"

    def to_resource(self) -> dict[str, Any]:
        """The ARM resource Azure returns for GET/PUT, with the emulator's state and the delivery
        schema actually used (the topic's input schema when none was given; Event Grid for Auto)."""
        if self.scope.kind.name == "namespacetopic":
            return {"id": self.path, "name": self.name, "type": "Microsoft.EventGrid/namespaces/topics/eventSubscriptions",
                    "properties": {**self.spec, "provisioningState": self.state}}
        input_schema = self.scope.input_schema
        props = dict(self.spec)
        props.setdefault("eventDeliverySchema", DEFAULT_DELIVERY.get(input_schema, input_schema if input_schema in SCHEMAS else EVENTGRID_SCHEMA))
        props["topic"] = self.scope.path
        props["provisioningState"] = self.state
        if self.state_detail:
            props["provisioningStateDetail"] = self.state_detail
        return {
            "id": self.path,
            "name": self.name,
            "type": "Microsoft.EventGrid/eventSubscriptions",
            "properties": props,
        }


def parse(scope: Resource, name: str, body: Any) -> Subscription:
    """Validate an ARM-shaped body (or its `properties`); raise ApiError(400) naming the bad field."""
    check_name(SUBSCRIPTION, name)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", "InvalidRequestBody")
    props = body.get("properties", body)
    if not isinstance(props, dict):
        raise bad_request("'properties' must be an object.", "InvalidRequestBody", "properties")
    if scope.kind.name == "namespacetopic":
        return _namespace_subscription(scope, name, props)

    destination = _obj(props.get("destination"), "properties.destination", required=True)
    queue = None
    if destination.get("endpointType") == "StorageQueue":
        hook, queue = _storage_queue(destination, "properties.destination")
    else:
        hook = _webhook(destination, "properties.destination")

    schema = props.get("eventDeliverySchema")
    allowed = (*SCHEMAS, CUSTOM_SCHEMA) if scope.input_schema == CUSTOM_INPUT_SCHEMA else SCHEMAS
    if schema is not None and schema not in allowed:
        raise bad_request(f"eventDeliverySchema must be one of {', '.join(allowed)}.", "InvalidDeliverySchema", "properties.eventDeliverySchema")

    retry_spec = _obj(props.get("retryPolicy"), "properties.retryPolicy")
    retry = RetryPolicy(
        _int(retry_spec.get("maxDeliveryAttempts", 30), MAX_ATTEMPTS_RANGE, "properties.retryPolicy.maxDeliveryAttempts"),
        _int(retry_spec.get("eventTimeToLiveInMinutes", 1440), TTL_MINUTES_RANGE, "properties.retryPolicy.eventTimeToLiveInMinutes"),
    )
    dead_letter = props.get("deadLetterDestination") is not None
    container = _dead_letter_container(props.get("deadLetterDestination"), "properties.deadLetterDestination") if dead_letter else None
    compiled = _filter(props.get("filter"), "properties.filter")

    spec = {
        "destination": {"endpointType": "StorageQueue" if queue else "WebHook", "properties": hook.spec},
        "filter": props.get("filter") or {},
        "retryPolicy": {"maxDeliveryAttempts": retry.max_delivery_attempts, "eventTimeToLiveInMinutes": retry.event_ttl_minutes},
    }
    if schema is not None:  # absent means "as the topic's input schema", also after a restart
        spec["eventDeliverySchema"] = schema
    if dead_letter:
        spec["deadLetterDestination"] = props["deadLetterDestination"]
    if "labels" in props:
        spec["labels"] = props["labels"]
    return Subscription(
        scope=scope, name=name, endpoint=hook.endpoint, delivery_schema=schema, max_events_per_batch=hook.batch,
        preferred_batch_bytes=hook.batch_bytes, attributes=hook.attributes, retry=retry, dead_letter=dead_letter,
        skip_validation=hook.skip_validation, filter=compiled, spec=spec, queue=queue, dead_letter_container=container,
    )


@dataclass(frozen=True, slots=True)
class _Hook:
    endpoint: str
    spec: dict[str, Any]
    batch: int
    batch_bytes: int
    attributes: tuple[DeliveryAttribute, ...]
    skip_validation: bool


# Azure Storage's names for queues and blob containers: 3-63 lower-case letters, digits and single
# hyphens, starting and ending with a letter or digit.
_STORAGE_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", re.ASCII)
_STORAGE_ACCOUNT_ID = re.compile(r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[^/]+", re.ASCII | re.I)


def _storage_name(value: Any, what: str, target: str) -> str:
    if not isinstance(value, str) or not _STORAGE_NAME.fullmatch(value):
        raise bad_request(f"'{target}' must be a {what} name: 3-63 lower-case letters, digits and single hyphens, "
                          "starting and ending with a letter or digit.", "InvalidRequestBody", target)
    return value


def _storage_queue(destination: dict, target: str) -> tuple[_Hook, QueueTarget]:
    """A StorageQueue destination: one event per message, no batching, no handshake."""
    dest = _obj(destination.get("properties"), f"{target}.properties", required=True)
    resource = dest.get("resourceId")
    if not isinstance(resource, str) or not _STORAGE_ACCOUNT_ID.fullmatch(resource):
        raise bad_request(f"'{target}.properties.resourceId' must be a storage account's resource id "
                          "(/subscriptions/{id}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}).",
                          "InvalidRequestBody", f"{target}.properties.resourceId")
    queue = _storage_name(dest.get("queueName"), "queue", f"{target}.properties.queueName")
    ttl = dest.get("queueMessageTimeToLiveInSeconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or (ttl <= 0 and ttl != -1)):
        raise bad_request(f"'{target}.properties.queueMessageTimeToLiveInSeconds' must be a positive number of seconds, "
                          "or -1 for messages that never expire.", "InvalidRequestBody", f"{target}.properties.queueMessageTimeToLiveInSeconds")
    return _Hook(f"storagequeue://{queue}", dest, 1, 65536, (), True), QueueTarget(queue, ttl)


def _dead_letter_container(spec: Any, target: str) -> str | None:
    """A StorageBlob dead-letter destination's container (None: none named; the files under the
    data dir take the dead letters)."""
    spec = _obj(spec, target)
    kind = spec.get("endpointType", "StorageBlob")
    if kind != "StorageBlob":
        raise bad_request(f"'{target}.endpointType' must be StorageBlob.", "InvalidRequestBody", f"{target}.endpointType")
    name = _obj(spec.get("properties"), f"{target}.properties").get("blobContainerName")
    return None if name is None else _storage_name(name, "blob container", f"{target}.properties.blobContainerName")


def _webhook(destination: dict, target: str) -> _Hook:
    """A WebHook destination's settings (`target` names where it sits in the body)."""
    endpoint_type = destination.get("endpointType", "WebHook")
    if endpoint_type != "WebHook":
        raise bad_request(f"endpointType '{endpoint_type}' is not supported by the emulator; use WebHook or StorageQueue.",
                          "InvalidEndpointType", f"{target}.endpointType")
    dest = _obj(destination.get("properties"), f"{target}.properties", required=True)
    endpoint = validate_endpoint(dest.get("endpointUrl"), f"{target}.properties.endpointUrl")
    batch = _int(dest.get("maxEventsPerBatch", 1), MAX_EVENTS_PER_BATCH, f"{target}.properties.maxEventsPerBatch")
    batch_kb = _int(dest.get("preferredBatchSizeInKilobytes", 64), PREFERRED_BATCH_KB, f"{target}.properties.preferredBatchSizeInKilobytes")
    attributes = _attributes(dest.get("deliveryAttributeMappings") or [])
    skip = dest.get("skipValidation", False)
    if not isinstance(skip, bool):
        raise bad_request("skipValidation must be a boolean.", "InvalidRequestBody", f"{target}.properties.skipValidation")
    return _Hook(endpoint, dest, batch, batch_kb * 1024, attributes, skip)


def _filter(spec: Any, target: str) -> EventFilter:
    try:
        return compile_filter(spec)
    except FilterError as exc:
        raise ApiError(400, exc.code, exc.message, [{"code": exc.code, "message": exc.message, "target": target}]) from None


# -- namespace topic subscriptions ------------------------------------------------------------------

LOCK_SECONDS_RANGE = (60, 300)  # receiveLockDurationInSeconds
MAX_DELIVERY_COUNT_RANGE = (1, 10)
_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.ASCII)


def duration_seconds(value: Any) -> float | None:
    """An ISO 8601 duration without years or months ("P1D", "PT1H30M") in seconds, else None."""
    if not isinstance(value, str) or value in ("P", "PT") or value.endswith("T"):
        return None
    m = _DURATION.fullmatch(value)
    if m is None:
        return None
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in m.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def _namespace_subscription(scope: Resource, name: str, props: dict) -> Subscription:
    """A namespace topic's subscription: `deliveryConfiguration` Queue (the application pulls) or
    Push (a webhook), always in CloudEvents, filtered by `filtersConfiguration`."""
    config = _obj(props.get("deliveryConfiguration"), "properties.deliveryConfiguration")
    mode = config.get("deliveryMode", "Queue")
    if mode not in ("Queue", "Push"):
        raise bad_request("deliveryMode must be Queue or Push.", "InvalidRequestBody", "properties.deliveryConfiguration.deliveryMode")
    where = f"properties.deliveryConfiguration.{mode.lower()}"
    settings = _obj(config.get(mode.lower()), where)
    schema = props.get("eventDeliverySchema", CLOUDEVENT_SCHEMA)
    if schema != CLOUDEVENT_SCHEMA:
        raise bad_request("Namespace topic subscriptions deliver CloudEventSchemaV1_0 only.", "InvalidDeliverySchema", "properties.eventDeliverySchema")
    retention = scope.properties.get("eventRetentionInDays", 1) * 86400
    ttl = settings.get("eventTimeToLive")
    ttl_seconds = retention if ttl is None else duration_seconds(ttl)
    if ttl_seconds is None or not 60 <= ttl_seconds <= retention:
        raise bad_request(f"{where}.eventTimeToLive must be an ISO 8601 duration from PT1M to the topic's retention "
                          f"({retention // 86400} day(s)).", "InvalidRequestBody", f"{where}.eventTimeToLive")
    max_count = _int(settings.get("maxDeliveryCount", 10), MAX_DELIVERY_COUNT_RANGE, f"{where}.maxDeliveryCount")
    dead = settings.get("deadLetterDestinationWithResourceIdentity")
    container = None
    if dead is not None:
        dead_where = f"{where}.deadLetterDestinationWithResourceIdentity"
        inner = _obj(dead, dead_where).get("deadLetterDestination")
        container = _dead_letter_container(inner, f"{dead_where}.deadLetterDestination") if inner is not None else None
    filters = _obj(props.get("filtersConfiguration"), "properties.filtersConfiguration")
    compiled = _filter({"includedEventTypes": filters.get("includedEventTypes"), "advancedFilters": filters.get("filters") or []},
                       "properties.filtersConfiguration")
    spec = {"deliveryConfiguration": {"deliveryMode": mode, mode.lower(): settings}, "eventDeliverySchema": CLOUDEVENT_SCHEMA,
            "filtersConfiguration": filters}
    retry = RetryPolicy(max_count, ttl_seconds / 60)
    if mode == "Queue":
        lock = _int(settings.get("receiveLockDurationInSeconds", 60), LOCK_SECONDS_RANGE, f"{where}.receiveLockDurationInSeconds")
        return Subscription(
            scope=scope, name=name, endpoint="", delivery_schema=CLOUDEVENT_SCHEMA, max_events_per_batch=1, preferred_batch_bytes=65536,
            attributes=(), retry=retry, dead_letter=dead is not None, skip_validation=True, filter=compiled, spec=spec,
            mode="queue", lock_seconds=lock, dead_letter_container=container,
        )
    hook = _webhook(_obj(settings.get("destination"), f"{where}.destination", required=True), f"{where}.destination")
    return Subscription(
        scope=scope, name=name, endpoint=hook.endpoint, delivery_schema=CLOUDEVENT_SCHEMA, max_events_per_batch=hook.batch,
        preferred_batch_bytes=hook.batch_bytes, attributes=hook.attributes, retry=retry, dead_letter=dead is not None,
        skip_validation=hook.skip_validation, filter=compiled, spec=spec, dead_letter_container=container,
    )


def validate_endpoint(url: Any, target: str) -> str:
    """An absolute http(s) URL; its query string is kept exactly (Azure Functions' local trigger needs it)."""
    if not isinstance(url, str) or not url:
        raise bad_request("The endpoint must be an http or https URL.", "InvalidEndpoint", target)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad_request(f"The endpoint '{url}' is not an absolute http or https URL.", "InvalidEndpoint", target)
    return url


def _obj(value: Any, target: str, required: bool = False) -> dict:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{target}' must be an object.", "InvalidRequestBody", target)
    return value


def _int(value: Any, bounds: tuple[int, int], target: str) -> int:
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"'{target}' must be an integer from {low} to {high}.", "InvalidRequestBody", target)
    return value


def _attributes(mappings: Any) -> tuple[DeliveryAttribute, ...]:
    target = "properties.destination.properties.deliveryAttributeMappings"
    if not isinstance(mappings, list) or len(mappings) > MAX_DELIVERY_ATTRIBUTES:
        raise bad_request(f"'{target}' must be a list of at most {MAX_DELIVERY_ATTRIBUTES} mappings.", "InvalidRequestBody", target)
    out = []
    seen: set[str] = set()
    for i, m in enumerate(mappings):
        where = f"{target}[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"].strip():
            raise bad_request(f"'{where}' needs a non-empty name.", "InvalidRequestBody", where)
        problem = headers.name_problem(m["name"])
        if problem:
            raise bad_request(f"'{where}.name' ({m['name']!r}) {problem}.", "InvalidDeliveryAttribute", f"{where}.name")
        if m["name"].lower() in seen:
            raise bad_request(f"'{where}.name' ({m['name']!r}) is mapped twice.", "InvalidDeliveryAttribute", f"{where}.name")
        seen.add(m["name"].lower())
        props = m.get("properties") or {}
        if m.get("type") == "Static" and isinstance(props.get("value"), str):
            problem = headers.value_problem(props["value"])
            if problem:
                raise bad_request(f"'{where}.properties.value' {problem}.", "InvalidDeliveryAttribute", f"{where}.properties.value")
            out.append(DeliveryAttribute(m["name"], static=props["value"]))
        elif m.get("type") == "Dynamic" and isinstance(props.get("sourceField"), str) and props["sourceField"]:
            out.append(DeliveryAttribute(m["name"], source_field=props["sourceField"]))
        else:
            raise bad_request(f"'{where}' must be Static with properties.value or Dynamic with properties.sourceField.", "InvalidRequestBody", where)
    return tuple(out)
