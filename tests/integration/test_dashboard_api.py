"""The dashboard's HTTP surface against a real broker served by waitress: the page and its assets,
the JSON views, and the server-sent event stream (with bounded reads)."""

from __future__ import annotations

import re
import time

import pytest
import requests

from broker.dashboard import StreamSettings
from tests.integration.dashboard_support import EventStream, eg_event, running_broker, running_webhook, wait_for

pytestmark = pytest.mark.integration

DEAD_LETTER = {"endpointType": "StorageBlob", "properties": {"resourceId": "local", "blobContainerName": "deadletter"}}


@pytest.fixture
def hook():
    """The subscriber (the tier's conftest has a `webhook` factory; this one is the dashboard's)."""
    with running_webhook() as subscriber:
        yield subscriber


@pytest.fixture
def broker(tmp_path):
    with running_broker(tmp_path / "broker") as b:
        yield b


def delivered(broker, seq: int, subscription: str):
    def check():
        event = broker.get(f"/dashboard/api/events/{seq}")
        return next((d for d in event["deliveries"] if d["subscription"] == subscription and d["status"] == "delivered"), None)
    return check


# -- the page ----------------------------------------------------------------------------------------


def test_root_serves_the_dashboard_with_local_assets_only(broker):
    resp = requests.get(f"{broker.url}/", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = resp.text
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html), "the page must not load anything from another host"
    assets = re.findall(r"""(?:src|href)="(/dashboard/static/[^"]+)\"""", html)
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"dashboard.js", "dashboard.css"}
    for asset in assets:
        got = requests.get(f"{broker.url}{asset}", timeout=5)
        assert got.status_code == 200, asset
        assert got.headers["X-Content-Type-Options"] == "nosniff"
    script = requests.get(f"{broker.url}/dashboard/static/dashboard.js", timeout=5).text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


# -- JSON views ----------------------------------------------------------------------------------------


def test_topics_show_subscriptions_with_filter_schema_validation_state_and_counts(broker, hook):
    resp = broker.put_subscription(
        "orders", "order-processor", hook.endpoint,
        filter={"includedEventTypes": ["Contoso.Orders.OrderPlaced"]},
        eventDeliverySchema="CloudEventSchemaV1_0", deadLetterDestination=DEAD_LETTER,
    )
    assert resp.status_code == 201, resp.text
    hook.validation_status = 403
    refused = broker.put_subscription("orders", "refuses-handshake", hook.endpoint)
    assert refused.status_code == 400
    broker.publish("orders", eg_event("o-1"), eg_event("o-2", event_type="Contoso.Orders.Ignored"))
    wait_for(lambda: len(hook.deliveries()) == 1, what="the matching event to be delivered")

    def orders():
        topics = {t["name"]: t for t in broker.get("/dashboard/api/topics")["topics"]}
        return topics.get("orders")

    topic = wait_for(lambda: (t := orders()) and t["subscriptions"][0]["counts"]["delivered"] == 1 and t, what="counts")
    assert topic["events"] == 2
    good, bad = topic["subscriptions"]
    assert good["name"] == "order-processor"
    assert good["endpoint"] == hook.endpoint
    assert good["filter"] == {"includedEventTypes": ["Contoso.Orders.OrderPlaced"]}
    assert good["deliverySchema"] == "CloudEventSchemaV1_0"
    assert good["state"] == "Succeeded" and good["deadLetter"] is True
    assert good["counts"] == {"delivered": 1, "pending": 0, "locked": 0, "dropped": 0, "deadlettered": 0}
    assert bad["name"] == "refuses-handshake"
    assert bad["state"] == "Failed"
    assert "403" in bad["stateDetail"]


