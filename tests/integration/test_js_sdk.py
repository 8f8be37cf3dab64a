"""The JavaScript SDK (@azure/eventgrid, pinned in tests/js/package-lock.json) against a live broker.

`npm ci` installs the pinned package once into the pytest cache (keyed by the lockfile); each test
runs tests/js/publish.js -- an application's few lines of EventGridPublisherClient -- with node,
in the SDK's "EventGrid", "CloudEvent" and "Custom" modes, with a key or a SAS token made by
generateSharedAccessSignature, over plain http with `allowInsecureConnection: true`, and checks what
a recording webhook received.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.arm_support import Arm, domain_id, domain_topic_id, topic_id
from tests.integration.npm_support import npm_ci
from tests.integration.processes import REPO
from tests.integration.sdk_support import RecordingSubscriber, wire

pytestmark = pytest.mark.integration

JS = REPO / "tests" / "js"
NODE_TIMEOUT = 60.0
CREDENTIALS = ["key", "sas"]


@pytest.fixture(scope="session")
def node_modules(request) -> Path:
    return npm_ci(request.config, JS, "@azure/eventgrid")


@pytest.fixture(scope="module")
def broker(sdk_broker):
    return sdk_broker


def publish(node_modules: Path, endpoint: str, schema: str, key: str, events: list[dict], *,
            credential: str = "key", allow_insecure: bool = True) -> tuple[int, dict]:
    """Run tests/js/publish.js; its exit code and the JSON line it printed."""
    spec = {"endpoint": endpoint, "schema": schema, "key": key, "credential": credential, "events": events,
            "allowInsecureConnection": allow_insecure}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_PATH": str(node_modules)}
    result = subprocess.run(["node", str(JS / "publish.js"), json.dumps(spec)], env=env, capture_output=True, text=True,
                            timeout=NODE_TIMEOUT)
    lines = result.stdout.strip().splitlines()
    assert lines, f"publish.js printed nothing (exit {result.returncode}):\n{result.stderr}"
    return result.returncode, json.loads(lines[-1])


def published(node_modules: Path, *args, **kwargs) -> None:
    code, out = publish(node_modules, *args, **kwargs)
    assert (code, out) == (0, {"sent": len(args[3])}), out


def notifications(subscriber: RecordingSubscriber, path: str) -> list[dict]:
    return [e for r in subscriber.received(path, lambda r: r.is_notification) for e in r.events()]


# -- EventGrid and CloudEvent modes on custom topics -----------------------------------------------


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_eventgrid_mode_events_are_delivered_as_published(broker, subscriber, node_modules, credential):
    wired = wire(broker, subscriber, f"js-eventgrid-{credential}", "EventGridSchema", max_events_per_batch=10)
    events = [
        {"id": f"js-eg-{credential}-1", "subject": "/orders/1", "eventType": "Contoso.Orders.Created",
         "eventTime": "2026-01-31T12:00:00.000Z", "data": {"orderId": "1", "total": 33.5}, "dataVersion": "1.0"},
        {"id": f"js-eg-{credential}-2", "subject": "/orders/2", "eventType": "Contoso.Orders.Shipped",
         "eventTime": "2026-01-31T12:00:01.000Z", "data": {"orderId": "2", "note": "Zoë"}, "dataVersion": "2.0"},
    ]

    published(node_modules, broker.endpoint(wired.topic), "EventGrid", wired.key, events, credential=credential)

    requests_ = subscriber.wait_for_events(wired.path, {e["id"] for e in events})
    delivered = {e["id"]: e for r in requests_ for e in r.json()}
    for sent in events:
        assert delivered[sent["id"]] == {**sent, "topic": topic_id(wired.topic), "metadataVersion": "1"}


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_cloudevent_mode_events_are_delivered_with_their_extensions(broker, subscriber, node_modules, credential):
    wired = wire(broker, subscriber, f"js-cloudevent-{credential}", "CloudEventSchemaV1_0")
    event = {"id": f"js-ce-{credential}", "source": "/contoso/warehouse", "type": "Contoso.Items.Shipped",
             "subject": "items/42", "time": "2026-01-31T12:00:00.000Z", "data": {"parcel": "P-1"},
             "extensionAttributes": {"tenant": "contoso"}}

    published(node_modules, broker.endpoint(wired.topic), "CloudEvent", wired.key, [event], credential=credential)

    [request] = subscriber.wait_for_events(wired.path, {event["id"]})
    delivered = request.json()
    assert request.headers["content-type"].startswith("application/cloudevents+json")
    assert {k: delivered.get(k) for k in ("specversion", "id", "source", "type", "subject", "data", "tenant", "datacontenttype")} == {
        "specversion": "1.0", "id": event["id"], "source": "/contoso/warehouse", "type": "Contoso.Items.Shipped",
        "subject": "items/42", "data": {"parcel": "P-1"}, "tenant": "contoso", "datacontenttype": "application/json"}
    assert delivered["time"].startswith("2026-01-31T12:00:00")


def test_plain_http_is_refused_by_the_sdk_without_allow_insecure_connection(broker, subscriber, node_modules):
    wired = wire(broker, subscriber, "js-insecure", "EventGridSchema")
    event = {"id": "js-insecure-1", "subject": "/s", "eventType": "T", "data": {}, "dataVersion": "1"}

    code, out = publish(node_modules, broker.endpoint(wired.topic), "EventGrid", wired.key, [event], allow_insecure=False)

    assert code == 1
    assert "allowInsecureConnection" in out["error"]
    published(node_modules, broker.endpoint(wired.topic), "EventGrid", wired.key, [{**event, "id": "js-insecure-2"}])
    subscriber.wait_for_events(wired.path, {"js-insecure-2"})
    assert [e["id"] for e in notifications(subscriber, wired.path)] == ["js-insecure-2"]


def test_wrong_key_is_a_401_rest_error(broker, subscriber, node_modules):
    wired = wire(broker, subscriber, "js-wrong-key", "EventGridSchema")
    event = {"id": "js-wrong-key-1", "subject": "/s", "eventType": "T", "data": {}, "dataVersion": "1"}

    code, out = publish(node_modules, broker.endpoint(wired.topic), "EventGrid", "d3Jvbmcta2V5LWZvci10aGlzLXRvcGlj", [event])

    assert (code, out["statusCode"]) == (1, 401)
    assert out["error"]


# -- Custom mode on a custom-schema topic, EventGrid mode on a domain (issue 16) -------------------

MAPPING = {
    "id": {"sourceField": "orderRef"},
    "eventTime": {"sourceField": "placedAt"},
    "eventType": {"sourceField": "kind", "defaultValue": "Contoso.Orders.Unknown"},
    "subject": {"sourceField": "path", "defaultValue": "/orders"},
    "dataVersion": {"defaultValue": "1.0"},
}


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_custom_mode_events_are_mapped_onto_the_eventgrid_schema(broker, subscriber, node_modules, credential):
    arm, name = Arm(broker.url), f"js-custom-{credential}"
    topic = arm.create_topic(name, "CustomEventSchema", MAPPING)
    key, _ = arm.list_keys(topic_id(name))
    arm.subscribe(topic_id(name), "mapped", subscriber.url(f"/{name}/mapped"), delivery_schema="EventGridSchema")
    arm.subscribe(topic_id(name), "raw", subscriber.url(f"/{name}/raw"), delivery_schema="CustomInputSchema")
    full = {"orderRef": f"{name}-1", "placedAt": "2026-01-31T12:00:00Z", "kind": "Contoso.Orders.Created",
            "path": "/orders/1", "lines": [{"sku": "BK-1001", "quantity": 2}]}
    sparse = {"orderRef": f"{name}-2", "placedAt": "2026-01-31T12:00:01Z", "lines": []}  # defaults apply

    published(node_modules, topic["properties"]["endpoint"], "Custom", key, [full, sparse], credential=credential)

    mapped = {e["id"]: e for r in subscriber.wait_for_events(f"/{name}/mapped", {full["orderRef"], sparse["orderRef"]})
              for e in r.events()}
    assert mapped[full["orderRef"]] == {
        "id": full["orderRef"], "topic": topic_id(name), "subject": "/orders/1", "eventType": "Contoso.Orders.Created",
        "eventTime": "2026-01-31T12:00:00Z", "data": full, "dataVersion": "1.0", "metadataVersion": "1"}
    assert (mapped[sparse["orderRef"]]["eventType"], mapped[sparse["orderRef"]]["subject"]) == ("Contoso.Orders.Unknown", "/orders")
    assert mapped[sparse["orderRef"]]["data"] == sparse
    raw = notifications(subscriber, f"/{name}/raw")
    assert sorted(raw, key=lambda e: e["orderRef"]) == [full, sparse]  # CustomInputSchema: exactly as published


@pytest.mark.parametrize("credential", CREDENTIALS)
def test_eventgrid_mode_events_to_a_domain_reach_their_domain_topics(broker, subscriber, node_modules, credential):
    arm, name = Arm(broker.url), f"js-domain-{credential}"
    domain = arm.create_domain(name)
    key, _ = arm.list_keys(domain_id(name))
    arm.subscribe(domain_topic_id(name, "europe"), "recorder", subscriber.url(f"/{name}/europe"))
    arm.subscribe(domain_topic_id(name, "america"), "recorder", subscriber.url(f"/{name}/america"))
    events = [{"id": f"{name}-{region}", "topic": region, "subject": f"/orders/{region}", "eventType": "Contoso.Orders.Created",
               "data": {"region": region}, "dataVersion": "1.0"} for region in ("europe", "america")]

    published(node_modules, domain["properties"]["endpoint"], "EventGrid", key, events, credential=credential)

    for region in ("europe", "america"):
        [request] = subscriber.wait_for_events(f"/{name}/{region}", {f"{name}-{region}"})
        [event] = request.json()
        assert event["topic"] == domain_topic_id(name, region)
        assert event["data"] == {"region": region}
