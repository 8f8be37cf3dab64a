"""The Azure Resource Manager router: every kind through one dispatch, ARM's bodies and status codes,
the short routes as aliases, and domains and custom input schemas end to end through the store."""

from __future__ import annotations

import pytest

from broker.arm import parse
from broker.errors import ApiError
from broker.resources import DOMAIN, DOMAIN_TOPIC, NAMESPACE, NAMESPACE_TOPIC, SUBSCRIPTION, TOPIC

RG = "/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.EventGrid"
HOOK = {"endpointType": "WebHook", "properties": {"endpointUrl": "http://127.0.0.1:9/hook", "skipValidation": True}}


def sub_body(**props):
    return {"properties": {"destination": HOOK, **props}}


@pytest.mark.parametrize("path, chain, collection, action", [
    (f"{RG}/topics/orders", [(TOPIC, "orders")], None, None),
    (f"{RG}/topics", [], TOPIC, None),
    ("/subscriptions/sub-1/providers/Microsoft.EventGrid/domains", [], DOMAIN, None),
    (f"{RG}/topics/orders/listKeys", [(TOPIC, "orders")], None, "listkeys"),
    (f"{RG}/domains/shop/topics/europe", [(DOMAIN, "shop"), (DOMAIN_TOPIC, "europe")], None, None),
    (f"{RG}/domains/shop/topics/europe/providers/Microsoft.EventGrid/eventSubscriptions/mail",
     [(DOMAIN, "shop"), (DOMAIN_TOPIC, "europe"), (SUBSCRIPTION, "mail")], None, None),
    (f"{RG}/domains/shop/topics/europe/eventSubscriptions", [(DOMAIN, "shop"), (DOMAIN_TOPIC, "europe")], SUBSCRIPTION, None),
    (f"{RG}/namespaces/ns1/topics/t1/eventSubscriptions/s1",
     [(NAMESPACE, "ns1"), (NAMESPACE_TOPIC, "t1"), (SUBSCRIPTION, "s1")], None, None),
    ("/topics/orders/eventSubscriptions/mail/getFullUrl", [(TOPIC, "orders"), (SUBSCRIPTION, "mail")], None, "getfullurl"),
    ("/SUBSCRIPTIONS/x/RESOURCEGROUPS/y/PROVIDERS/microsoft.eventgrid/TOPICS/orders", [(TOPIC, "orders")], None, None),
])
def test_a_path_is_parsed_once_into_the_kinds_and_names_it_names(path, chain, collection, action):
    target = parse(path)
    assert (target.chain, target.collection, target.action) == (chain, collection, action)


@pytest.mark.parametrize("path", ["/subscriptions/x/resourceGroups/y/providers/Microsoft.EventGrid/queues/q",
                                  "/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/a",
                                  "/topics/orders/eventSubscriptions/mail/nope/more"])
def test_a_path_naming_no_event_grid_type_is_a_404(path):
    if path.endswith("/nope/more"):
        assert parse(path).rest == ["nope", "more"]  # handed to the subscription's own extensions
        return
    with pytest.raises(ApiError) as raised:
        parse(path)
    assert raised.value.status == 404


def test_a_topic_created_through_arm_is_a_tracked_resource_with_keys_and_the_emulators_endpoint(client):
    resp = client.put(f"{RG}/topics/orders?api-version=2025-02-15", json={"location": "westeurope", "tags": {"env": "dev"}})
    assert resp.status_code == 201
    body = resp.json
    assert body["id"] == f"{RG}/topics/orders" and body["name"] == "orders" and body["type"] == "Microsoft.EventGrid/topics"
    assert body["location"] == "westeurope" and body["tags"] == {"env": "dev"}
    props = body["properties"]
    assert props["provisioningState"] == "Succeeded" and props["inputSchema"] == "EventGridSchema"
    assert props["endpoint"] == "http://localhost/topics/orders/api/events" and "keys" not in props
    keys = client.post(f"{RG}/topics/orders/listKeys").json
    assert keys["key1"] and keys["key2"] and keys["key1"] != keys["key2"]  # Azure gives every topic two keys
    again = client.put(f"{RG}/topics/orders", json={"location": "westeurope"})
    assert again.status_code == 201  # as Azure answers every PUT through ARM (the SDK's poller takes nothing else)
    assert client.post(f"{RG}/topics/orders/listKeys").json == keys  # an update keeps them
    assert client.put("/topics/orders", json={}).status_code == 200  # the short route answers an update as REST does


