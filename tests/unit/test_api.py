"""The HTTP surface through Flask's test client: publish, the prototype's API, management."""

from __future__ import annotations

import pytest

from broker import auth


def sub_body(endpoint="http://sub.test/events", **props):
    return {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint, "skipValidation": True}}, **props}}


def test_prototype_publish_works_verbatim_and_is_stored(client, engine):
    resp = client.post("/publish", data='{"eventType": "NewOrder", "data": {"orderId": 12345}}', content_type="application/json")
    assert resp.status_code == 202
    assert resp.json["status"] == "accepted" and resp.json["topic"] == "default"
    (row,) = engine.store.read("SELECT event_type, subject, body FROM events")
    assert row["event_type"] == "NewOrder" and b"12345" in row["body"]


def test_prototype_subscribe_registers_a_filtered_subscription(client, engine):
    resp = client.post("/subscribe", json={"eventType": "NewOrder", "endpoint": "http://order_processor:5001/events"})
    assert resp.status_code == 201
    again = client.post("/subscribe", json={"eventType": "NewOrder", "endpoint": "http://order_processor:5001/events"})
    assert again.status_code == 200 and again.json["subscription"] == resp.json["subscription"]
    client.post("/publish", json={"eventType": "NewOrder", "data": {}})
    client.post("/publish", json={"eventType": "Other", "data": {}})
    assert engine.store.deliveries.status_totals() == {"pending": 1}


