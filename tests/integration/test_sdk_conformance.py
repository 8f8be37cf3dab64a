"""The official Azure SDK (azure-eventgrid) against a live broker process.

Each test publishes with `EventGridPublisherClient` exactly as an application would against
Azure, and checks what a real webhook receives: bodies compared with what the SDK itself put on
the wire (captured with azure-core's `raw_request_hook`), aeg-* headers, content types, the ARM
topic path, and the validation handshake that every subscription here goes through.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, EventGridPublisherClient, generate_sas

from tests.integration.sdk_support import (
    MANUAL,
    REFUSE,
    VALIDATION_EVENT_TYPE,
    WRONG_CODE,
    SentRequests,
    new_key,
    recording_subscriber,
    start_broker,
    topic_path,
    wire,
)

pytestmark = pytest.mark.integration

EVENTGRID = "EventGridSchema"
CLOUDEVENTS = "CloudEventSchemaV1_0"

# A payload that catches lossy JSON handling: non-ASCII, escapes, null, nesting, 2**53 + 1.
DATA = {
    "orderId": "1001",
    "total": 149.95,
    "quantity": 3,
    "paid": True,
    "note": None,
    "customer": {"name": "Zoë Ångström", "tags": ["vip", "€"]},
    "emoji": "😀",
    "escaped": 'line\nbreak "quoted" \\ </script>',
    "beyondDouble": 9007199254740993,
    "empty": {},
    "list": [],
}


@pytest.fixture(scope="module")
def subscriber():
    with recording_subscriber() as s:
        yield s


@pytest.fixture(scope="module")
def broker(subscriber, module_processes):
    # Set up after the subscriber, so torn down before it: the broker closes its connections first.
    broker = start_broker(module_processes, https=True)
    yield broker
    broker.http.close()


def client(broker, wired, credential=None, **options) -> EventGridPublisherClient:
    return EventGridPublisherClient(broker.endpoint(wired.topic), credential or AzureKeyCredential(wired.key), **options)


def order_event(n: int = 1001, **data) -> EventGridEvent:
    return EventGridEvent(
        subject=f"/orders/{n}", event_type="Contoso.Orders.Created", data={**DATA, "orderId": str(n), **data}, data_version="2.0"
    )


def by_id(events: list[dict]) -> dict[str, dict]:
    return {e["id"]: e for e in events}


def delivered_ids(subscriber, path: str) -> list[str]:
    return [e["id"] for r in subscriber.received(path, lambda r: r.is_notification) for e in r.events()]


def expected_eventgrid(sent: dict, topic: str) -> dict:
    """An Event Grid event as Azure delivers it: what the publisher sent, topic stamped, metadataVersion 1."""
    return {
        "topic": topic_path(topic),
        "id": sent["id"],
        "subject": sent["subject"],
        "eventType": sent["eventType"],
        "eventTime": sent["eventTime"],
        "data": sent["data"],
        "dataVersion": sent["dataVersion"],
        "metadataVersion": "1",
    }


# -- EventGridSchema with a key -----------------------------------------------------------------


def test_sdk_event_with_key_is_delivered_unchanged_in_eventgrid_schema(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-key-single")
    sent = SentRequests()

    client(broker, wired).send(order_event(), raw_request_hook=sent.hook)

    [sent_event] = sent.events()
    [request] = subscriber.wait_for_events(wired.path, {sent_event["id"]})
    assert request.json() == [expected_eventgrid(sent_event, wired.topic)]
    assert request.json()[0]["data"] == DATA  # the payload, value for value
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["aeg-event-type"] == "Notification"
    assert request.headers["aeg-subscription-name"] == wired.subscription.upper()
    assert request.headers["aeg-delivery-count"] == "0"
    assert request.headers["aeg-metadata-version"] == "1"
    assert request.headers["aeg-data-version"] == "2.0"
    # The consumer side of the SDK reads the delivery back into the event that was sent.
    parsed = EventGridEvent.from_dict(request.json()[0])
    assert (parsed.id, parsed.subject, parsed.event_type, parsed.data) == (sent_event["id"], "/orders/1001", "Contoso.Orders.Created", DATA)
    assert parsed.topic == topic_path(wired.topic)


def test_integers_beyond_64_bits_in_data_are_delivered_exactly(broker, subscriber):
    # Python ints are unbounded and the SDK writes them digit for digit; an event broker must not
    # turn a publisher's 128-bit id or .NET decimal into a rounded float.
    wired = wire(broker, subscriber, "sdk-big-integers")
    data = {"id128": 2**127 + 1, "decimalMax": 79228162514264337593543950335, "negative": -(2**64) - 1}
    sent = SentRequests()

    client(broker, wired).send(EventGridEvent(subject="/big", event_type="T", data=data, data_version="1"), raw_request_hook=sent.hook)

    [request] = subscriber.wait_for_events(wired.path, {sent.events()[0]["id"]})
    assert request.json()[0]["data"] == data


def test_event_times_are_delivered_exactly_as_published(broker, subscriber):
    # .NET publishers write 7 fraction digits, others an offset or none: the string is passed through.
    wired = wire(broker, subscriber, "sdk-event-times", max_events_per_batch=10)
    times = ["2017-06-26T18:41:00.9584103Z", "2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.5-03:30"]
    body = [
        {"id": f"time-{i}", "subject": "/t", "eventType": "T", "eventTime": t, "data": {}, "dataVersion": "1"}
        for i, t in enumerate(times)
    ]

    resp = requests.post(broker.endpoint(wired.topic), json=body, headers={"aeg-sas-key": wired.key}, timeout=10)

    assert resp.status_code == 200, resp.text
    requests_ = subscriber.wait_for_events(wired.path, {e["id"] for e in body})
    delivered = by_id([e for r in requests_ for e in r.json()])
    assert [delivered[e["id"]]["eventTime"] for e in body] == times


def test_subscription_put_runs_the_eventgrid_validation_handshake(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-handshake")

    [handshake] = subscriber.received(wired.path, lambda r: r.is_eventgrid_handshake)
    [event] = handshake.json()
    assert event["eventType"] == VALIDATION_EVENT_TYPE
    assert event["topic"] == topic_path(wired.topic)
    assert event["data"]["validationCode"]
    assert event["data"]["validationUrl"].startswith(f"{broker.url}/")
    assert handshake.headers["aeg-event-type"] == "SubscriptionValidation"
    assert handshake.headers["aeg-subscription-name"] == wired.subscription.upper()
    assert broker.get_subscription(wired.topic, wired.subscription)["properties"]["provisioningState"] == "Succeeded"


def test_sdk_list_of_events_is_delivered_one_event_per_request_by_default(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-key-list")
    sent = SentRequests()

    client(broker, wired).send([order_event(n) for n in (1, 2, 3)], raw_request_hook=sent.hook)

    sent_events = by_id(sent.events())
    requests_ = subscriber.wait_for_events(wired.path, set(sent_events))
    assert [len(r.json()) for r in requests_] == [1, 1, 1]  # maxEventsPerBatch defaults to 1
    assert by_id([r.json()[0] for r in requests_]) == {i: expected_eventgrid(e, wired.topic) for i, e in sent_events.items()}


def test_topic_with_generated_keys_accepts_either_listed_key(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-generated-keys")
    broker.put_topic(wired.topic, EVENTGRID)  # generateKeys: replaces both keys
    key1, key2 = broker.list_keys(wired.topic)
    assert key1
    assert key2
    assert key1 != key2
    assert wired.key not in (key1, key2)
    sent = SentRequests()

    for key in (key1, key2):
        client(broker, wired, AzureKeyCredential(key)).send(order_event(), raw_request_hook=sent.hook)
    with pytest.raises(ClientAuthenticationError):
        client(broker, wired).send(order_event())  # the replaced key

    subscriber.wait_for_events(wired.path, {json.loads(body)[0]["id"] for _url, _headers, body in sent.requests})


# -- SAS -------------------------------------------------------------------------------------------


def test_sdk_sas_credential_from_generate_sas_is_accepted(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-sas")
    endpoint = broker.endpoint(wired.topic)
    token = generate_sas(endpoint, wired.key, datetime.now(UTC) + timedelta(minutes=10))
    sent = SentRequests()

    client(broker, wired, AzureSasCredential(token)).send(order_event(), raw_request_hook=sent.hook)

    assert sent.last[1]["aeg-sas-token"] == token
    assert "aeg-sas-key" not in sent.last[1]
    [sent_event] = sent.events()
    [request] = subscriber.wait_for_events(wired.path, {sent_event["id"]})
    assert request.json() == [expected_eventgrid(sent_event, wired.topic)]


def _wrong_key(broker, wired):
    return AzureKeyCredential(new_key())


def _expired_sas(broker, wired):
    return AzureSasCredential(generate_sas(broker.endpoint(wired.topic), wired.key, datetime.now(UTC) - timedelta(minutes=1)))


def _sas_signed_with_another_key(broker, wired):
    return AzureSasCredential(generate_sas(broker.endpoint(wired.topic), new_key(), datetime.now(UTC) + timedelta(minutes=10)))


def _sas_for_another_topic(broker, wired):
    other = broker.endpoint(wired.topic + "-other")
    return AzureSasCredential(generate_sas(other, wired.key, datetime.now(UTC) + timedelta(minutes=10)))


@pytest.mark.parametrize(
    "credential",
    [_wrong_key, _expired_sas, _sas_signed_with_another_key, _sas_for_another_topic],
    ids=["wrong-key", "expired-sas", "sas-signed-with-another-key", "sas-for-another-topic"],
)
def test_sdk_with_rejected_credentials_raises_client_authentication_error(broker, subscriber, credential):
    wired = wire(broker, subscriber, f"sdk-auth-{credential.__name__.strip('_').replace('_', '-')}")

    with pytest.raises(ClientAuthenticationError) as caught:
        client(broker, wired, credential(broker, wired)).send(order_event(1))

    assert caught.value.status_code == 401
    # Nothing of the refused request may be delivered: publish a good event and check it comes alone.
    sent = SentRequests()
    client(broker, wired).send(order_event(2), raw_request_hook=sent.hook)
    subscriber.wait_for_events(wired.path, {sent.events()[0]["id"]})
    assert delivered_ids(subscriber, wired.path) == [sent.events()[0]["id"]]


def test_request_without_credentials_on_a_keyed_topic_is_401(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-no-credentials")
    body = [{"id": "anon-1", "subject": "/s", "eventType": "T", "eventTime": "2024-05-01T10:00:00Z", "data": {}, "dataVersion": "1"}]

    resp = requests.post(broker.endpoint(wired.topic), params={"api-version": "2018-01-01"}, json=body, timeout=10)

    assert resp.status_code == 401
    assert resp.json()["error"]["code"]


# -- CloudEvents through the Azure SDK ------------------------------------------------------------


def cloud_event(n: int, data=None, datacontenttype: str | None = "application/json") -> CloudEvent:
    return CloudEvent(
        source="/contoso/orders",
        type="Contoso.Orders.Created",
        subject=f"orders/{n}",
        data=DATA if data is None else data,
        dataschema="https://schemas.contoso.com/order/2.json",
        datacontenttype=datacontenttype,
        extensions={"tenant": "contoso", "priority": 5, "urgent": True},
    )


def test_sdk_cloudevent_is_delivered_as_structured_cloudevent_with_extensions(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-ce-single", CLOUDEVENTS)
    sent = SentRequests()

    client(broker, wired).send(cloud_event(1), raw_request_hook=sent.hook)

    assert sent.last[1]["content-type"] == "application/cloudevents-batch+json; charset=utf-8"
    [sent_event] = sent.events()
    [request] = subscriber.wait_for_events(wired.path, {sent_event["id"]})
    assert request.headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert request.json() == sent_event  # one object (not an array), every attribute as sent
    parsed = CloudEvent.from_dict(request.json())
    assert parsed.extensions == {"tenant": "contoso", "priority": 5, "urgent": True}
    assert (parsed.source, parsed.subject, parsed.data) == ("/contoso/orders", "orders/1", DATA)


def test_sdk_cloudevents_are_delivered_as_a_cloudevents_batch_with_bytes_as_data_base64(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-ce-batch", CLOUDEVENTS, max_events_per_batch=10)
    sent = SentRequests()
    raw = bytes(range(256))

    client(broker, wired).send([cloud_event(1), cloud_event(2, data=raw, datacontenttype=None), cloud_event(3)], raw_request_hook=sent.hook)

    sent_events = by_id(sent.events())
    [request] = subscriber.wait_for_events(wired.path, set(sent_events))
    assert request.headers["content-type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert isinstance(request.json(), list)
    assert by_id(request.json()) == sent_events
    [binary] = [e for e in request.json() if e["subject"] == "orders/2"]
    assert "data" not in binary
    assert base64.b64decode(binary["data_base64"]) == raw
    assert CloudEvent.from_dict(binary).data == raw


def test_eventgrid_topic_delivers_converted_cloudevents_to_a_cloudevents_subscription(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-eg-to-ce", EVENTGRID, delivery_schema=CLOUDEVENTS)
    sent = SentRequests()

    client(broker, wired).send(order_event(), raw_request_hook=sent.hook)

    [sent_event] = sent.events()
    [request] = subscriber.wait_for_events(wired.path, {sent_event["id"]})
    assert request.headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    delivered = request.json()
    # Azure's mapping: source = the topic's ARM path, type = eventType, time = eventTime.
    assert {k: delivered.get(k) for k in ("specversion", "id", "source", "type", "subject", "time", "data")} == {
        "specversion": "1.0",
        "id": sent_event["id"],
        "source": topic_path(wired.topic),
        "type": sent_event["eventType"],
        "subject": sent_event["subject"],
        "time": sent_event["eventTime"],
        "data": DATA,
    }
    assert not {"topic", "eventType", "eventTime", "metadataVersion"} & set(delivered)
    # CloudEvents output is validated with the CloudEvents OPTIONS handshake, not the validation event.
    [options] = subscriber.received(wired.path, lambda r: r.is_cloudevents_handshake)
    assert options.headers["webhook-request-origin"] == "eventgrid.azure.net"
    assert not subscriber.received(wired.path, lambda r: r.is_eventgrid_handshake)


# -- api-version, endpoints -----------------------------------------------------------------------


def test_unknown_future_api_version_is_accepted(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-api-version")
    sent = SentRequests()

    client(broker, wired, api_version="2099-12-01").send(order_event(1), raw_request_hook=sent.hook)
    raw = [{"id": "raw-2099", "subject": "/s", "eventType": "T", "eventTime": "2024-05-01T10:00:00Z", "data": {"n": 2}, "dataVersion": "1"}]
    resp = requests.post(
        broker.endpoint(wired.topic), params={"api-version": "2099-12-01"}, json=raw, headers={"aeg-sas-key": wired.key}, timeout=10
    )

    assert "api-version=2099-12-01" in sent.last[0]
    assert (resp.status_code, resp.content) == (200, b"")
    subscriber.wait_for_events(wired.path, {sent.events()[0]["id"], "raw-2099"})


@pytest.mark.parametrize(
    "path_and_query",
    ["/runtime/webhooks/EventGrid?functionName=Orders", "/runtime/webhooks/EventGrid?functionName=Refunds&code=a%2Bb%2Fc%3D%3D"],
    ids=["function-name", "function-key"],
)
def test_webhook_query_string_reaches_the_subscriber_unchanged(broker, subscriber, path_and_query):
    topic = "sdk-query-" + ("key" if "code=" in path_and_query else "name")
    key = new_key()
    broker.put_topic(topic, EVENTGRID, [key])
    broker.subscribe(topic, "function", subscriber.url(path_and_query))
    path = path_and_query.split("?")[0]
    sent = SentRequests()

    EventGridPublisherClient(broker.endpoint(topic), AzureKeyCredential(key)).send(order_event(), raw_request_hook=sent.hook)

    [request] = subscriber.wait_for_events(path, {sent.events()[0]["id"]})
    handshakes = subscriber.received(path, lambda r: r.is_eventgrid_handshake and r.uri == path_and_query)
    assert request.uri == path_and_query
    assert len(handshakes) == 1


# -- validation handshake outcomes ---------------------------------------------------------------


@pytest.mark.parametrize("answer", [WRONG_CODE, REFUSE])
def test_subscriber_that_does_not_echo_the_code_fails_the_subscription(broker, subscriber, answer):
    topic = f"sdk-validation-{answer}"
    broker.put_topic(topic, EVENTGRID, [new_key()])

    resp = broker.put_subscription(topic, "unvalidated", subscriber.url(f"/{topic}", handshake=answer))

    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"]
    props = broker.get_subscription(topic, "unvalidated")["properties"]
    assert props["provisioningState"] == "Failed"
    assert props["provisioningStateDetail"]


def test_manual_validation_by_get_on_the_validation_url_activates_the_subscription(broker, subscriber):
    topic = "sdk-manual-validation"
    key = new_key()
    broker.put_topic(topic, EVENTGRID, [key])
    path = f"/{topic}"

    created = broker.subscribe(topic, "manual", subscriber.url(path, handshake=MANUAL))

    assert created["properties"]["provisioningState"] == "AwaitingManualAction"
    [handshake] = subscriber.received(path, lambda r: r.is_eventgrid_handshake)
    validation_url = handshake.json()[0]["data"]["validationUrl"]
    assert validation_url.startswith(f"{broker.url}/")  # built from BROKER_PUBLIC_URL
    assert requests.get(validation_url, timeout=10).status_code == 200
    assert broker.get_subscription(topic, "manual")["properties"]["provisioningState"] == "Succeeded"
    sent = SentRequests()
    EventGridPublisherClient(broker.endpoint(topic), AzureKeyCredential(key)).send(order_event(), raw_request_hook=sent.hook)
    subscriber.wait_for_events(path, {sent.events()[0]["id"]})


# -- filters, batching, delivery properties --------------------------------------------------------


def test_subject_and_advanced_filters_deliver_only_matching_events(broker, subscriber):
    wired = wire(
        broker, subscriber, "sdk-filters", max_events_per_batch=10,
        filter={
            "subjectBeginsWith": "/orders/",
            "advancedFilters": [
                {"operatorType": "NumberGreaterThan", "key": "data.total", "value": 100},
                {"operatorType": "StringIn", "key": "data.region", "values": ["EU", "US"]},
            ],
        },
    )

    def event(subject: str, **data) -> EventGridEvent:
        return EventGridEvent(subject=subject, event_type="Contoso.Orders.Created", data=data, data_version="1")

    events = {
        "match": event("/orders/1", total=150, region="EU"),
        "match-case-insensitive": event("/ORDERS/2", total=100.5, region="us"),  # subjects and strings ignore case
        "other-subject": event("/invoices/3", total=500, region="EU"),
        "too-small": event("/orders/4", total=100, region="EU"),
        "no-total": event("/orders/5", region="EU"),
        "other-region": event("/orders/6", total=900, region="APAC"),
        "total-as-text": event("/orders/7", total="900", region="EU"),  # a string is not a number
    }
    publisher = client(broker, wired)
    publisher.send(list(events.values()))
    sentinel = event("/orders/8", total=101, region="EU")
    publisher.send(sentinel)  # published after the rest: once it is here, the rest have been routed
    expected = {str(events["match"].id), str(events["match-case-insensitive"].id), str(sentinel.id)}

    subscriber.wait_for_events(wired.path, expected)
    assert sorted(delivered_ids(subscriber, wired.path)) == sorted(expected)


def test_output_batches_hold_at_most_max_events_per_batch_and_carry_static_headers(broker, subscriber):
    wired = wire(
        broker, subscriber, "sdk-batching", max_events_per_batch=2,
        attributes=[{"name": "X-Tenant", "type": "Static", "properties": {"value": "contoso", "isSecret": False}}],
    )
    sent = SentRequests()

    client(broker, wired).send([order_event(n) for n in range(1, 6)], raw_request_hook=sent.hook)

    sent_events = by_id(sent.events())
    requests_ = subscriber.wait_for_events(wired.path, set(sent_events))
    assert sorted(len(r.json()) for r in requests_) == [1, 2, 2]
    assert sorted(delivered_ids(subscriber, wired.path)) == sorted(sent_events)  # each exactly once
    assert by_id([e for r in requests_ for e in r.json()]) == {i: expected_eventgrid(e, wired.topic) for i, e in sent_events.items()}
    assert all(r.headers["x-tenant"] == "contoso" for r in requests_)
    assert all(r.headers["content-type"] == "application/json; charset=utf-8" for r in requests_)


def test_dynamic_delivery_properties_take_their_value_from_the_event(broker, subscriber):
    wired = wire(
        broker, subscriber, "sdk-dynamic-headers",
        attributes=[
            {"name": "X-Order-Id", "type": "Dynamic", "properties": {"sourceField": "data.orderId"}},
            {"name": "X-Quantity", "type": "Dynamic", "properties": {"sourceField": "data.quantity"}},
            {"name": "X-Paid", "type": "Dynamic", "properties": {"sourceField": "data.paid"}},
            {"name": "X-Event-Subject", "type": "Dynamic", "properties": {"sourceField": "subject"}},
            {"name": "X-Source", "type": "Static", "properties": {"value": "emulator", "isSecret": True}},
        ],
    )
    sent = SentRequests()

    client(broker, wired).send([order_event(7), order_event(8, quantity=12)], raw_request_hook=sent.hook)

    requests_ = subscriber.wait_for_events(wired.path, {e["id"] for e in sent.events()})
    headers = sorted(
        (r.headers["x-order-id"], r.headers["x-quantity"], r.headers["x-paid"], r.headers["x-event-subject"], r.headers["x-source"])
        for r in requests_
    )
    assert headers == [("7", "3", "true", "/orders/7", "emulator"), ("8", "12", "true", "/orders/8", "emulator")]


# -- HTTPS ----------------------------------------------------------------------------------------


def test_sdk_publishes_over_https_with_the_generated_self_signed_certificate(broker, subscriber):
    wired = wire(broker, subscriber, "sdk-https")
    endpoint = broker.endpoint(wired.topic, https=True)
    sent = SentRequests()

    EventGridPublisherClient(endpoint, AzureKeyCredential(wired.key)).send(
        order_event(), connection_verify=str(broker.cert), raw_request_hook=sent.hook
    )
    token = generate_sas(endpoint, wired.key, datetime.now(UTC) + timedelta(minutes=10))
    EventGridPublisherClient(endpoint, AzureSasCredential(token)).send(
        order_event(2), connection_verify=str(broker.cert), raw_request_hook=sent.hook
    )

    assert all(url.startswith(f"{broker.https_url}/") for url, _headers, _body in sent.requests)
    subscriber.wait_for_events(wired.path, {json.loads(body)[0]["id"] for _url, _headers, body in sent.requests})
    with pytest.raises(requests.exceptions.SSLError):  # really TLS, with a certificate no default store trusts
        requests.post(endpoint, json=[], headers={"aeg-sas-key": wired.key}, timeout=10)