def test_lists_by_resource_group_and_by_subscription_show_only_what_is_under_them(client):
    client.put(f"{RG}/topics/orders", json={"location": "x"})
    client.put("/subscriptions/sub-1/resourceGroups/rg-2/providers/Microsoft.EventGrid/topics/other", json={"location": "x"})
    by_rg = [t["name"] for t in client.get(f"{RG}/topics").json["value"]]
    by_sub = [t["name"] for t in client.get("/subscriptions/sub-1/providers/Microsoft.EventGrid/topics").json["value"]]
    assert by_rg == ["orders"] and sorted(by_sub) == ["orders", "other"]
    assert client.get("/subscriptions/sub-1/resourceGroups/rg-2/providers/Microsoft.EventGrid/topics/orders").status_code == 404
    conflict = client.put("/subscriptions/sub-1/resourceGroups/rg-2/providers/Microsoft.EventGrid/topics/orders", json={"location": "x"})
    assert conflict.status_code == 409 and conflict.json["error"]["code"] == "Conflict"


def test_patch_updates_tags_and_settings_and_a_missing_resource_is_404(client):
    client.put(f"{RG}/topics/orders", json={"location": "x"})
    resp = client.patch(f"{RG}/topics/orders", json={"tags": {"a": "b"}, "properties": {"publicNetworkAccess": "Disabled"}})
    assert resp.status_code == 200 and resp.json["tags"] == {"a": "b"}
    assert resp.json["properties"]["publicNetworkAccess"] == "Disabled" and resp.json["properties"]["inputSchema"] == "EventGridSchema"
    assert client.patch(f"{RG}/topics/nope", json={"tags": {}}).status_code == 404
    bad = client.patch(f"{RG}/topics/orders", json={"properties": {"publicNetworkAccess": "Sometimes"}})
    assert bad.status_code == 400 and "publicNetworkAccess" in bad.json["error"]["message"]