def test_domains_and_namespaces_show_their_topics_and_queue_depth(broker, hook):
    url = broker.url
    assert requests.put(f"{url}/domains/shop/topics/europe/eventSubscriptions/eu-mail", json={"properties": {
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": hook.endpoint}}}}, timeout=10).status_code == 404
    assert requests.put(f"{url}/domains/shop", json={"properties": {"keys": []}}, timeout=10).status_code == 201
    assert requests.put(f"{url}/domains/shop/topics/europe/eventSubscriptions/eu-mail", json={"properties": {
        "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": hook.endpoint}}}}, timeout=10).status_code == 201
    assert requests.put(f"{url}/namespaces/warehouse", json={}, timeout=10).status_code == 201
    assert requests.put(f"{url}/namespaces/warehouse/topics/parcels", json={}, timeout=10).status_code == 201
    queue = {"properties": {"deliveryConfiguration": {"deliveryMode": "Queue", "queue": {"receiveLockDurationInSeconds": 60}}}}
    assert requests.put(f"{url}/namespaces/warehouse/topics/parcels/eventSubscriptions/packer", json=queue, timeout=10).status_code == 201
    key = requests.post(f"{url}/namespaces/warehouse/listKeys", timeout=10).json()["key1"]
    events = [{"specversion": "1.0", "id": f"p{n}", "source": "/w", "type": "Parcel"} for n in range(3)]
    assert requests.post(f"{url}/namespaces/warehouse/topics/parcels:publish", json=events, timeout=10, headers={
        "Authorization": f"SharedAccessKey {key}", "Content-Type": "application/cloudevents-batch+json"}).status_code == 200
    got = requests.post(f"{url}/namespaces/warehouse/topics/parcels/eventsubscriptions/packer:receive?maxEvents=1&maxWaitTime=10",
                        headers={"Authorization": f"SharedAccessKey {key}"}, timeout=20).json()["value"]
    assert len(got) == 1

    view = broker.get("/dashboard/api/topics")
    [shop] = view["domains"]
    assert (shop["name"], [t["name"] for t in shop["topics"]]) == ("shop", ["europe"])
    assert [s["name"] for s in shop["topics"][0]["subscriptions"]] == ["eu-mail"]
    [warehouse] = view["namespaces"]
    [parcels] = warehouse["topics"]
    [packer] = parcels["subscriptions"]
    assert (packer["mode"], packer["lockSeconds"]) == ("queue", 60)
    assert (packer["counts"]["pending"], packer["counts"]["locked"]) == (2, 1)


def test_events_are_listed_newest_first_with_delivery_timeline_and_paged_with_before(broker, hook):
    assert broker.put_subscription("orders", "sink", hook.endpoint).status_code == 201
    broker.publish("orders", eg_event("a", subject="orders/a"))
    broker.publish("orders", eg_event("b", subject="orders/b"))
    broker.publish("orders", eg_event("c", subject="orders/c"))
    wait_for(lambda: all(d["status"] == "delivered" for e in broker.get("/dashboard/api/events")["events"] for d in e["deliveries"]),
             what="all three delivered")

    page = broker.get("/dashboard/api/events", limit=2)
    assert [e["id"] for e in page["events"]] == ["c", "b"]
    newest = page["events"][0]
    assert newest["type"] == "Contoso.Orders.OrderPlaced" and newest["subject"] == "orders/c" and newest["time"] == "2025-01-01T10:00:00Z"
    (delivery,) = newest["deliveries"]
    assert delivery["subscription"] == "sink" and delivery["status"] == "delivered" and delivery["attemptCount"] == 1
    (attempt,) = delivery["attempts"]
    assert attempt["statusCode"] == 200 and attempt["latencyMs"] > 0 and attempt["outcome"] == "Delivered"
    assert "headers" not in attempt  # the list stays small; headers are in the detail view

    older = broker.get("/dashboard/api/events", limit=2, before=page["before"])
    assert [e["id"] for e in older["events"]] == ["a"]
    assert older["before"] is None


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"before": "-1"}])
def test_events_rejects_bad_paging_parameters(broker, query):
    resp = requests.get(f"{broker.url}/dashboard/api/events", params=query, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "InvalidQuery"


def test_event_detail_of_unknown_sequence_is_404(broker):
    resp = requests.get(f"{broker.url}/dashboard/api/events/999", timeout=5)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "NotFound"


def test_event_detail_shows_exactly_the_headers_and_body_each_subscriber_was_sent(broker, hook):
    assert broker.put_subscription("orders", "grid", hook.endpoint).status_code == 201
    assert broker.put_subscription("orders", "cloud", hook.endpoint, eventDeliverySchema="CloudEventSchemaV1_0").status_code == 201
    broker.publish("orders", eg_event("detail-1", subject="orders/77", data={"orderId": 77}))
    wait_for(lambda: len(hook.deliveries()) == 2, what="both deliveries")
    sent = {r["headers"]["Aeg-Subscription-Name"]: r for r in hook.deliveries()}

    seq = broker.get("/dashboard/api/events")["events"][0]["seq"]
    detail = broker.get(f"/dashboard/api/events/{seq}")
    assert detail["event"]["id"] == "detail-1" and detail["event"]["data"] == {"orderId": 77}
    assert detail["inputSchema"] == "EventGridSchema"
    by_name = {d["subscription"]: d for d in detail["deliveries"]}

    grid = by_name["grid"]
    assert grid["deliverySchema"] == "EventGridSchema"
    assert isinstance(grid["body"], list) and grid["body"] == sent["GRID"]["body"]
    (attempt,) = grid["attempts"]
    for name, value in attempt["headers"].items():
        assert sent["GRID"]["headers"][name.title()] == value, name
    assert attempt["headers"]["aeg-delivery-count"] == "0" and attempt["batchSize"] == 1

    cloud = by_name["cloud"]
    assert cloud["deliverySchema"] == "CloudEventSchemaV1_0"
    assert isinstance(cloud["body"], dict), "one CloudEvent is delivered as a JSON object"
    assert cloud["body"] == sent["CLOUD"]["body"]
    assert cloud["attempts"][0]["headers"]["Content-Type"].startswith("application/cloudevents+json")


def test_event_detail_keeps_integers_beyond_64_bits_exact_in_the_json_it_shows(broker, hook):
    assert broker.put_subscription("orders", "sink", hook.endpoint).status_code == 201
    huge = 123456789012345678901234567890
    resp = requests.post(f"{broker.url}/topics/orders/api/events", timeout=5, headers={"Content-Type": "application/json"},
                         data=f'[{{"id": "big-1", "eventType": "T", "subject": "s", "eventTime": "2025-01-01T00:00:00Z", "data": {{"n": {huge}}}}}]')
    assert resp.status_code == 200, resp.text
    seq = broker.get("/dashboard/api/events")["events"][0]["seq"]
    wait_for(delivered(broker, seq, "sink"), what="the delivery")
    detail = broker.get(f"/dashboard/api/events/{seq}")
    assert detail["event"]["data"]["n"] == huge
    # The page shows this text verbatim; the browser's JSON.parse would round the number.
    assert f'"n": {huge}' in detail["eventJson"]
    assert f'"n": {huge}' in detail["deliveries"][0]["bodyJson"]


def test_event_detail_notes_the_batch_size_a_delivery_was_sent_in(broker, hook):
    props = {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": hook.endpoint, "maxEventsPerBatch": 10}}}
    resp = requests.put(f"{broker.url}/topics/orders/eventSubscriptions/batched", json={"properties": props}, timeout=15)
    assert resp.status_code == 201, resp.text
    broker.publish("orders", eg_event("b-1"), eg_event("b-2"), eg_event("b-3"))
    wait_for(lambda: hook.deliveries(), what="the batch")
    assert len(hook.deliveries()[0]["body"]) == 3  # one request carried all three

    seq = broker.get("/dashboard/api/events")["events"][0]["seq"]
    wait_for(delivered(broker, seq, "batched"), what="the batch to be recorded as delivered")
    (delivery,) = broker.get(f"/dashboard/api/events/{seq}")["deliveries"]
    assert delivery["attempts"][0]["batchSize"] == 3
    assert [e["id"] for e in delivery["body"]] == ["b-3"]  # this event's part of the batch, as an array


def test_dead_letters_list_reason_and_last_status_across_subscriptions(broker, hook):
    retry = {"maxDeliveryAttempts": 2, "eventTimeToLiveInMinutes": 1440}
    assert broker.put_subscription("orders", "flaky", hook.endpoint, retryPolicy=retry, deadLetterDestination=DEAD_LETTER).status_code == 201
    hook.status = 500
    broker.publish("orders", eg_event("dl-1", subject="orders/dl"))
    listing = wait_for(lambda: (d := broker.get("/dashboard/api/deadletters"))["total"] == 1 and d, what="a dead letter")
    (dead,) = listing["deadLetters"]
    assert dead["subscription"] == "flaky" and dead["topic"] == "orders"
    assert dead["eventId"] == "dl-1" and dead["subject"] == "orders/dl"
    assert dead["reason"] == "MaxDeliveryAttemptsExceeded" and dead["lastStatus"] == 500 and dead["attempts"] == 2


# -- the stream ------------------------------------------------------------------------------------------


def test_stream_is_event_stream_and_delivers_published_event_then_its_attempt(broker, hook):
    assert broker.put_subscription("orders", "sink", hook.endpoint).status_code == 201
    stream = EventStream(broker.url)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        stream.wait_for(lambda f: f.get("comment") == "connected", timeout=5, what="the opening comment")
        broker.publish("orders", eg_event("live-1", subject="orders/live"))
        event = stream.wait_for(lambda f: f.get("event") == "event", what="the event")["data"]
        assert event["id"] == "live-1" and event["type"] == "Contoso.Orders.OrderPlaced" and event["subject"] == "orders/live"
        assert event["subscriptions"] == ["sink"]
        attempt = stream.wait_for(lambda f: f.get("event") == "attempt", what="the attempt")["data"]
        assert attempt["seq"] == event["seq"] and attempt["subscription"] == "sink"
        assert attempt["status"] == "delivered" and attempt["statusCode"] == 200 and attempt["latencyMs"] > 0
    finally:
        stream.close()


def test_stream_shows_retry_then_dead_letter_and_redelivery_after_the_subscriber_recovers(broker, hook):
    retry = {"maxDeliveryAttempts": 2, "eventTimeToLiveInMinutes": 1440}
    assert broker.put_subscription("orders", "flaky", hook.endpoint, retryPolicy=retry, deadLetterDestination=DEAD_LETTER).status_code == 201
    hook.status = 500
    stream = EventStream(broker.url)
    try:
        broker.publish("orders", eg_event("r-1"))
        first = stream.wait_for(lambda f: f.get("event") == "attempt", what="the first attempt")["data"]
        assert first["attempt"] == 1 and first["statusCode"] == 500 and first["status"] == "pending"
        assert first["nextAttemptAt"] > first["at"]
        dead = stream.wait_for(lambda f: f.get("event") == "attempt" and f["data"]["attempt"] == 2, what="the second attempt")["data"]
        assert dead["status"] == "deadlettered" and dead["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"

        hook.status = 200
        resp = requests.post(f"{broker.url}/topics/orders/eventSubscriptions/flaky/deadLetters/{dead['delivery']}/redeliver", timeout=5)
        assert resp.status_code == 202
        again = stream.wait_for(lambda f: f.get("event") == "attempt" and f["data"]["status"] == "delivered", what="the redelivery")["data"]
        assert again["delivery"] == dead["delivery"] and again["attempt"] == 1 and again["statusCode"] == 200
        assert broker.get("/dashboard/api/deadletters")["total"] == 0
        # The timeline restarts with the redelivery rather than mixing in the earlier round.
        (delivery,) = broker.get(f"/dashboard/api/events/{dead['seq']}")["deliveries"]
        assert [(a["attempt"], a["statusCode"]) for a in delivery["attempts"]] == [(1, 500), (2, 500), (1, 200)]  # the whole history
    finally:
        stream.close()


def test_stream_sends_heartbeats_and_unlistens_when_the_client_goes_away(tmp_path):
    def quick(app):
        app.extensions["dashboard"] = StreamSettings(heartbeat_seconds=0.2, poll_seconds=0.05)

    with running_broker(tmp_path / "broker", before_start=quick) as broker:
        stream = EventStream(broker.url)
        stream.wait_for(lambda f: f.get("comment") == "heartbeat", timeout=5, what="a heartbeat")
        assert broker.engine.feed.has_listeners
        stream.close()
        # The next heartbeat write fails on the closed connection, which ends the generator.
        wait_for(lambda: not broker.engine.feed.has_listeners, timeout=10, what="the stream to unlisten")
        assert broker.app.extensions["dashboard"].slots.acquire(blocking=False), "the stream slot was released"


def test_stream_ends_after_its_maximum_lifetime_so_no_thread_is_held_forever(tmp_path):
    def short(app):
        app.extensions["dashboard"] = StreamSettings(max_seconds=0.5, poll_seconds=0.05)

    with running_broker(tmp_path / "broker", before_start=short) as broker:
        stream = EventStream(broker.url)
        try:
            started = time.monotonic()
            assert stream.ended.wait(5), "the server should end the stream"
            assert time.monotonic() - started < 5
            assert stream.frames == [] or stream.frames[0].get("comment") == "connected"
            wait_for(lambda: not broker.engine.feed.has_listeners, timeout=5, what="the stream to unlisten")
        finally:
            stream.close()


def test_stream_refuses_more_streams_than_its_share_of_server_threads(tmp_path):
    def one(app):
        app.extensions["dashboard"] = StreamSettings(max_streams=1, poll_seconds=0.05)

    with running_broker(tmp_path / "broker", before_start=one) as broker:
        first = EventStream(broker.url)
        try:
            first.wait_for(lambda f: f.get("comment") == "connected", timeout=5, what="the first stream")
            second = requests.get(f"{broker.url}/dashboard/stream", timeout=5)
            assert second.status_code == 503
            assert second.json()["error"]["code"] == "TooManyStreams"
            assert second.headers["Retry-After"]
            # The API keeps answering while the stream holds its thread.
            assert requests.get(f"{broker.url}/dashboard/api/topics", timeout=5).status_code == 200
        finally:
            first.close()
