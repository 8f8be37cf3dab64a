"""Domains, custom input schemas and ARM-created topics against a real broker process: what reaches
the subscriber, and what survives a restart."""

from __future__ import annotations

import pytest
import requests

from tests.integration.processes import Broker, Webhook, event, subscription

pytestmark = pytest.mark.integration

ARM = "/subscriptions/0ff1ce00-0000-0000-0000-000000000001/resourceGroups/shop-rg/providers/Microsoft.EventGrid"


@pytest.fixture(scope="module")
def broker(module_processes):
    return Broker.of(module_processes.broker(time_scale=0.001))


@pytest.fixture
def hook():
    hook = Webhook().start()
    yield hook
    hook.stop()


def ok(resp: requests.Response, *statuses: int) -> dict:
    assert resp.status_code in (statuses or (200, 201)), resp.text
    return resp.json() if resp.content else {}


def test_domain_events_reach_their_domain_topic_and_domain_subscriptions_with_the_domain_topics_arm_path(broker, hook):
    ok(broker.request("PUT", f"{ARM}/domains/retail", json={"location": "westeurope"}))
    key = ok(broker.request("POST", f"{ARM}/domains/retail/listKeys"))["key1"]
    ok(broker.request("PUT", f"{ARM}/domains/retail/topics/stores/providers/Microsoft.EventGrid/eventSubscriptions/stores-sub",
                      json=subscription(hook.url + "?who=stores")))
    ok(broker.request("PUT", f"{ARM}/domains/retail/providers/Microsoft.EventGrid/eventSubscriptions/all-sub",
                      json=subscription(hook.url + "?who=all")))
    one, two = event(), event()
    one["topic"], two["topic"] = "stores", "Warehouses"
    endpoint = ok(broker.request("GET", f"{ARM}/domains/retail"))["properties"]["endpoint"]
    assert endpoint.endswith("/domains/retail/api/events")
    ok(requests.post(endpoint, json=[one, two], headers={"aeg-sas-key": key}, timeout=10), 200)
    hook.wait_for(lambda reqs: len(reqs) == 3, 10, "three deliveries")
    got = {(r.path.split("who=")[1], e["id"]): e["topic"] for r in hook.deliveries() for e in r.events}
    assert got == {
        ("stores", one["id"]): f"{ARM}/domains/retail/topics/stores",
        ("all", one["id"]): f"{ARM}/domains/retail/topics/stores",
        ("all", two["id"]): f"{ARM}/domains/retail/topics/Warehouses",
    }


def test_a_custom_schema_topic_delivers_as_published_and_mapped(broker, hook):
    mapping = {"inputSchemaMappingType": "Json", "properties": {
        "id": {"sourceField": "orderRef"}, "eventType": {"sourceField": "action", "defaultValue": "Order.Changed"},
        "subject": {"sourceField": "shop", "defaultValue": "unknown"}}}
    ok(broker.request("PUT", "/topics/legacy-orders", json={"properties": {"inputSchema": "CustomEventSchema", "inputSchemaMapping": mapping}}))
    ok(broker.request("PUT", "/topics/legacy-orders/eventSubscriptions/raw", json={"properties": {
        "eventDeliverySchema": "CustomInputSchema",
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": hook.url + "?as=raw"}}}}))
    ok(broker.request("PUT", "/topics/legacy-orders/eventSubscriptions/mapped", json={"properties": {
        "eventDeliverySchema": "CloudEventSchemaV1_0", "filter": {"includedEventTypes": ["Order.Placed"]},
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": hook.url + "?as=cloud"}}}}))
    published = [{"orderRef": "R-1", "action": "Order.Placed", "shop": "Leeds", "lines": [1, 2]}, {"orderRef": "R-2"}]
    ok(broker.request("POST", "/topics/legacy-orders/api/events", json=published), 200)
    hook.wait_for(lambda reqs: len(reqs) == 3, 10, "three deliveries")
    raw = sorted((e for r in hook.deliveries() if "as=raw" in r.path for e in r.events), key=lambda e: e["orderRef"])
    assert raw == published
    [cloud] = [r for r in hook.deliveries() if "as=cloud" in r.path]
    ce = cloud.events[0]
    assert cloud.headers["content-type"].startswith("application/cloudevents+json")
    assert (ce["id"], ce["type"], ce["subject"], ce["data"]) == ("R-1", "Order.Placed", "Leeds", published[0])


def test_resources_created_through_arm_survive_a_restart(module_processes, hook):
    proc = module_processes.broker(name="restarted", time_scale=0.001)
    broker = Broker.of(proc)
    ok(broker.request("PUT", f"{ARM}/topics/kept", json={"location": "uksouth", "tags": {"team": "a"}}))
    ok(broker.request("PUT", f"{ARM}/domains/kept-domain/topics/inner/eventSubscriptions/kept-sub", json={"location": "x"}), 404)
    ok(broker.request("PUT", f"{ARM}/domains/kept-domain", json={"location": "uksouth"}))
    ok(broker.request("PUT", f"{ARM}/domains/kept-domain/topics/inner/eventSubscriptions/kept-sub", json=subscription(hook.url)))
    before = [ok(broker.request("GET", p)) for p in (f"{ARM}/topics/kept", f"{ARM}/domains/kept-domain/topics/inner",
                                                     f"{ARM}/domains/kept-domain/topics/inner/eventSubscriptions/kept-sub")]
    proc.stop()
    proc.start()
    after = [ok(broker.request("GET", p)) for p in (f"{ARM}/topics/kept", f"{ARM}/domains/kept-domain/topics/inner",
                                                    f"{ARM}/domains/kept-domain/topics/inner/eventSubscriptions/kept-sub")]
    assert after == before


def test_a_namespace_push_subscription_delivers_cloudevents_to_its_webhook_through_the_filters(broker, hook):
    ok(broker.request("PUT", f"{ARM}/namespaces/shipping", json={"location": "x"}))
    ok(broker.request("PUT", f"{ARM}/namespaces/shipping/topics/parcels", json={}))
    ok(broker.request("PUT", f"{ARM}/namespaces/shipping/topics/parcels/eventSubscriptions/notifier", json={"properties": {
        "deliveryConfiguration": {"deliveryMode": "Push", "push": {"maxDeliveryCount": 3, "destination": {
            "endpointType": "WebHook", "properties": {"endpointUrl": hook.url}}}},
        "filtersConfiguration": {"includedEventTypes": ["Parcel.Shipped"]}}}))
    key = ok(broker.request("POST", f"{ARM}/namespaces/shipping/listKeys"))["key1"]
    events = [{"specversion": "1.0", "id": f"n{i}", "source": "/shipping", "type": t, "data": {"i": i}}
              for i, t in enumerate(("Parcel.Shipped", "Parcel.Lost", "Parcel.Shipped"))]
    resp = requests.post(f"{broker.url}/namespaces/shipping/topics/parcels:publish?api-version=2024-06-01", json=events, timeout=10,
                         headers={"Authorization": f"SharedAccessKey {key}", "Content-Type": "application/cloudevents-batch+json"})
    assert resp.status_code == 200 and resp.json() == {}
    hook.wait_for_ids(["n0", "n2"], 10)
    assert {r.headers["content-type"].split(";")[0] for r in hook.deliveries()} == {"application/cloudevents+json"}
    assert sorted(e["id"] for r in hook.deliveries() for e in r.events) == ["n0", "n2"]
    assert hook.quiet_for(0.3, 2)  # the filtered-out event never comes
