"""Unit tests for broker.schemas: parsing publish requests and rendering deliveries."""

from __future__ import annotations

import base64
import copy
from datetime import datetime, timezone

import orjson
import pytest

from broker import schemas
from broker.events import CLOUDEVENT_SCHEMA, EVENTGRID_SCHEMA, Event
from broker.schemas import SchemaError, content_type, delivery_supported, dumps, parse, render

TOPIC = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/eventgrid-emulator/providers/Microsoft.EventGrid/topics/orders"

JSON = {"Content-Type": "application/json; charset=utf-8"}
CE_SINGLE = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json; charset=utf-8"}


def eg_event(**overrides):
    event = {
        "id": "e-1",
        "subject": "orders/1",
        "eventType": "Orders.Created",
        "eventTime": "2024-05-01T10:00:00.1234567Z",
        "data": {"orderId": 1},
        "dataVersion": "1.0",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not _DROP}


def ce_event(**overrides):
    event = {
        "specversion": "1.0",
        "id": "c-1",
        "source": "/apps/shop",
        "type": "Orders.Created",
        "time": "2024-05-01T10:00:00Z",
        "data": {"orderId": 1},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not _DROP}


_DROP = object()


def body(obj) -> bytes:
    return orjson.dumps(obj)


@pytest.fixture
def sdk_request():
    """Build a publish request with the real azure-eventgrid client and capture it before it is sent."""

    def capture(events, credential=None, endpoint="http://localhost:8080/api/events"):
        from azure.core.credentials import AzureKeyCredential
        from azure.eventgrid import EventGridPublisherClient

        captured = {}

        class Captured(Exception):
            pass

        def hook(pipeline_request):
            request = pipeline_request.http_request
            captured.update(headers=dict(request.headers), url=request.url, body=request.body)
            raise Captured

        client = EventGridPublisherClient(endpoint, credential or AzureKeyCredential("a2V5"))
        with pytest.raises(Captured):
            client.send(events, raw_request_hook=hook)
        raw = captured["body"]
        return captured["headers"], captured["url"], raw.encode() if isinstance(raw, str) else raw

    return capture


def schema_error(raw: bytes, headers, schema) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        parse(raw, headers, schema)
    return info.value


# ------------------------------------------------------------------------------------------------
# EventGridSchema: valid input


def test_eventgrid_batch_yields_one_event_per_item_in_order():
    events = parse(body([eg_event(id="a"), eg_event(id="b", subject="orders/2"), eg_event(id="c")]), JSON, EVENTGRID_SCHEMA)

    assert [e.id for e in events] == ["a", "b", "c"]
    assert events[1] == Event(
        id="b",
        type="Orders.Created",
        time="2024-05-01T10:00:00.1234567Z",
        subject="orders/2",
        data={"orderId": 1},
        data_version="1.0",
        input_schema=EVENTGRID_SCHEMA,
    )


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"dataVersion": _DROP}, "data_version", ""),  # Azure stamps an empty dataVersion
        ({"dataVersion": None}, "data_version", ""),
        ({"metadataVersion": "1"}, "data_version", "1.0"),
        ({"data": _DROP}, "data", None),
        ({"data": [1, "two", None]}, "data", [1, "two", None]),
        ({"data": "plain"}, "data", "plain"),
        ({"topic": "/anything/the/publisher/says"}, "id", "e-1"),
        ({"eventTime": "2017-08-10T21:03:07+00:00"}, "time", "2017-08-10T21:03:07+00:00"),
        ({"eventTime": "2017-08-10T21:03:07-05:30"}, "time", "2017-08-10T21:03:07-05:30"),
        ({"eventTime": "2017-08-10T21:03:07"}, "time", "2017-08-10T21:03:07"),
        ({"eventTime": "2016-12-31T23:59:60Z"}, "time", "2016-12-31T23:59:60Z"),
    ],
)
def test_eventgrid_accepts_documented_optional_fields_and_time_forms(overrides, field, expected):
    [event] = parse(body([eg_event(**overrides)]), JSON, EVENTGRID_SCHEMA)
    assert getattr(event, field) == expected