@pytest.mark.parametrize(
    "path, body, code",
    [
        ("/publish", "not json", "InvalidJson"),
        ("/publish", "[]", "InvalidRequestBody"),
        ("/publish", '{"data": {}}', "InvalidEvent"),
        ("/publish", '{"eventType": 5}', "InvalidEvent"),
        ("/publish", '{"eventType": "A", "subject": 7}', "InvalidEvent"),
        ("/subscribe", '{"eventType": "A"}', "InvalidEndpoint"),
        ("/subscribe", '{"eventType": "A", "endpoint": "ftp://x/y"}', "InvalidEndpoint"),
        ("/subscribe", '{"eventType": "A", "endpoint": "not a url"}', "InvalidEndpoint"),
        ("/subscribe", '{"endpoint": "http://x/y"}', "InvalidSubscription"),
    ],
)
def test_prototype_api_rejects_bad_input_with_event_grid_error(client, engine, path, body, code):
    resp = client.post(path, data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == code and resp.json["error"]["message"]
    assert engine.store.read("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0
    assert engine.registry.subscriptions() == ()


def test_batch_with_one_bad_event_stores_nothing(client, engine):
    good = {"id": "1", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z", "data": {}, "dataVersion": "1"}
    bad = dict(good, id="2", eventTime="yesterday")
    resp = client.post("/api/events", json=[good, bad])
    assert resp.status_code == 400 and "[1]" in str(resp.json["error"])
    assert engine.store.deliveries.event_count() == 0


def test_topic_with_keys_refuses_anonymous_and_accepts_its_key(client):
    key = auth.generate_key()
    assert client.put("/topics/secure-topic", json={"properties": {"keys": [key]}}).status_code == 201
    event = [{"id": "1", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z", "data": {}, "dataVersion": "1"}]
    assert client.post("/topics/secure-topic/api/events", json=event).status_code == 401
    assert client.post("/topics/secure-topic/api/events", json=event, headers={"aeg-sas-key": "wrong"}).status_code == 401
    assert client.post("/topics/secure-topic/api/events", json=event, headers={"aeg-sas-key": key}).status_code == 200


def test_unknown_api_version_is_accepted(client):
    event = [{"id": "1", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z", "data": {}, "dataVersion": "1"}]
    assert client.post("/api/events?api-version=2099-01-01", json=event).status_code == 200


def test_a_new_api_version_on_every_request_grows_nothing(client, engine, caplog):
    from broker.ingress import MAX_API_VERSIONS_NOTED

    event = [{"id": "1", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z", "data": {}, "dataVersion": "1"}]
    with caplog.at_level("WARNING", logger="broker"):
        for i in range(MAX_API_VERSIONS_NOTED + 20):
            assert client.post(f"/api/events?api-version=2099-01-{i:03d}", json=event).status_code == 200
    assert len(engine.seen_api_versions) == MAX_API_VERSIONS_NOTED
    assert sum("api-version" in r.getMessage() for r in caplog.records) == MAX_API_VERSIONS_NOTED


def test_oversized_request_is_413(client):
    event = [{"id": "1", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z", "data": "x" * (1024 * 1024 + 10), "dataVersion": "1"}]
    resp = client.post("/api/events", json=event)
    assert resp.status_code == 413 and resp.json["error"]["code"]


def test_subscription_crud_is_arm_shaped_and_survives_restart(client, app, config):
    resp = client.put("/topics/orders/eventSubscriptions/mail-sub", json=sub_body(filter={"includedEventTypes": ["NewOrder"]}))
    assert resp.status_code == 201
    res = resp.json
    assert res["name"] == "mail-sub" and res["type"] == "Microsoft.EventGrid/eventSubscriptions"
    assert res["properties"]["destination"]["properties"]["endpointUrl"] == "http://sub.test/events"
    assert res["properties"]["provisioningState"] == "Succeeded"
    assert [s["name"] for s in client.get("/topics/orders/eventSubscriptions").json["value"]] == ["mail-sub"]
    assert "orders" in [t["name"] for t in client.get("/topics").json["value"]]

    from broker import create_app

    app.extensions["broker"].stop()
    reborn = create_app(config, start=False).test_client()
    got = reborn.get("/topics/orders/eventSubscriptions/mail-sub")
    assert got.status_code == 200 and got.json["properties"]["filter"] == {"includedEventTypes": ["NewOrder"]}
    assert reborn.delete("/topics/orders/eventSubscriptions/mail-sub").status_code == 200
    assert reborn.get("/topics/orders/eventSubscriptions/mail-sub").status_code == 404


@pytest.mark.parametrize(
    "props, target",
    [
        ({"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "nope"}}}, "endpointUrl"),
        ({"destination": {"endpointType": "EventHub", "properties": {}}}, "endpointType"),
        ({"filter": {"advancedFilters": [{"operatorType": "Bogus", "key": "data.x", "value": 1}]}}, "filter"),
        ({"retryPolicy": {"maxDeliveryAttempts": 31}}, "maxDeliveryAttempts"),
        ({"retryPolicy": {"eventTimeToLiveInMinutes": 0}}, "eventTimeToLiveInMinutes"),
        ({"eventDeliverySchema": "Custom"}, "eventDeliverySchema"),
    ],
)
def test_invalid_subscription_is_400_naming_the_field_and_not_created(client, engine, props, target):
    body = sub_body()
    body["properties"].update(props)
    resp = client.put("/topics/default/eventSubscriptions/bad-sub", json=body)
    assert resp.status_code == 400
    assert target in str(resp.json["error"])
    assert engine.registry.subscription("default", "bad-sub") is None


@pytest.mark.parametrize("path, code", [
    ("/topics/nope", "ResourceNotFound"),  # as Azure Resource Manager answers
    ("/topics/default/eventSubscriptions/nope", "ResourceNotFound"),
    ("/no/such/path", "NotFound"),
])
def test_missing_resources_are_404_in_azure_shape(client, path, code):
    resp = client.get(path)
    assert resp.status_code == 404 and resp.json["error"]["code"] == code


def test_health_and_readiness(client, engine):
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 503  # dispatcher not started in unit tests
    engine.start()
    assert client.get("/readyz").status_code == 200


def test_a_topics_path_is_its_arm_id_under_the_configured_subscription_and_resource_group(tmp_path):
    from broker import create_app
    from broker.config import Config

    app = create_app(Config.from_env({"BROKER_AZURE_SUBSCRIPTION_ID": "sub-9", "BROKER_RESOURCE_GROUP": "rg-9"}, data_dir=tmp_path), start=False)
    try:
        assert app.extensions["broker"].registry.topic("default").path == (
            "/subscriptions/sub-9/resourceGroups/rg-9/providers/Microsoft.EventGrid/topics/default")
    finally:
        app.extensions["broker"].stop()