def test_delete_is_202_then_204_and_takes_the_subscriptions_with_it(client, engine):
    client.put(f"{RG}/topics/orders", json={"location": "x"})
    assert client.put(f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions/mail", json=sub_body()).status_code == 201
    assert client.delete(f"{RG}/topics/orders").status_code == 202  # ARM's accepted delete, done at once
    assert client.delete(f"{RG}/topics/orders").status_code == 204
    assert client.get(f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions/mail").status_code == 404
    assert all(s.scope.name != "orders" for s in engine.registry.subscriptions())


def test_event_subscriptions_are_the_same_resource_as_extension_or_child_paths_and_short_routes(client):
    client.put(f"{RG}/topics/orders", json={"location": "x"})
    created = client.put(f"{RG}/topics/orders/eventSubscriptions/mail", json=sub_body())
    assert created.status_code == 201
    ext = client.get(f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions/mail").json
    short = client.get("/topics/orders/eventSubscriptions/mail").json
    assert ext == short == created.json
    assert ext["id"] == f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions/mail"
    assert ext["properties"]["topic"] == f"{RG}/topics/orders"
    url = client.post(f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions/mail/getFullUrl")
    assert url.json == {"endpointUrl": "http://127.0.0.1:9/hook"}
    listed = client.get(f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions").json["value"]
    every = client.get("/subscriptions/sub-1/providers/Microsoft.EventGrid/eventSubscriptions").json["value"]
    assert [s["name"] for s in listed] == ["mail"] and "mail" in [s["name"] for s in every]


def test_an_event_subscription_patch_changes_only_what_it_names(client):
    client.put(f"{RG}/topics/orders", json={"location": "x"})
    client.put(f"{RG}/topics/orders/eventSubscriptions/mail", json=sub_body(filter={"includedEventTypes": ["A"]}))
    resp = client.patch(f"{RG}/topics/orders/providers/Microsoft.EventGrid/eventSubscriptions/mail",
                        json={"filter": {"includedEventTypes": ["B"]}})  # the SDK's update body: flat, no "properties"
    assert resp.status_code == 201
    assert resp.json["properties"]["filter"] == {"includedEventTypes": ["B"]}
    assert resp.json["properties"]["destination"]["properties"]["endpointUrl"] == "http://127.0.0.1:9/hook"


def test_domain_topics_come_with_their_first_subscription_and_go_with_their_last(client):
    client.put(f"{RG}/domains/shop", json={"location": "x"})
    path = f"{RG}/domains/shop/topics/europe/providers/Microsoft.EventGrid/eventSubscriptions/mail"
    assert client.put(path, json=sub_body()).status_code == 201
    topic = client.get(f"{RG}/domains/shop/topics/europe").json
    assert topic["type"] == "Microsoft.EventGrid/domains/topics" and topic["properties"]["provisioningState"] == "Succeeded"
    assert client.delete(path).status_code == 202
    assert client.get(f"{RG}/domains/shop/topics/europe").status_code == 404


def test_a_domain_that_manages_its_own_topics_needs_them_created_first(client):
    client.put(f"{RG}/domains/shop", json={"location": "x", "properties": {
        "autoCreateTopicWithFirstSubscription": False, "autoDeleteTopicWithLastSubscription": False}})
    path = f"{RG}/domains/shop/topics/europe/providers/Microsoft.EventGrid/eventSubscriptions/mail"
    assert client.put(path, json=sub_body()).status_code == 404
    assert client.put(f"{RG}/domains/shop/topics/europe").status_code == 201
    assert client.put(path, json=sub_body()).status_code == 201
    assert client.delete(path).status_code == 202
    assert client.get(f"{RG}/domains/shop/topics/europe").status_code == 200  # kept: the domain deletes none itself


def test_a_failed_subscription_put_leaves_no_auto_created_domain_topic_behind(client):
    client.put(f"{RG}/domains/shop", json={"location": "x"})
    bad = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "nope"}}}}
    assert client.put(f"{RG}/domains/shop/topics/europe/eventSubscriptions/mail", json=bad).status_code == 400
    assert client.get(f"{RG}/domains/shop/topics/europe").status_code == 404


def _deliveries(engine):
    return sorted((r["subscription_name"], r["event_id"]) for r in engine.store.read(
        "SELECT d.subscription_name, e.event_id FROM named_deliveries d JOIN events e ON e.seq = d.event_seq"))


def _eg_event(event_id, topic=None, event_type="T"):
    event = {"id": event_id, "eventType": event_type, "subject": "s", "eventTime": "2024-01-01T00:00:00Z", "data": {"n": 1}}
    if topic is not None:
        event["topic"] = topic
    return event


def test_a_domain_publish_routes_each_event_to_its_domain_topics_and_the_domains_own_subscriptions(client, engine):
    client.put(f"{RG}/domains/shop", json={"location": "x"})
    key = client.post(f"{RG}/domains/shop/listKeys").json["key1"]
    client.put(f"{RG}/domains/shop/topics/europe/eventSubscriptions/europe-sub", json=sub_body())
    client.put(f"{RG}/domains/shop/topics/america/eventSubscriptions/america-sub", json=sub_body())
    client.put(f"{RG}/domains/shop/eventSubscriptions/all-sub", json=sub_body())
    events = [_eg_event("e1", "europe"), _eg_event("e2", "america"), _eg_event("e3", "asia")]
    assert client.post("/domains/shop/api/events", json=events).status_code == 401
    assert client.post("/domains/shop/api/events", json=events, headers={"aeg-sas-key": key}).status_code == 200
    assert _deliveries(engine) == [("all-sub", "e1"), ("all-sub", "e2"), ("all-sub", "e3"), ("america-sub", "e2"), ("europe-sub", "e1")]


@pytest.mark.parametrize("events, target", [
    ([_eg_event("e1")], "[0].topic"),
    ([_eg_event("e1", "europe"), _eg_event("e2", "")], "[1].topic"),
    ([_eg_event("e1", "not a name!")], "[0].topic"),
])
def test_a_domain_publish_without_a_valid_domain_topic_is_refused_whole(client, engine, events, target):
    client.put("/domains/shop", json={"properties": {"keys": []}})
    resp = client.post("/domains/shop/api/events", json=events)
    assert resp.status_code == 400 and resp.json["error"]["details"][0]["target"] == target
    assert engine.store.deliveries.event_count() == 0


def test_a_publish_to_a_domain_that_does_not_exist_is_404(client):
    assert client.post("/domains/nowhere/api/events", json=[_eg_event("e1", "europe")]).status_code == 404


def test_cloudevents_to_a_domain_name_their_domain_topic_in_source(client, engine):
    client.put("/domains/shop", json={"properties": {"inputSchema": "CloudEventSchemaV1_0", "keys": []}})
    client.put("/domains/shop/topics/europe/eventSubscriptions/europe-sub", json=sub_body())
    event = {"specversion": "1.0", "id": "c1", "source": "europe", "type": "T", "data": {}}
    resp = client.post("/domains/shop/api/events", json=event, content_type="application/cloudevents+json")
    assert resp.status_code == 200 and _deliveries(engine) == [("europe-sub", "c1")]


MAPPING = {"inputSchemaMappingType": "Json", "properties": {
    "id": {"sourceField": "myId"}, "eventTime": {"sourceField": "when"},
    "eventType": {"sourceField": "kind", "defaultValue": "Default.Kind"}, "subject": {"defaultValue": "orders"},
    "dataVersion": {"defaultValue": "2.0"}}}


def test_a_custom_schema_topic_maps_each_event_and_filters_see_the_mapped_fields(client, engine):
    created = client.put("/topics/custom", json={"properties": {"inputSchema": "CustomEventSchema", "inputSchemaMapping": MAPPING}})
    assert created.status_code == 201 and created.json["properties"]["inputSchemaMapping"]["properties"]["id"] == {"sourceField": "myId"}
    client.put("/topics/custom/eventSubscriptions/as-published", json=sub_body())
    client.put("/topics/custom/eventSubscriptions/mapped", json=sub_body(eventDeliverySchema="EventGridSchema",
                                                                         filter={"includedEventTypes": ["Default.Kind"]}))
    raw = [{"myId": "a1", "when": "2024-05-01T10:00:00Z", "price": 3}, {"myId": "a2", "kind": "Other"}]
    assert client.post("/topics/custom/api/events", json=raw).status_code == 200
    assert _deliveries(engine) == [("as-published", "a1"), ("as-published", "a2"), ("mapped", "a1")]
    assert client.get("/topics/custom/eventSubscriptions/as-published").json["properties"]["eventDeliverySchema"] == "CustomInputSchema"


def test_a_custom_schema_renders_as_published_mapped_and_as_a_cloudevent():
    from broker import schemas

    mapping = schemas.compile_mapping(MAPPING)
    [event] = schemas.parse(b'[{"myId": "a1", "when": "2024-05-01T10:00:00Z", "kind": "K", "price": 3}]', {}, "CustomEventSchema", mapping)
    path = "/subscriptions/s/resourceGroups/r/providers/Microsoft.EventGrid/topics/custom"
    assert schemas.render(event, "CustomInputSchema", path) == {"myId": "a1", "when": "2024-05-01T10:00:00Z", "kind": "K", "price": 3}
    mapped = schemas.render(event, "EventGridSchema", path)
    assert (mapped["id"], mapped["eventType"], mapped["subject"], mapped["eventTime"], mapped["dataVersion"], mapped["topic"]) == (
        "a1", "K", "orders", "2024-05-01T10:00:00Z", "2.0", path)
    assert mapped["data"]["price"] == 3  # the published event is the data, as Azure maps it
    cloud = schemas.render(event, "CloudEventSchemaV1_0", path)
    assert (cloud["type"], cloud["source"], cloud["id"]) == ("K", path, "a1")


@pytest.mark.parametrize("mapping, target", [
    (None, "properties.inputSchemaMapping"),
    ({"inputSchemaMappingType": "Xml", "properties": {}}, "properties.inputSchemaMapping.inputSchemaMappingType"),
    ({"inputSchemaMappingType": "Json", "properties": {"colour": {"sourceField": "c"}}}, "properties.inputSchemaMapping.properties.colour"),
    ({"inputSchemaMappingType": "Json", "properties": {"id": {"defaultValue": "x"}, "eventType": {"defaultValue": "T"},
                                                       "subject": {"defaultValue": "s"}}}, "properties.inputSchemaMapping.properties.id.defaultValue"),
    ({"inputSchemaMappingType": "Json", "properties": {"subject": {"defaultValue": "s"}}}, "properties.inputSchemaMapping.properties.eventType"),
])
def test_a_bad_mapping_is_refused_naming_the_field_and_creates_nothing(client, engine, mapping, target):
    resp = client.put("/topics/custom", json={"properties": {"inputSchema": "CustomEventSchema", "inputSchemaMapping": mapping}})
    assert resp.status_code == 400 and resp.json["error"]["details"][0]["target"] == target
    assert engine.registry.topic("custom") is None


def test_a_custom_event_missing_a_mapped_field_without_a_default_is_refused_naming_event_and_field(client, engine):
    mapping = {"inputSchemaMappingType": "Json", "properties": {"eventType": {"sourceField": "kind"}, "subject": {"defaultValue": "s"}}}
    client.put("/topics/custom", json={"properties": {"inputSchema": "CustomEventSchema", "inputSchemaMapping": mapping}})
    resp = client.post("/topics/custom/api/events", json=[{"kind": "A"}, {"other": 1}])
    assert resp.status_code == 400
    assert resp.json["error"]["details"][0]["target"] == "[1].kind" and "event index 1" in resp.json["error"]["message"]
    assert engine.store.deliveries.event_count() == 0


@pytest.mark.parametrize("name", ["ÄÖÜ²", "ab", "x" * 51, "has space", "dot.ted"])
def test_resource_names_are_azures_ascii_names_only(client, engine, name):
    resp = client.put(f"/topics/{name}")
    assert resp.status_code in (400, 404) and resp.json["error"]["code"] in ("InvalidResourceName", "NotFound")
    assert engine.registry.topic(name) is None


def test_a_domain_event_may_name_its_domain_topic_by_full_resource_id(client, engine):
    client.put("/domains/shop", json={"properties": {"keys": []}})
    client.put("/domains/shop/topics/europe/eventSubscriptions/europe-sub", json=sub_body())
    path = engine.registry.get(DOMAIN, "shop").path + "/topics/europe"
    assert client.post("/domains/shop/api/events", json=[_eg_event("e1", path)]).status_code == 200
    assert _deliveries(engine) == [("europe-sub", "e1")]