def test_eventgrid_property_names_are_matched_case_insensitively():
    raw = {"Id": "x", "Subject": "s", "EventType": "T", "EventTime": "2024-01-01T00:00:00Z", "DATA": 5}
    [event] = parse(body([raw]), JSON, EVENTGRID_SCHEMA)
    assert (event.id, event.subject, event.type, event.data) == ("x", "s", "T", 5)


def test_eventgrid_ignores_content_type_like_azure():
    # Azure reads an EventGridSchema topic's body whatever the Content-Type is.
    [event] = parse(body([eg_event()]), {"Content-Type": "text/plain"}, EVENTGRID_SCHEMA)
    assert event.id == "e-1"


def test_eventgrid_accepts_a_request_built_by_the_azure_sdk(sdk_request):
    from azure.eventgrid import EventGridEvent

    headers, url, raw = sdk_request([EventGridEvent(subject="s/1", event_type="T.Created", data={"k": [1]}, data_version="2.0")])

    [event] = parse(raw, headers, EVENTGRID_SCHEMA)
    assert (event.subject, event.type, event.data, event.data_version) == ("s/1", "T.Created", {"k": [1]}, "2.0")


# ------------------------------------------------------------------------------------------------
# EventGridSchema: invalid input


@pytest.mark.parametrize(
    ("overrides", "target", "fragment"),
    [
        ({"id": _DROP}, "id", "requires 'id' property"),
        ({"subject": _DROP}, "subject", "requires 'subject' property"),
        ({"eventType": _DROP}, "eventType", "requires 'eventType' property"),
        ({"eventTime": _DROP}, "eventTime", "requires 'eventTime' property"),
        ({"id": None}, "id", "requires 'id' property"),
        ({"id": ""}, "id", "non-empty string"),
        ({"id": 7}, "id", "non-empty string"),
        ({"subject": ""}, "subject", "non-empty string"),
        ({"eventType": ["T"]}, "eventType", "non-empty string"),
        ({"eventTime": "yesterday"}, "eventTime", "not a valid date-time"),
        ({"eventTime": "2024-13-01T00:00:00Z"}, "eventTime", "not a valid date-time"),
        ({"eventTime": "2024-02-30T00:00:00Z"}, "eventTime", "not a valid date-time"),
        ({"eventTime": "2024-05-01T25:00:00Z"}, "eventTime", "not a valid date-time"),
        ({"eventTime": "2024-05-01"}, "eventTime", "not a valid date-time"),
        ({"eventTime": "2024-05-01T10:00:00+25:00"}, "eventTime", "not a valid date-time"),
        ({"eventTime": 1714557600}, "eventTime", "not a valid date-time"),
        ({"eventTime": "\uff12\uff10\uff12\uff14-05-01T10:00:00Z"}, "eventTime", "not a valid date-time"),  # non-ASCII digits
        ({"metadataVersion": "2"}, "metadataVersion", "must be '1'"),
        ({"metadataVersion": 1}, "metadataVersion", "must be '1'"),
        ({"dataVersion": 1}, "dataVersion", "must be a string"),
        ({"topic": 42}, "topic", "must be a string"),
        ({"source": "/apps/shop"}, "source", "Received unexpected property 'source'"),
    ],
)
def test_eventgrid_rejects_invalid_event_naming_field(overrides, target, fragment):
    err = schema_error(body([eg_event(**overrides)]), JSON, EVENTGRID_SCHEMA)

    assert err.status == 400
    assert err.code == "BadRequest"
    assert err.details[0]["code"] == "InputJsonInvalid"
    assert err.details[0]["target"] == f"[0].{target}"
    assert fragment in err.message


