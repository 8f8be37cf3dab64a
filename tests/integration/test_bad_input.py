"""Malformed requests against every endpoint of a running broker: each gets a 4xx with a JSON
error body {"error": {"code", "message"}}, changes nothing (a batch with one bad event stores
none of it), and the broker keeps serving and delivering what it had accepted before.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.integration.processes import Broker, Webhook, always, event, free_port, hang, subscription, wait_until

pytestmark = pytest.mark.integration

SCALE = 0.01
MB = 1024 * 1024
SUB = "/topics/default/eventSubscriptions"
DL = f"{SUB}/sink/deadLetters"


def good(**overrides) -> dict:
    return {**event(data={"case": "bad-input"}), **overrides}


def without(key: str) -> dict:
    e = good()
    del e[key]
    return e


def hook_body(**props) -> dict:
    """A valid subscription body (no handshake needed) with `props` merged into `properties`."""
    body = subscription("http://127.0.0.1:9/events", skip_validation=True)
    body["properties"].update(props)
    return body


def destination(**dest) -> dict:
    body = hook_body()
    body["properties"]["destination"]["properties"].update(dest)
    return body


def raw(data: bytes | str, content_type: str = "application/json") -> dict:
    return {"data": data, "headers": {"Content-Type": content_type}}


TOO_BIG = "x" * (MB + 1024)
CLOUDEVENT = {"specversion": "1.0", "id": "ce-1", "source": "/tests", "type": "Test.Event", "data": {}}

# (id, method, path, request kwargs, expected status)
CASES = [
    # Event Grid publish API
    ("events-invalid-json", "POST", "/api/events", raw(b'[{"id": '), 400),
    ("events-empty-body", "POST", "/api/events", raw(b""), 400),
    ("events-object-not-array", "POST", "/api/events", {"json": good()}, 400),
    ("events-empty-array", "POST", "/api/events", {"json": []}, 400),
    ("events-array-of-numbers", "POST", "/api/events", {"json": [1, 2]}, 400),
    ("events-json-string", "POST", "/api/events", {"json": "NewOrder"}, 400),
    ("events-non-utf8", "POST", "/api/events", raw('[{"id": "\xe9"}]'.encode("latin-1")), 400),
    ("events-missing-eventTime", "POST", "/api/events", {"json": [without("eventTime")]}, 400),
    ("events-missing-subject", "POST", "/api/events", {"json": [without("subject")]}, 400),
    ("events-bad-eventTime", "POST", "/api/events", {"json": [good(eventTime="yesterday")]}, 400),
    ("events-numeric-id", "POST", "/api/events", {"json": [good(id=123)]}, 400),
    ("events-unknown-property", "POST", "/api/events", {"json": [good(source="/x")]}, 400),
    ("events-metadataVersion-2", "POST", "/api/events", {"json": [good(metadataVersion="2")]}, 400),
    ("events-one-bad-in-batch", "POST", "/api/events", {"json": [good(), without("id"), good()]}, 400),
    ("events-over-1mb", "POST", "/api/events", {"json": [good(data=TOO_BIG)]}, 413),
    ("events-wrong-method", "GET", "/api/events", {}, 405),
    # Named topics
    ("topic-name-underscore", "POST", "/topics/bad_name/api/events", {"json": [good()]}, 400),
    ("topic-name-too-short", "POST", "/topics/ab/api/events", {"json": [good()]}, 400),
    ("topic-batch-one-bad", "POST", "/topics/bad-input/api/events", {"json": [good(), good(eventType="")]}, 400),
    ("topic-over-1mb", "POST", "/topics/bad-input/api/events", {"json": [good(data=TOO_BIG)]}, 413),
    ("cloudevents-topic-text-plain", "POST", "/topics/ce-input/api/events", raw(json.dumps(CLOUDEVENT), "text/plain"), 415),
    ("cloudevents-missing-source", "POST", "/topics/ce-input/api/events",
     raw(json.dumps({k: v for k, v in CLOUDEVENT.items() if k != "source"}), "application/cloudevents+json"), 400),
    ("cloudevents-batch-not-array", "POST", "/topics/ce-input/api/events",
     raw(json.dumps(CLOUDEVENT), "application/cloudevents-batch+json"), 400),
    ("topic-put-bad-schema", "PUT", "/topics/new-topic", {"json": {"properties": {"inputSchema": "Xml"}}}, 400),
    # The prototype's /publish
    ("publish-invalid-json", "POST", "/publish", raw(b"{eventType: NewOrder}"), 400),
    ("publish-empty-body", "POST", "/publish", raw(b""), 400),
    ("publish-array", "POST", "/publish", {"json": [{"eventType": "NewOrder"}]}, 400),
    ("publish-missing-eventType", "POST", "/publish", {"json": {"data": {}}}, 400),
    ("publish-blank-eventType", "POST", "/publish", {"json": {"eventType": "  "}}, 400),
    ("publish-numeric-eventType", "POST", "/publish", {"json": {"eventType": 7}}, 400),
    ("publish-empty-subject", "POST", "/publish", {"json": {"eventType": "NewOrder", "subject": ""}}, 400),
    ("publish-numeric-id", "POST", "/publish", {"json": {"eventType": "NewOrder", "id": 5}}, 400),
    ("publish-non-utf8", "POST", "/publish", raw('{"eventType": "\xe9"}'.encode("latin-1")), 400),
    ("publish-over-1mb", "POST", "/publish", {"json": {"eventType": "NewOrder", "data": TOO_BIG}}, 413),
    # The prototype's /subscribe
    ("subscribe-invalid-json", "POST", "/subscribe", raw(b"eventType=NewOrder"), 400),
    ("subscribe-array", "POST", "/subscribe", {"json": ["NewOrder"]}, 400),
    ("subscribe-missing-endpoint", "POST", "/subscribe", {"json": {"eventType": "NewOrder"}}, 400),
    ("subscribe-ftp-endpoint", "POST", "/subscribe", {"json": {"eventType": "NewOrder", "endpoint": "ftp://host/x"}}, 400),
    ("subscribe-relative-endpoint", "POST", "/subscribe", {"json": {"eventType": "NewOrder", "endpoint": "/events"}}, 400),
    ("subscribe-missing-eventType", "POST", "/subscribe", {"json": {"endpoint": "http://127.0.0.1:9/x"}}, 400),
    ("subscribe-over-1mb", "POST", "/subscribe", {"json": {"eventType": "NewOrder", "endpoint": "http://127.0.0.1:9/" + TOO_BIG}}, 413),
    # Event subscriptions (ARM shape)
    ("sub-name-too-short", "PUT", f"{SUB}/ab", {"json": hook_body()}, 400),
    ("sub-name-underscore", "PUT", f"{SUB}/bad_name", {"json": hook_body()}, 400),
    ("sub-invalid-json", "PUT", f"{SUB}/new-sub", raw(b"{"), 400),
    ("sub-body-array", "PUT", f"{SUB}/new-sub", {"json": [hook_body()]}, 400),
    ("sub-no-destination", "PUT", f"{SUB}/new-sub", {"json": {"properties": {}}}, 400),
    ("sub-eventhub-destination", "PUT", f"{SUB}/new-sub",
     {"json": {"properties": {"destination": {"endpointType": "EventHub", "properties": {}}}}}, 400),
    ("sub-missing-endpoint", "PUT", f"{SUB}/new-sub", {"json": destination(endpointUrl=None)}, 400),
    ("sub-endpoint-not-url", "PUT", f"{SUB}/new-sub", {"json": destination(endpointUrl="not a url")}, 400),
    ("sub-skipValidation-string", "PUT", f"{SUB}/new-sub", {"json": destination(skipValidation="yes")}, 400),
    ("sub-batch-0", "PUT", f"{SUB}/new-sub", {"json": destination(maxEventsPerBatch=0)}, 400),
    ("sub-batch-5001", "PUT", f"{SUB}/new-sub", {"json": destination(maxEventsPerBatch=5001)}, 400),
    ("sub-bad-delivery-schema", "PUT", f"{SUB}/new-sub", {"json": hook_body(eventDeliverySchema="Xml")}, 400),
    ("sub-unknown-operator", "PUT", f"{SUB}/new-sub",
     {"json": hook_body(filter={"advancedFilters": [{"operatorType": "Like", "key": "data.x", "values": ["a"]}]})}, 400),
    ("sub-event-types-string", "PUT", f"{SUB}/new-sub", {"json": hook_body(filter={"includedEventTypes": "NewOrder"})}, 400),
    ("sub-filter-not-object", "PUT", f"{SUB}/new-sub", {"json": hook_body(filter=["NewOrder"])}, 400),
    ("sub-attempts-0", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy={"maxDeliveryAttempts": 0})}, 400),
    ("sub-attempts-31", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy={"maxDeliveryAttempts": 31})}, 400),
    ("sub-attempts-string", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy={"maxDeliveryAttempts": "3"})}, 400),
    ("sub-attempts-bool", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy={"maxDeliveryAttempts": True})}, 400),
    ("sub-ttl-0", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy={"eventTimeToLiveInMinutes": 0})}, 400),
    ("sub-ttl-1441", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy={"eventTimeToLiveInMinutes": 1441})}, 400),
    ("sub-retry-not-object", "PUT", f"{SUB}/new-sub", {"json": hook_body(retryPolicy=30)}, 400),
    ("sub-dead-letter-not-object", "PUT", f"{SUB}/new-sub", {"json": hook_body(deadLetterDestination="blob")}, 400),
    # Azure Resource Manager refuses request bodies over 4 MB; the emulator must not take them either.
    ("sub-over-4mb", "PUT", f"{SUB}/new-sub", {"json": hook_body(labels=["x" * (4 * MB + 1024)])}, 413),
    ("sub-wrong-method", "POST", f"{SUB}/sink", {"json": hook_body()}, 405),
    # Dead letters
    ("dl-id-not-a-number", "GET", f"{DL}/abc", {}, 404),
    ("dl-unknown-id", "GET", f"{DL}/999999", {}, 404),
    ("dl-redeliver-unknown-id", "POST", f"{DL}/999999/redeliver", {}, 404),
    ("dl-redeliver-negative-id", "POST", f"{DL}/-1/redeliver", {}, 404),
    ("dl-top-0", "GET", DL, {"params": {"top": 0}}, 400),
    ("dl-top-1001", "GET", DL, {"params": {"top": 1001}}, 400),
    ("dl-top-text", "GET", DL, {"params": {"top": "ten"}}, 400),
    ("dl-skip-negative", "GET", DL, {"params": {"skip": -1}}, 400),
    ("dl-unknown-subscription", "GET", f"{SUB}/nobody/deadLetters", {}, 404),
    ("dl-redeliver-unknown-subscription", "POST", f"{SUB}/nobody/deadLetters/redeliver", {}, 404),
    ("dl-purge-unknown-subscription", "DELETE", f"{SUB}/nobody/deadLetters", {}, 404),
    ("dl-unknown-topic", "GET", "/topics/nowhere/eventSubscriptions/sink/deadLetters", {}, 404),
    ("unknown-path", "GET", "/no/such/path", {}, 404),
]


@pytest.fixture(scope="module")
def setup(module_processes):
    """A broker with a subscriber that holds every request while the bad requests come in, and a
    few events accepted before them that are waiting for it."""
    # Hanging rather than refusing keeps the waiting events out of the growing retry schedule.
    hook = Webhook(hang(60)).start()
    broker = Broker.of(module_processes.broker(time_scale=SCALE, BROKER_DELIVERY_TIMEOUT=60))
    broker.subscribe("default", "sink", subscription(hook.url, skip_validation=True))
    resp = broker.request("PUT", "/topics/ce-input", json={"properties": {"inputSchema": "CloudEventSchemaV1_0"}})
    assert resp.status_code == 201, resp.text
    before = broker.publish_ok([event(data={"n": n}) for n in range(5)])
    yield SimpleNamespace(broker=broker, hook=hook, before=before)
    hook.stop()


def state(broker: Broker) -> dict:
    """Everything a bad request could have half-applied."""
    return {
        "events": broker.query("SELECT COUNT(*) AS n FROM events")[0]["n"],
        "deliveries": broker.query("SELECT COUNT(*) AS n FROM deliveries")[0]["n"],
        "topics": sorted(t["name"] for t in broker.request("GET", "/topics").json()["value"]),
        "subscriptions": broker.query("SELECT parent, name, properties, state FROM resources WHERE kind='subscription' AND deleted_at IS NULL ORDER BY parent, name"),
    }


def assert_json_error(resp, status: int) -> dict:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:300]}"
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_request_gets_a_json_4xx_and_changes_nothing(setup, method, path, kwargs, status):
    broker = setup.broker
    before = state(broker)
    assert_json_error(broker.request(method, path, **kwargs), status)
    assert state(broker) == before
    assert broker.request("GET", "/healthz").status_code == 200


def test_a_subscription_whose_endpoint_refuses_the_handshake_is_refused_with_the_reason(setup):
    broker = setup.broker
    port = free_port()
    resp = broker.request("PUT", f"{SUB}/unreachable", json=subscription(f"http://127.0.0.1:{port}/events"))
    error = assert_json_error(resp, 400)
    assert error["code"] == "UrlValidationFailed"
    assert "refused" in error["message"].lower()
    assert "timed out" not in error["message"].lower(), "a refused connection is reported as a timeout"
    got = broker.request("GET", f"{SUB}/unreachable").json()
    assert got["properties"]["provisioningState"] == "Failed"  # as Azure keeps it, until deleted
    published = broker.request("POST", "/publish", json={"eventType": "Anything"})
    assert published.status_code == 202
    assert broker.query("SELECT COUNT(*) AS n FROM named_deliveries WHERE subscription_name='unreachable'") == [{"n": 0}], (
        "a subscription that failed its handshake was routed an event")


def test_events_accepted_before_the_bad_requests_are_delivered_exactly_once(setup):
    broker, hook = setup.broker, setup.hook
    after = broker.publish_ok([event(data={"n": "after"})])
    assert 1 <= len(hook.deliveries()) <= 4 and not hook.ids(), "the subscriber answered during the barrage"
    hook.respond(always(200))  # the subscriber recovers after the barrage:
    hook.release()  # the requests it held are dropped unanswered, and retried
    hook.wait_for_ids(setup.before + after, 20)
    total = broker.query("SELECT COUNT(*) AS n FROM named_deliveries WHERE subscription_name='sink'")[0]["n"]
    assert broker.wait_settled("default", "sink", total) == {"delivered": total}
    delivered = hook.ids()
    assert sorted(set(delivered)) == sorted(delivered), "an event was delivered twice"
    stray = [e for r in hook.deliveries() for e in r.events if e["data"] == {"case": "bad-input"}]
    assert not stray, "an event from a refused request was delivered"
    wait_until(lambda: broker.request("GET", "/readyz").status_code == 200, 5, "the broker to report ready")
