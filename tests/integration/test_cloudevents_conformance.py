"""The CNCF CloudEvents SDK (cloudevents 2.2.0, `cloudevents.core`) against a live broker process.

Events are encoded by the SDK in HTTP structured and binary content mode, posted with `requests`
to a CloudEventSchemaV1_0 topic, and what the webhook receives is decoded by the same SDK again:
an application using the CloudEvents SDK on both ends must get back the event it sent.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event, to_structured_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tests.integration.sdk_support import REFUSE, new_key, recording_subscriber, start_broker, wire

pytestmark = pytest.mark.integration

CLOUDEVENTS = "CloudEventSchemaV1_0"
STRUCTURED = "application/cloudevents+json; charset=utf-8"
BATCH = "application/cloudevents-batch+json; charset=utf-8"

DATA = {"sku": "WIDGET-42", "quantity": 3, "price": 19.99, "gift": False, "label": "Zoë's “gift” 😀", "notes": None}


@pytest.fixture(scope="module")
def subscriber():
    with recording_subscriber() as s:
        yield s


@pytest.fixture(scope="module")
def broker(subscriber, module_processes):
    # Set up after the subscriber, so torn down before it: the broker closes its connections first.
    broker = start_broker(module_processes)
    yield broker
    broker.http.close()


def shipped(n: int = 42, data=DATA, **attributes) -> CloudEvent:
    return CloudEvent(
        {
            "type": "Contoso.Items.Shipped",
            "source": "/contoso/warehouse",
            "subject": f"items/{n}",
            "dataschema": "https://schemas.contoso.com/shipped/1.json",
            "datacontenttype": "application/json",
            "tenant": "contoso",
            "sequence": 7,
            "urgent": True,
            **attributes,
        },
        data,
    )


def publish(broker, wired, message: HTTPMessage) -> None:
    resp = requests.post(
        broker.endpoint(wired.topic), data=message.body, headers={**message.headers, "aeg-sas-key": wired.key}, timeout=10
    )
    assert (resp.status_code, resp.content) == (200, b""), resp.text  # Azure: 200 with an empty body


def decode(request) -> CloudEvent:
    """What a receiver using the CloudEvents SDK makes of a delivered request."""
    return from_http_event(HTTPMessage(request.headers, request.body))


# -- structured mode ------------------------------------------------------------------------------


def test_structured_cloudevent_is_delivered_with_every_attribute_unchanged(broker, subscriber):
    wired = wire(broker, subscriber, "ce-structured", CLOUDEVENTS)
    event = shipped()
    message = to_structured_event(event)

    publish(broker, wired, message)

    [request] = subscriber.wait_for_events(wired.path, {event.get_id()})
    assert request.headers["content-type"] == STRUCTURED
    assert request.json() == json.loads(message.body)  # one object, every attribute and the data as sent
    received = decode(request)
    assert received.get_attributes() == event.get_attributes()
    assert received.get_data() == DATA


def test_structured_batch_is_delivered_one_structured_event_per_request(broker, subscriber):
    wired = wire(broker, subscriber, "ce-batch-in", CLOUDEVENTS)
    events = [shipped(1), shipped(2)]
    body = json.dumps([json.loads(JSONFormat().write(e)) for e in events]).encode()

    publish(broker, wired, HTTPMessage({"content-type": BATCH}, body))

    requests_ = subscriber.wait_for_events(wired.path, {e.get_id() for e in events})
    assert [r.headers["content-type"] for r in requests_] == [STRUCTURED, STRUCTURED]
    assert sorted(decode(r).get_subject() for r in requests_) == ["items/1", "items/2"]


def test_subscription_batching_delivers_a_cloudevents_batch_the_sdk_can_read(broker, subscriber):
    wired = wire(broker, subscriber, "ce-batch-out", CLOUDEVENTS, max_events_per_batch=10)
    events = {e.get_id(): e for e in (shipped(1), shipped(2), shipped(3))}
    body = json.dumps([json.loads(JSONFormat().write(e)) for e in events.values()]).encode()

    publish(broker, wired, HTTPMessage({"content-type": BATCH}, body))

    [request] = subscriber.wait_for_events(wired.path, set(events))
    assert request.headers["content-type"] == BATCH
    received = [JSONFormat().read(None, json.dumps(item).encode()) for item in request.json()]
    assert {e.get_id(): e.get_attributes() for e in received} == {i: e.get_attributes() for i, e in events.items()}


# -- binary mode ----------------------------------------------------------------------------------


def test_binary_mode_headers_become_attributes_and_the_body_becomes_data(broker, subscriber):
    wired = wire(broker, subscriber, "ce-binary", CLOUDEVENTS)
    event = shipped()
    message = to_binary_event(event)
    assert {"ce-tenant", "ce-sequence", "ce-urgent"} <= set(message.headers)  # extensions travel as headers

    publish(broker, wired, message)

    [request] = subscriber.wait_for_events(wired.path, {event.get_id()})
    assert request.headers["content-type"] == STRUCTURED
    # Binary mode carries every attribute as a header string, so extension values arrive as strings.
    assert request.json() == {
        "specversion": "1.0",
        "id": event.get_id(),
        "source": "/contoso/warehouse",
        "type": "Contoso.Items.Shipped",
        "subject": "items/42",
        "time": message.headers["ce-time"],
        "dataschema": "https://schemas.contoso.com/shipped/1.json",
        "datacontenttype": "application/json",
        "tenant": "contoso",
        "sequence": "7",
        "urgent": "True",
        "data": DATA,
    }
    received = decode(request)
    assert (received.get_extension("tenant"), received.get_time(), received.get_data()) == ("contoso", event.get_time(), DATA)


def test_binary_mode_body_that_is_not_json_is_delivered_as_data_base64(broker, subscriber):
    wired = wire(broker, subscriber, "ce-binary-bytes", CLOUDEVENTS)
    payload = bytes(range(256))
    event = shipped(data=payload, datacontenttype="application/octet-stream")

    publish(broker, wired, to_binary_event(event))

    [request] = subscriber.wait_for_events(wired.path, {event.get_id()})
    delivered = request.json()
    assert "data" not in delivered
    assert base64.b64decode(delivered["data_base64"]) == payload
    assert delivered["datacontenttype"] == "application/octet-stream"
    assert decode(request).get_data() == payload


def test_binary_mode_percent_encoded_header_values_are_decoded(broker, subscriber):
    # CloudEvents HTTP binding 3.1.3.2: header values are percent-encoded UTF-8.
    wired = wire(broker, subscriber, "ce-binary-encoded", CLOUDEVENTS)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "encoded-1",
        "ce-source": "/contoso/caf%C3%A9",
        "ce-type": "Contoso.Menu.Changed",
        "ce-subject": "caf%C3%A9%20%2F%20menu",
        "ce-time": "2024-05-01T10:00:00.1234567Z",
        "ce-discount": "10%25",
        "content-type": "application/json",
    }

    publish(broker, wired, HTTPMessage(headers, b'{"ok": true}'))

    [request] = subscriber.wait_for_events(wired.path, {"encoded-1"})
    delivered = request.json()
    assert (delivered["source"], delivered["subject"], delivered["discount"]) == ("/contoso/café", "café / menu", "10%")
    assert delivered["time"] == "2024-05-01T10:00:00.1234567Z"  # 7 fraction digits (.NET) kept as sent
    assert delivered["data"] == {"ok": True}


# -- topic rules and the CloudEvents handshake ---------------------------------------------------


def test_cloudevents_topic_refuses_a_body_without_a_cloudevents_content_type(broker, subscriber):
    wired = wire(broker, subscriber, "ce-content-type", CLOUDEVENTS)
    body = json.dumps([json.loads(JSONFormat().write(shipped()))]).encode()

    resp = requests.post(
        broker.endpoint(wired.topic), data=body, headers={"content-type": "application/json", "aeg-sas-key": wired.key}, timeout=10
    )

    assert resp.status_code == 415
    assert resp.json()["error"]["code"]


def test_cloudevents_topic_subscription_is_validated_with_the_options_handshake(broker, subscriber):
    # Azure: "When you use the CloudEvents schema for output, Event Grid uses the CloudEvents v1.0
    # abuse protection in place of the Event Grid validation event mechanism"
    # (learn.microsoft.com/azure/event-grid/end-point-validation-cloud-events-schema). A CloudEvents
    # topic's subscription outputs CloudEvents without saying so (see the tests above).
    wired = wire(broker, subscriber, "ce-default-handshake", CLOUDEVENTS)

    [options] = subscriber.received(wired.path, lambda r: r.is_cloudevents_handshake)
    assert options.headers["webhook-request-origin"] == "eventgrid.azure.net"
    assert not subscriber.received(wired.path, lambda r: r.is_eventgrid_handshake)


def test_cloudevents_subscription_whose_endpoint_refuses_the_options_handshake_fails(broker, subscriber):
    topic = "ce-refused-handshake"
    broker.put_topic(topic, CLOUDEVENTS, [new_key()])

    resp = broker.put_subscription(topic, "refused", subscriber.url(f"/{topic}", handshake=REFUSE), delivery_schema=CLOUDEVENTS)

    assert resp.status_code == 400, resp.text
    [options] = subscriber.received(f"/{topic}", lambda r: r.is_cloudevents_handshake)
    assert options.headers["webhook-request-origin"] == "eventgrid.azure.net"
    assert broker.get_subscription(topic, "refused")["properties"]["provisioningState"] == "Failed"