def test_eventgrid_rejects_whole_batch_and_names_first_bad_event():
    batch = [eg_event(id="a"), eg_event(id="b"), eg_event(id="c", eventTime="not-a-time"), eg_event(id="d", eventType=_DROP)]

    err = schema_error(body(batch), JSON, EVENTGRID_SCHEMA)

    assert err.details[0]["target"] == "[2].eventTime"
    assert "event index 2, id 'c'" in err.message
    assert err.to_body() == {
        "error": {"code": "BadRequest", "message": err.message, "details": [{"code": "InputJsonInvalid", "message": err.message, "target": "[2].eventTime"}]}
    }


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (eg_event(), "Expected: StartArray, actual: StartObject"),  # Azure wants an array even for one event
        ([], "contains no events"),
        (["not an object"], "each event must be a JSON object"),
        ("text", "Expected: StartArray"),
    ],
)
def test_eventgrid_rejects_body_that_is_not_an_array_of_objects(payload, fragment):
    err = schema_error(body(payload), JSON, EVENTGRID_SCHEMA)
    assert err.status == 400
    assert fragment in err.message


def test_eventgrid_topic_refuses_a_cloudevents_batch_by_its_properties():
    err = schema_error(body([ce_event()]), CE_BATCH, EVENTGRID_SCHEMA)
    assert err.status == 400
    assert "Received unexpected property 'specversion'" in err.message


# ------------------------------------------------------------------------------------------------
# Malformed JSON


@pytest.mark.parametrize(
    "raw",
    [b"[", b"{not json}", b"[1] trailing", b"\xff\xfe[]", b'[{"id": "\xff"}]', b"", b"   \n", b"[NaN]"],
    ids=["truncated", "garbage", "trailing", "utf16-bom", "non-utf8", "empty", "blank", "nan"],
)
@pytest.mark.parametrize(("headers", "schema"), [(JSON, EVENTGRID_SCHEMA), (CE_BATCH, CLOUDEVENT_SCHEMA), (JSON, "Auto")])
def test_malformed_or_empty_body_is_400(raw, headers, schema):
    err = schema_error(raw, headers, schema)
    assert err.status == 400
    assert err.details[0]["code"] == "InputJsonInvalid"
    assert err.details[0]["target"] == "body"


def test_utf8_byte_order_mark_is_tolerated():
    [event] = parse(b"\xef\xbb\xbf" + body([eg_event()]), JSON, EVENTGRID_SCHEMA)
    assert event.id == "e-1"


def test_unknown_input_schema_is_a_programming_error():
    with pytest.raises(ValueError):
        parse(body([eg_event()]), JSON, "CustomEventSchema")


# ------------------------------------------------------------------------------------------------
# CloudEvents: structured, batch, binary


def test_cloudevents_structured_single_event_keeps_extensions():
    raw = ce_event(subject="orders/1", datacontenttype="application/json", dataschema="https://schemas/x", tenant="t1", priority=3, urgent=True)

    [event] = parse(body(raw), CE_SINGLE, CLOUDEVENT_SCHEMA)

    assert event == Event(
        id="c-1",
        type="Orders.Created",
        time="2024-05-01T10:00:00Z",
        subject="orders/1",
        source="/apps/shop",
        data={"orderId": 1},
        extensions={"datacontenttype": "application/json", "dataschema": "https://schemas/x", "tenant": "t1", "priority": 3, "urgent": True},
        input_schema=CLOUDEVENT_SCHEMA,
    )


def test_cloudevents_batch_yields_all_events_and_keeps_data_base64():
    raw = [ce_event(id="1"), ce_event(id="2", data=_DROP, data_base64="AAEC/w==")]

    events = parse(body(raw), CE_BATCH, CLOUDEVENT_SCHEMA)

    assert [e.id for e in events] == ["1", "2"]
    assert events[1].data is None
    assert events[1].data_base64 == "AAEC/w=="


def test_cloudevents_without_time_get_the_receive_time():
    before = datetime.now(timezone.utc)
    [event] = parse(body(ce_event(time=_DROP)), CE_SINGLE, CLOUDEVENT_SCHEMA)
    after = datetime.now(timezone.utc)

    stamped = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    assert before <= stamped <= after
    assert event.time.endswith("Z")


def test_cloudevents_null_optional_attributes_count_as_absent():
    [event] = parse(body(ce_event(subject=None, tenant=None)), CE_SINGLE, CLOUDEVENT_SCHEMA)
    assert event.subject is None
    assert event.extensions == {}


def test_cloudevents_accepts_a_request_built_by_the_azure_sdk(sdk_request):
    from azure.core.messaging import CloudEvent

    headers, url, raw = sdk_request([CloudEvent(source="/sdk", type="T", data=b"\x00\x01", extensions={"tenant": "t1"}), CloudEvent(source="/sdk", type="U", data={"a": 1})])

    events = parse(raw, headers, CLOUDEVENT_SCHEMA)

    assert [e.type for e in events] == ["T", "U"]
    assert base64.b64decode(events[0].data_base64) == b"\x00\x01"
    assert events[0].extensions == {"tenant": "t1"}
    assert events[1].data == {"a": 1}


def test_cloudevents_binary_mode_reads_headers_and_json_body():
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "/apps/shop",
        "ce-type": "Orders.Created",
        "ce-time": "2024-05-01T10:00:00Z",
        "ce-subject": "orders/%C3%A9t%C3%A9%201",  # percent-encoded per the HTTP binding
        "CE-Tenant": "t1",
        "Content-Type": "application/json; charset=utf-8",
    }

    [event] = parse(b'{"orderId": 1}', headers, CLOUDEVENT_SCHEMA)

    assert event.id == "b-1"
    assert event.subject == "orders/été 1"
    assert event.data == {"orderId": 1}
    assert event.data_base64 is None
    assert event.extensions == {"tenant": "t1", "datacontenttype": "application/json; charset=utf-8"}


@pytest.mark.parametrize("ctype", ["application/octet-stream", "text/plain", None])
def test_cloudevents_binary_mode_non_json_body_becomes_data_base64(ctype):
    headers = {"ce-specversion": "1.0", "ce-id": "b", "ce-source": "/s", "ce-type": "T"}
    if ctype:
        headers["Content-Type"] = ctype
    payload = b"\x00\xffraw bytes"

    [event] = parse(payload, headers, CLOUDEVENT_SCHEMA)

    assert event.data is None
    assert base64.b64decode(event.data_base64) == payload


def test_cloudevents_binary_mode_empty_body_has_no_data():
    [event] = parse(b"", {"ce-specversion": "1.0", "ce-id": "b", "ce-source": "/s", "ce-type": "T"}, CLOUDEVENT_SCHEMA)
    assert event.data is None and event.data_base64 is None


@pytest.mark.parametrize(
    ("drop", "raw", "target"),
    [
        ("ce-source", b"{}", "ce-source"),
        ("ce-id", b"{}", "ce-id"),
        (None, b"{not json", "body"),
    ],
)
def test_cloudevents_binary_mode_errors_point_at_the_header_or_body(drop, raw, target):
    headers = {"ce-specversion": "1.0", "ce-id": "b", "ce-source": "/s", "ce-type": "T", "Content-Type": "application/json"}
    headers.pop(drop, None)
    err = schema_error(raw, headers, CLOUDEVENT_SCHEMA)
    assert err.status == 400
    assert err.details[0]["target"] == target


def test_cloudevents_binary_message_from_the_cloudevents_library_parses():
    from cloudevents.core.bindings import http
    from cloudevents.core.v1.event import CloudEvent

    message = http.to_binary_event(CloudEvent({"type": "T", "source": "/lib", "id": "l-1", "subject": "a b%c", "tenant": "t1", "datacontenttype": "application/json"}, {"x": 1}))

    [event] = parse(message.body, message.headers, CLOUDEVENT_SCHEMA)

    assert (event.id, event.source, event.subject, event.data) == ("l-1", "/lib", "a b%c", {"x": 1})
    assert event.extensions["tenant"] == "t1"
    assert schemas.is_valid_time(event.time, require_offset=True)


@pytest.mark.parametrize(
    ("overrides", "target", "fragment"),
    [
        ({"specversion": _DROP}, "specversion", "requires 'specversion'"),
        ({"id": _DROP}, "id", "requires 'id'"),
        ({"source": _DROP}, "source", "requires 'source'"),
        ({"type": _DROP}, "type", "requires 'type'"),
        ({"source": ""}, "source", "non-empty string"),
        ({"specversion": "0.3"}, "specversion", "must be '1.0'"),
        ({"time": "2024-05-01T10:00:00"}, "time", "RFC 3339"),  # RFC 3339 needs an offset
        ({"time": "soon"}, "time", "RFC 3339"),
        ({"subject": ""}, "subject", "non-empty string"),
        ({"datacontenttype": 5}, "datacontenttype", "non-empty string"),
        ({"data_base64": "AAEC"}, "data_base64", "both 'data' and 'data_base64'"),
        ({"data": _DROP, "data_base64": "%%%"}, "data_base64", "not valid base64"),
        ({"data": _DROP, "data_base64": 12}, "data_base64", "base64 string"),
        ({"myExt": "x"}, "myExt", "lower-case letters"),
        ({"my_ext": "x"}, "my_ext", "lower-case letters"),
        ({"tenant": {"nested": True}}, "tenant", "string, number or boolean"),
    ],
)
def test_cloudevents_rejects_invalid_event_naming_field(overrides, target, fragment):
    err = schema_error(body([ce_event(), ce_event(**overrides)]), CE_BATCH, CLOUDEVENT_SCHEMA)

    assert err.status == 400
    assert err.details[0]["target"] == f"[1].{target}"
    assert fragment in err.message
    assert "event index 1" in err.message


@pytest.mark.parametrize("headers", [JSON, {}, {"Content-Type": "text/plain"}])
def test_cloudevents_topic_without_cloudevents_content_type_is_415(headers):
    err = schema_error(body([ce_event()]), headers, CLOUDEVENT_SCHEMA)
    assert err.status == 415
    assert err.code == "UnsupportedMediaType"
    assert "application/cloudevents-batch+json" in err.message


@pytest.mark.parametrize(
    ("payload", "headers"),
    [([ce_event()], CE_SINGLE), (ce_event(), CE_BATCH), ([], CE_BATCH)],
    ids=["array-as-single", "object-as-batch", "empty-batch"],
)
def test_cloudevents_body_must_match_structured_or_batch_content_type(payload, headers):
    err = schema_error(body(payload), headers, CLOUDEVENT_SCHEMA)
    assert err.status == 400


# ------------------------------------------------------------------------------------------------
# Auto detection


@pytest.mark.parametrize(
    ("raw", "headers", "schema"),
    [
        (body([eg_event()]), JSON, EVENTGRID_SCHEMA),
        (body([eg_event()]), {}, EVENTGRID_SCHEMA),
        (body([ce_event()]), CE_BATCH, CLOUDEVENT_SCHEMA),
        (body(ce_event()), CE_SINGLE, CLOUDEVENT_SCHEMA),
        (body([ce_event()]), JSON, CLOUDEVENT_SCHEMA),  # body shape
        (body(ce_event()), JSON, CLOUDEVENT_SCHEMA),
        (b"{}", {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "T", "content-type": "application/json"}, CLOUDEVENT_SCHEMA),
    ],
    ids=["eg-json", "eg-no-ctype", "ce-batch", "ce-single", "ce-array-json", "ce-object-json", "ce-binary"],
)
def test_auto_detects_schema_from_headers_or_body(raw, headers, schema):
    [event] = parse(raw, headers, "Auto")
    assert event.input_schema == schema


def test_auto_still_refuses_a_single_eventgrid_object():
    err = schema_error(body(eg_event()), JSON, "Auto")
    assert "StartArray" in err.message


# ------------------------------------------------------------------------------------------------
# Size limits


def _sized_batch(total: int) -> bytes:
    raw = body([eg_event(data="")])
    padded = body([eg_event(data="x" * (total - len(raw)))])
    assert len(padded) == total
    return padded


def test_request_at_the_size_limit_is_accepted():
    [event] = parse(_sized_batch(schemas.MAX_REQUEST_BYTES), JSON, EVENTGRID_SCHEMA)
    assert len(event.data) > 1_000_000


@pytest.mark.parametrize(("headers", "schema"), [(JSON, EVENTGRID_SCHEMA), (CE_BATCH, CLOUDEVENT_SCHEMA), ({"ce-specversion": "1.0"}, CLOUDEVENT_SCHEMA)])
def test_request_over_the_size_limit_is_413_before_parsing(headers, schema):
    err = schema_error(b"[" + b" " * schemas.MAX_REQUEST_BYTES + b"]", headers, schema)
    assert err.status == 413
    assert err.code == "RequestEntityTooLarge"
    assert str(schemas.MAX_REQUEST_BYTES) in err.message


@pytest.mark.parametrize(
    ("events", "headers", "schema"),
    [
        ([eg_event(id="small"), eg_event(id="big", data="x" * 2000)], JSON, EVENTGRID_SCHEMA),
        ([ce_event(id="small"), ce_event(id="big", data="x" * 2000)], CE_BATCH, CLOUDEVENT_SCHEMA),
    ],
)
def test_single_event_over_the_event_limit_is_413(monkeypatch, events, headers, schema):
    monkeypatch.setattr(schemas, "MAX_EVENT_BYTES", 1000)

    err = schema_error(body(events), headers, schema)

    assert err.status == 413
    assert err.details[0]["target"] == "[1]"
    assert "id 'big'" in err.message


def test_binary_event_over_the_event_limit_is_413(monkeypatch):
    monkeypatch.setattr(schemas, "MAX_EVENT_BYTES", 1000)
    headers = {"ce-specversion": "1.0", "ce-id": "b", "ce-source": "/s", "ce-type": "T", "Content-Type": "application/octet-stream"}

    assert parse(b"x" * 900, headers, CLOUDEVENT_SCHEMA)
    assert schema_error(b"x" * 1000, headers, CLOUDEVENT_SCHEMA).status == 413


# ------------------------------------------------------------------------------------------------
# Rendering and conversions


def _eg_parsed(**overrides) -> Event:
    [event] = parse(body([eg_event(**overrides)]), JSON, EVENTGRID_SCHEMA)
    return event


def _ce_parsed(**overrides) -> Event:
    [event] = parse(body(ce_event(**overrides)), CE_SINGLE, CLOUDEVENT_SCHEMA)
    return event


def test_eventgrid_render_stamps_topic_and_metadata_version():
    event = _eg_parsed(topic="/publisher/said/this", metadataVersion="1")

    out = render(event, EVENTGRID_SCHEMA, TOPIC)

    assert out == {
        "topic": TOPIC,
        "subject": "orders/1",
        "eventType": "Orders.Created",
        "eventTime": "2024-05-01T10:00:00.1234567Z",
        "id": "e-1",
        "data": {"orderId": 1},
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }
    assert list(out) == ["topic", "subject", "eventType", "eventTime", "id", "data", "dataVersion", "metadataVersion"]


def test_eventgrid_render_without_data_version_or_data_uses_empty_and_null():
    out = render(_eg_parsed(dataVersion=_DROP, data=_DROP), EVENTGRID_SCHEMA, TOPIC)
    assert out["dataVersion"] == ""
    assert out["data"] is None


@pytest.mark.parametrize(("data_version", "dataschema"), [("1.0", "#1.0"), (_DROP, "#")])
def test_eventgrid_event_converts_to_cloudevent_like_azure(data_version, dataschema):
    out = render(_eg_parsed(dataVersion=data_version), CLOUDEVENT_SCHEMA, TOPIC)

    assert out == {
        "specversion": "1.0",
        "id": "e-1",
        "source": TOPIC,
        "type": "Orders.Created",
        "subject": "orders/1",
        "time": "2024-05-01T10:00:00.1234567Z",
        "data": {"orderId": 1},
        "dataschema": dataschema,
    }


def test_cloudevent_renders_as_cloudevent_with_extensions_and_source_kept():
    event = _ce_parsed(subject="orders/1", datacontenttype="application/json", tenant="t1")

    out = render(event, CLOUDEVENT_SCHEMA, TOPIC)

    assert out == {
        "specversion": "1.0",
        "id": "c-1",
        "source": "/apps/shop",
        "type": "Orders.Created",
        "subject": "orders/1",
        "time": "2024-05-01T10:00:00Z",
        "data": {"orderId": 1},
        "datacontenttype": "application/json",
        "tenant": "t1",
    }
    assert list(out)[0] == "specversion"


def test_cloudevent_with_binary_data_renders_data_base64_only():
    out = render(_ce_parsed(data=_DROP, data_base64="AAE="), CLOUDEVENT_SCHEMA, TOPIC)
    assert out["data_base64"] == "AAE="
    assert "data" not in out


def test_cloudevent_converts_to_eventgrid_best_effort():
    event = _ce_parsed(subject="orders/1", dataschema="#2.0", tenant="t1")

    out = render(event, EVENTGRID_SCHEMA, TOPIC)

    assert out == {
        "topic": TOPIC,
        "subject": "orders/1",
        "eventType": "Orders.Created",
        "eventTime": "2024-05-01T10:00:00Z",
        "id": "c-1",
        "data": {"orderId": 1},
        "dataVersion": "2.0",
        "metadataVersion": "1",
    }


def test_rendered_cloudevent_is_readable_by_the_cloudevents_library():
    from cloudevents.core.bindings import http

    for event in (_ce_parsed(tenant="t1"), _eg_parsed()):
        out = render(event, CLOUDEVENT_SCHEMA, TOPIC)
        parsed = http.from_structured_event(http.HTTPMessage({"content-type": content_type(CLOUDEVENT_SCHEMA, False)}, dumps(out)))
        assert parsed.get_id() == event.id
        assert parsed.get_type() == event.type
        assert parsed.get_data() == event.data


def test_eventgrid_rendering_reparses_to_the_same_event():
    event = _eg_parsed()
    [again] = parse(dumps([render(event, EVENTGRID_SCHEMA, TOPIC)]), JSON, EVENTGRID_SCHEMA)
    assert again == event


@pytest.mark.parametrize(
    ("input_schema", "delivery_schema", "supported"),
    [
        (EVENTGRID_SCHEMA, EVENTGRID_SCHEMA, True),
        (EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA, True),
        (CLOUDEVENT_SCHEMA, CLOUDEVENT_SCHEMA, True),
        (CLOUDEVENT_SCHEMA, EVENTGRID_SCHEMA, False),  # Azure: extensions have no place in the EG schema
    ],
)
def test_delivery_schema_support_matches_azure(input_schema, delivery_schema, supported):
    assert delivery_supported(input_schema, delivery_schema) is supported


@pytest.mark.parametrize(
    ("schema", "batch", "expected"),
    [
        (EVENTGRID_SCHEMA, False, "application/json; charset=utf-8"),
        (EVENTGRID_SCHEMA, True, "application/json; charset=utf-8"),
        (CLOUDEVENT_SCHEMA, False, "application/cloudevents+json; charset=utf-8"),
        (CLOUDEVENT_SCHEMA, True, "application/cloudevents-batch+json; charset=utf-8"),
    ],
)
def test_delivery_content_type(schema, batch, expected):
    assert content_type(schema, batch) == expected


def test_render_and_content_type_reject_unknown_schema():
    with pytest.raises(ValueError):
        render(_eg_parsed(), "CustomEventSchema", TOPIC)
    with pytest.raises(ValueError):
        content_type("CustomEventSchema", False)


def test_dumps_is_compact_utf8_json():
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


# ------------------------------------------------------------------------------------------------
# Store round trip


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(lambda: _eg_parsed(), id="eventgrid"),
        pytest.param(lambda: _eg_parsed(dataVersion=_DROP, data=_DROP), id="eventgrid-minimal"),
        pytest.param(lambda: _ce_parsed(subject="s", datacontenttype="application/json", tenant="t", n=2), id="cloudevent-extensions"),
        pytest.param(lambda: _ce_parsed(data=_DROP, data_base64="AAE="), id="cloudevent-binary"),
    ],
)
def test_record_round_trip_preserves_event_and_rendering(event):
    original = event()
    stored = orjson.loads(dumps(original.to_record()))

    restored = Event.from_record(copy.deepcopy(stored))

    assert restored == original
    for schema in (EVENTGRID_SCHEMA, CLOUDEVENT_SCHEMA):
        assert render(restored, schema, TOPIC) == render(original, schema, TOPIC)
