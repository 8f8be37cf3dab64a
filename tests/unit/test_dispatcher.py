"""The delivery path driven by hand: a fake webhook client, a manual clock, no threads."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import orjson
import pytest

from broker.webhook import Response


class FakeClient:
    """Answers each request from a script of status codes (None = connection refused)."""

    def __init__(self, statuses=(200,)):
        self.statuses = list(statuses)
        self.requests = []

    def post(self, url, body, headers, timeout):
        self.requests.append({"url": url, "body": orjson.loads(body), "headers": headers})
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status is None:
            return Response(None, 1.0, error="connection refused")
        return Response(status, 2.5, b"")

    async def deliver(self, url, body, headers, timeout):
        return self.post(url, body, headers, timeout)

    def request(self, method, url, body, headers, timeout):
        return self.post(url, body or b"null", headers, timeout)

    def close(self):
        pass


def inline(work):
    asyncio.run(work)


def dispatch(engine):
    """One pass of the dispatcher with its workers run synchronously, then its writes committed."""
    wait = engine.dispatcher.dispatch_due(inline)
    engine.store.flush()
    return wait


@pytest.fixture
def fake(engine):
    engine.dispatcher.client = FakeClient()
    return engine.dispatcher.client


def subscribe(client, name="orders-sub", endpoint="http://sub.test/events?code=abc", **props):
    dest = {"endpointUrl": endpoint, "skipValidation": True, **props.pop("dest", {})}
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": dest}, **props}}
    resp = client.put(f"/topics/default/eventSubscriptions/{name}", json=body)
    assert resp.status_code in (200, 201), resp.json
    return resp


def publish(client, n=1, event_type="NewOrder", start=0):
    events = [
        {"id": f"e{i}", "subject": f"orders/{i}", "eventType": event_type, "eventTime": "2026-01-01T00:00:00Z",
         "data": {"orderId": i}, "dataVersion": "1.0"}
        for i in range(start, start + n)
    ]
    resp = client.post("/api/events", json=events)
    assert resp.status_code == 200, resp.json


def statuses(engine):
    return engine.store.deliveries.status_totals()


def test_delivery_is_one_event_array_with_event_grid_headers(engine, client, fake):
    subscribe(client)
    publish(client)
    dispatch(engine)
    (req,) = fake.requests
    assert req["url"] == "http://sub.test/events?code=abc"  # query string kept exactly
    assert isinstance(req["body"], list) and len(req["body"]) == 1
    event = req["body"][0]
    assert event["id"] == "e0" and event["eventType"] == "NewOrder"
    assert event["topic"] == engine.registry.topic("default").path
    h = req["headers"]
    assert (h["aeg-event-type"], h["aeg-subscription-name"], h["aeg-delivery-count"], h["aeg-metadata-version"], h["aeg-data-version"]) == (
        "Notification", "ORDERS-SUB", "0", "1", "1.0")
    assert statuses(engine) == {"delivered": 1}


def test_failed_attempt_is_rescheduled_on_azures_first_retry_delay(engine, client, fake, clock):
    fake.statuses = [500, 200]
    subscribe(client)
    publish(client)
    dispatch(engine)
    (row,) = engine.store.read("SELECT status, attempts, next_attempt_at, last_status, last_outcome FROM deliveries")
    assert row["status"] == "pending" and row["attempts"] == 1 and row["last_status"] == 500
    assert 9 <= row["next_attempt_at"] - clock.now() <= 11
    dispatch(engine)
    assert len(fake.requests) == 1  # not due yet
    clock.advance(11)
    dispatch(engine)
    assert [r["headers"]["aeg-delivery-count"] for r in fake.requests] == ["0", "1"]
    assert statuses(engine) == {"delivered": 1}


@pytest.mark.parametrize("status, reason", [(400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (413, "RequestEntityTooLarge")])
def test_non_retryable_status_dead_letters_after_one_attempt(engine, client, fake, status, reason):
    fake.statuses = [status]
    subscribe(client, deadLetterDestination={"endpointType": "StorageBlob", "properties": {"blobContainerName": "deadletters"}})
    publish(client)
    dispatch(engine)
    (row,) = engine.store.read("SELECT status, attempts, dead_letter_reason FROM deliveries")
    assert (row["status"], row["attempts"], row["dead_letter_reason"]) == ("deadlettered", 1, reason)
    blobs = list((engine.config.data_dir / "deadletter" / "default" / "ORDERS-SUB").rglob("*.json"))
    assert len(blobs) == 1
    (record,) = json.loads(blobs[0].read_text())
    assert record["deadLetterReason"] == reason and record["lastHttpStatusCode"] == status and record["id"] == "e0"


def test_without_dead_letter_destination_a_rejected_event_is_dropped(engine, client, fake):
    fake.statuses = [400]
    subscribe(client)
    publish(client)
    dispatch(engine)
    assert statuses(engine) == {"dropped": 1}
    assert not (engine.config.data_dir / "deadletter").exists()


def test_attempts_run_out_into_max_delivery_attempts_exceeded(engine, client, fake, clock):
    fake.statuses = [503]
    subscribe(client, retryPolicy={"maxDeliveryAttempts": 3, "eventTimeToLiveInMinutes": 1440},
              deadLetterDestination={"endpointType": "StorageBlob", "properties": {}})
    publish(client)
    for _ in range(5):
        dispatch(engine)
        clock.advance(120)
    assert len(fake.requests) == 3
    (row,) = engine.store.read("SELECT status, attempts, dead_letter_reason, last_outcome FROM deliveries")
    assert (row["status"], row["attempts"], row["dead_letter_reason"], row["last_outcome"]) == (
        "deadlettered", 3, "MaxDeliveryAttemptsExceeded", "Busy")


def test_time_to_live_ends_delivery_with_time_to_live_exceeded(engine, client, fake, clock):
    fake.statuses = [None]  # subscriber down
    subscribe(client, retryPolicy={"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1},
              deadLetterDestination={"endpointType": "StorageBlob", "properties": {}})
    publish(client)
    for _ in range(6):
        dispatch(engine)
        clock.advance(30)
    (row,) = engine.store.read("SELECT status, dead_letter_reason, attempts FROM deliveries")
    assert row["status"] == "deadlettered" and row["dead_letter_reason"] == "TimeToLiveExceeded"
    assert 1 <= row["attempts"] <= 3  # 0 s, ~10 s, ~40 s; the TTL (60 s) comes before the 1 min retry


def test_output_batching_respects_max_events_per_batch(engine, client, fake):
    subscribe(client, dest={"maxEventsPerBatch": 4})
    publish(client, n=10)
    dispatch(engine)
    dispatch(engine)
    sizes = [len(r["body"]) for r in fake.requests]
    assert sum(sizes) == 10 and max(sizes) == 4
    assert statuses(engine) == {"delivered": 10}


def test_a_retry_batched_with_a_fresh_event_records_each_ones_own_attempt(engine, client, fake, clock):
    fake.statuses = [500, 200]
    subscribe(client, dest={"maxEventsPerBatch": 10})
    publish(client)
    dispatch(engine)  # e0's first attempt fails
    clock.advance(11)
    publish(client, start=1)
    dispatch(engine)  # e0's retry and e1's first attempt, in one request
    assert [[e["id"] for e in r["body"]] for r in fake.requests] == [["e0"], ["e0", "e1"]]
    rows = engine.store.read("SELECT id, status, attempts FROM deliveries ORDER BY id")
    assert [(r["status"], r["attempts"]) for r in rows] == [("delivered", 2), ("delivered", 1)]
    attempts = engine.store.deliveries.attempts_for([r["id"] for r in rows])
    assert sorted((a["delivery_id"], a["attempt"], a["status_code"], a["batch_size"]) for a in attempts) == [
        (rows[0]["id"], 1, 500, 1), (rows[0]["id"], 2, 200, 2), (rows[1]["id"], 1, 200, 2)]
    assert all(a["headers"]["aeg-delivery-count"] == ("1" if a["batch_size"] == 2 else "0") for a in attempts)


def test_preferred_batch_size_splits_large_events(engine, client, fake):
    subscribe(client, dest={"maxEventsPerBatch": 100, "preferredBatchSizeInKilobytes": 1})
    events = [{"id": f"big{i}", "subject": "s", "eventType": "NewOrder", "eventTime": "2026-01-01T00:00:00Z",
               "data": {"pad": "x" * 700}, "dataVersion": "1"} for i in range(3)]
    assert client.post("/api/events", json=events).status_code == 200
    dispatch(engine)
    assert [len(r["body"]) for r in fake.requests] == [1, 1, 1]


def test_static_and_dynamic_delivery_attributes_become_headers(engine, client, fake):
    subscribe(client, dest={"deliveryAttributeMappings": [
        {"name": "X-Tenant", "type": "Static", "properties": {"value": "shop-1"}},
        {"name": "X-Order", "type": "Dynamic", "properties": {"sourceField": "data.orderId"}},
    ]})
    publish(client, start=42, n=2)
    dispatch(engine)
    assert [(r["headers"]["X-Tenant"], r["headers"]["X-Order"]) for r in fake.requests] == [("shop-1", "42"), ("shop-1", "43")]
    # without a dynamic attribute the header set is built once and shared by every request
    subscribe(client, name="static-only", dest={"deliveryAttributeMappings": [
        {"name": "X-Tenant", "type": "Static", "properties": {"value": "shop-2"}}]})
    publish(client, start=50, n=2)
    dispatch(engine)
    sent = [r["headers"] for r in fake.requests if r["headers"]["aeg-subscription-name"] == "STATIC-ONLY"]
    assert len(sent) == 2 and sent[0] == sent[1] and sent[0]["X-Tenant"] == "shop-2"
    assert len(engine.registry.subscription("default", "static-only").headers_kept) == 1


@pytest.mark.parametrize("name", ["Content-Length", "host", "Transfer-Encoding", "aeg-delivery-count", "AEG-Custom",
                                  "X Space", "X-Ünï", "X:colon", ""])
def test_a_delivery_property_may_not_name_a_framing_or_broker_header(client, name):
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {
        "endpointUrl": "http://sub.test/e", "skipValidation": True,
        "deliveryAttributeMappings": [{"name": name, "type": "Static", "properties": {"value": "1"}}]}}}}
    resp = client.put("/topics/default/eventSubscriptions/bad-props", json=body)
    assert resp.status_code == 400, resp.json
    assert "deliveryAttributeMappings[0]" in resp.json["error"]["message"]
    assert client.get("/topics/default/eventSubscriptions/bad-props").status_code == 404  # nothing half-applied


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "nul\0", "x" * 4097])
def test_a_static_delivery_property_value_must_be_one_short_header_line(client, value):
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {
        "endpointUrl": "http://sub.test/e", "skipValidation": True,
        "deliveryAttributeMappings": [{"name": "X-Ok", "type": "Static", "properties": {"value": value}}]}}}}
    resp = client.put("/topics/default/eventSubscriptions/bad-value", json=body)
    assert resp.status_code == 400 and "properties.value" in resp.json["error"]["message"]


def test_the_same_delivery_property_twice_is_refused(client):
    maps = [{"name": n, "type": "Static", "properties": {"value": "1"}} for n in ("X-A", "x-a")]
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {
        "endpointUrl": "http://sub.test/e", "skipValidation": True, "deliveryAttributeMappings": maps}}}}
    assert client.put("/topics/default/eventSubscriptions/twice", json=body).status_code == 400


def test_a_dynamic_delivery_property_is_cleaned_not_sent_raw(engine, client, fake):
    subscribe(client, dest={"deliveryAttributeMappings": [
        {"name": "X-Subject", "type": "Dynamic", "properties": {"sourceField": "subject"}},
        {"name": "X-Note", "type": "Dynamic", "properties": {"sourceField": "data.note"}}]})
    event = {"id": "d1", "subject": "a\r\nX-Injected: yes\0", "eventType": "NewOrder", "eventTime": "2026-01-01T00:00:00Z",
             "data": {"note": "ü€" + "y" * 5000}, "dataVersion": "1"}
    assert client.post("/api/events", json=[event]).status_code == 200
    dispatch(engine)
    [sent] = fake.requests
    assert sent["headers"]["X-Subject"] == "a  X-Injected: yes"
    assert "X-Injected" not in sent["headers"]
    note = sent["headers"]["X-Note"].encode("latin-1")  # what goes on the wire
    assert len(note) == 4096 and note.decode("utf-8").startswith("ü€y")


def test_filters_decide_fan_out_at_publish_time(engine, client, fake):
    subscribe(client, name="only-orders", filter={"includedEventTypes": ["NewOrder"]})
    subscribe(client, name="big-orders", filter={"advancedFilters": [{"operatorType": "NumberGreaterThan", "key": "data.orderId", "value": 5}]})
    publish(client, n=1, start=3)
    publish(client, n=1, event_type="Other", start=9)
    rows = engine.store.read("SELECT e.event_id, r.name AS subscription FROM deliveries d JOIN events e ON e.seq = d.event_seq "
                             "JOIN resources r ON r.id = d.subscription ORDER BY 1, 2")
    assert [(r["event_id"], r["subscription"]) for r in rows] == [("e3", "only-orders"), ("e9", "big-orders")]


def test_cloudevents_subscription_gets_structured_single_event(engine, client, fake):
    subscribe(client, eventDeliverySchema="CloudEventSchemaV1_0")
    publish(client)
    dispatch(engine)
    req = fake.requests[0]
    assert req["headers"]["Content-Type"].startswith("application/cloudevents+json")
    assert req["body"]["specversion"] == "1.0" and req["body"]["type"] == "NewOrder" and req["body"]["id"] == "e0"


def test_one_subscriptions_concurrency_cap_does_not_block_another(engine, client, fake):
    subscribe(client, name="slow-one")
    subscribe(client, name="fast-one", endpoint="http://fast.test/events")
    publish(client, n=10)
    # Pretend slow-one already has every worker busy: its lane hires no more.
    from broker.dispatcher import Lane

    slow = engine.registry.subscription("default", "slow-one")
    engine.dispatcher._lanes[slow.id] = lane = Lane(slow)
    lane.workers = engine.config.subscription_concurrency
    dispatch(engine)
    assert {r["url"] for r in fake.requests} == {"http://fast.test/events"}
    assert len(fake.requests) == 10


def test_recover_returns_in_flight_deliveries_to_pending(engine, client, fake, clock):
    subscribe(client)
    publish(client, n=3)
    claimed = engine.store.deliveries.claim(engine.registry.subscription("default", "orders-sub").id, clock.now(), 10)
    assert len(claimed) == 3 and statuses(engine) == {"inflight": 3}
    assert engine.store.deliveries.recover() == 3
    assert statuses(engine) == {"pending": 3}


def test_prune_removes_only_delivered_events_past_retention(engine, client, fake, clock):
    fake.statuses = [200]
    subscribe(client)
    publish(client, n=2)
    dispatch(engine)
    fake.statuses = [None]
    publish(client, n=1, start=5)  # stays pending
    dispatch(engine)
    assert engine.store.deliveries.prune(clock.now() + 1) == 2
    assert [r["event_id"] for r in engine.store.read("SELECT event_id FROM events")] == ["e5"]



def test_fresh_deliveries_go_straight_to_a_caught_up_lane_without_a_claim(engine, client, fake, monkeypatch):
    subscribe(client)
    publish(client)
    dispatch(engine)  # the lane exists and its claim found nothing more: caught up
    monkeypatch.setattr(engine.dispatcher, "_direct", True)  # as when started
    monkeypatch.setattr(engine.dispatcher, "_submit", inline)
    claims = []
    real_claim = engine.store.deliveries.claim
    monkeypatch.setattr(engine.store.deliveries, "claim", lambda *a: claims.append(a) or real_claim(*a))

    publish(client, n=2, start=1)  # delivered inside the publish, by the lane's worker

    engine.store.flush()
    assert [r["body"][0]["id"] for r in fake.requests] == ["e0", "e1", "e2"]
    assert claims == [] and statuses(engine) == {"delivered": 3}


def test_a_lane_that_is_behind_gets_fresh_deliveries_as_pending_in_order(engine, client, fake, monkeypatch):
    subscribe(client)
    publish(client)
    dispatch(engine)
    monkeypatch.setattr(engine.dispatcher, "_direct", True)
    monkeypatch.setattr(engine.dispatcher, "_submit", inline)
    sub = engine.registry.subscription("default", "orders-sub")
    engine.dispatcher._lanes[sub.id].caught_up = False  # a backlog is still in the store

    publish(client, n=2, start=1)
    assert len(fake.requests) == 1 and statuses(engine) == {"delivered": 1, "pending": 2}
    dispatch(engine)
    assert [r["body"][0]["id"] for r in fake.requests] == ["e0", "e1", "e2"] and statuses(engine) == {"delivered": 3}


def test_a_lane_takes_a_burst_larger_than_a_claim_straight_from_the_publish(engine, client, fake, monkeypatch):
    from broker import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "CLAIM_AHEAD", 3)
    monkeypatch.setattr(dispatcher_module, "LANE_LIMIT", 10)
    # 4 concurrent requests to a subscriber: a claim takes 2 x 4 requests' worth (8).
    monkeypatch.setattr(engine.dispatcher, "config", dataclasses.replace(engine.config, subscription_concurrency=4))
    subscribe(client)
    publish(client)
    dispatch(engine)
    monkeypatch.setattr(engine.dispatcher, "_direct", True)
    monkeypatch.setattr(engine.dispatcher, "_submit", inline)
    claims = []
    real_claim = engine.store.deliveries.claim
    monkeypatch.setattr(engine.store.deliveries, "claim", lambda *a: claims.append(a) or real_claim(*a))

    publish(client, n=9, start=1)  # more than a claim takes (2 x 4 workers' requests), within what a lane holds
    engine.store.flush()
    assert claims == [] and statuses(engine) == {"delivered": 10}

    engine.dispatcher._lanes[engine.registry.subscription("default", "orders-sub").id].caught_up = False
    publish(client, n=10, start=10)  # a lane that is behind: pending, then claimed a claim's worth at a time
    assert statuses(engine) == {"delivered": 10, "pending": 10}
    dispatch(engine)
    assert [c[2] for c in claims] == [8] and statuses(engine) == {"delivered": 18, "pending": 2}
    dispatch(engine)
    assert statuses(engine) == {"delivered": 20}


# -- the renderings cache ---------------------------------------------------------------------


def _accepted_event():
    from broker import schemas
    body = orjson.dumps([{"id": "r1", "subject": "orders/1", "eventType": "NewOrder", "eventTime": "2026-01-01T00:00:00Z",
                          "data": {"orderId": 1, "items": [{"sku": "a"}]}, "dataVersion": "1.0"}])
    event = schemas.parse(body, {}, "EventGridSchema")[0]
    return event, orjson.dumps(event.to_record())


TOPIC_PATH = "/subscriptions/x/resourceGroups/y/providers/Microsoft.EventGrid/topics/default"


def test_cached_renderings_are_left_alone_by_the_cycle_collector():
    """A cache of tracked objects made every full collection walk it and ran one every few seconds:
    an entry must be only strings, bytes and a dict of bytes, which the collector stops tracking."""
    import gc

    from broker.dispatcher import Renderings

    renderings = Renderings()
    event, record = _accepted_event()
    renderings.add([(7, event, {"EventGridSchema"}, TOPIC_PATH)])
    del event
    gc.collect()
    assert not gc.is_tracked(renderings._items[7])
    assert renderings.get(7, record).rendered("EventGridSchema", TOPIC_PATH).startswith(b"{")
    renderings.get(7, record).rendered("CloudEventSchemaV1_0", TOPIC_PATH)  # another schema, kept too
    gc.collect()
    assert not gc.is_tracked(renderings._items[7])
    assert len(renderings._items[7]) == 8  # id, schema, data version, domain topic, then schema and body twice


def test_a_schema_not_rendered_on_accept_is_rendered_from_the_stored_record_and_kept():
    from broker import schemas
    from broker.dispatcher import Renderings

    renderings = Renderings()
    event, record = _accepted_event()
    renderings.add([(7, event, {"EventGridSchema"}, TOPIC_PATH)])
    cloud = renderings.get(7, record).rendered("CloudEventSchemaV1_0", TOPIC_PATH)
    assert orjson.loads(cloud) == orjson.loads(schemas.dumps(schemas.render(event, "CloudEventSchemaV1_0", TOPIC_PATH)))
    assert orjson.loads(cloud)["specversion"] == "1.0"
    assert renderings.get(7, b"not json: must not be read again").rendered("CloudEventSchemaV1_0", TOPIC_PATH) == cloud


def test_an_event_not_in_the_cache_is_read_from_its_record_once():
    from broker import schemas
    from broker.dispatcher import Renderings

    renderings = Renderings(size=2)
    event, record = _accepted_event()
    first = renderings.get(9, record)
    assert (first.id, first.input_schema, first.data_version) == ("r1", "EventGridSchema", "1.0")
    body = first.rendered("EventGridSchema", TOPIC_PATH)
    assert orjson.loads(body) == orjson.loads(schemas.dumps(schemas.render(event, "EventGridSchema", TOPIC_PATH)))
    assert renderings.get(9, b"not json").rendered("EventGridSchema", TOPIC_PATH) == body
    renderings.get(10, record), renderings.get(11, record)  # bounded: the oldest goes
    assert list(renderings._items) == [10, 11]


def test_prune_goes_by_arrival_order_and_skips_what_came_after_a_newer_event(engine, client, fake, clock):
    """Retention walks events in seq order up to the first one received since the cut-off (no index
    on received_at): an event stored later with an older clock reading waits for a later round."""
    fake.statuses = [200]
    subscribe(client)
    publish(client, n=2)  # e0, e1 at t0
    clock.advance(100)
    publish(client, n=1, start=2)  # e2 at t0 + 100
    dispatch(engine)
    clock.advance(-100)
    publish(client, n=1, start=3)  # e3 at t0 again (the clock was set back)
    dispatch(engine)
    assert statuses(engine) == {"delivered": 4}
    assert engine.store.deliveries.prune(clock.now() + 50) == 2
    assert [r["event_id"] for r in engine.store.read("SELECT event_id FROM events ORDER BY seq")] == ["e2", "e3"]
    assert engine.store.deliveries.prune(clock.now() + 200) == 2
    assert engine.store.read("SELECT COUNT(*) AS n FROM events")[0]["n"] == 0
    assert engine.store.read("SELECT COUNT(*) AS n FROM deliveries")[0]["n"] == 0


# -- bounds and hardening ---------------------------------------------------------------------------


def let_go(engine):
    """The workers a test hired but never ran (their coroutines closed) leave again."""
    d = engine.dispatcher
    with d._lock:
        for lane in d._lanes.values():
            while lane.workers:
                d._leave(lane)


def test_the_rendering_cache_is_bounded_in_bytes_as_well_as_in_entries():
    from broker.dispatcher import Renderings

    renderings = Renderings(size=1000, max_bytes=50_000)
    event, _record = _accepted_event()
    event.data = {"blob": "x" * 20_000}
    renderings.add([(seq, event, {"EventGridSchema"}, TOPIC_PATH) for seq in range(10)])
    assert renderings.bytes <= 50_000 and len(renderings._items) == 2  # the oldest went first
    assert sorted(renderings._items) == [8, 9]


def test_a_lane_claims_no_more_than_its_byte_bound_and_takes_no_fresh_deliveries_past_it(engine, client, fake, monkeypatch):
    import broker.dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "LANE_BYTES", 3000)
    subscribe(client)
    sub = engine.registry.subscription("default", "orders-sub")
    events = [{"id": f"e{i}", "subject": "s", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z", "data": {"pad": "y" * 1000}}
              for i in range(10)]
    assert client.post("/api/events", json=events).status_code == 200
    engine.dispatcher.dispatch_due(lambda work: work.close())  # claim only: no worker runs
    lane = engine.dispatcher._lanes[sub.id]
    assert 1 <= len(lane.buffer) <= 3 and lane.bytes <= 3000 + 1200
    assert not lane.caught_up  # the rest waits in the store as pending
    assert engine.dispatcher.direct([sub], 1) == set()  # a full lane takes fresh events as pending
    let_go(engine)


def test_a_retry_wakes_the_dispatcher_when_it_falls_due_not_at_its_idle_poll(engine, client, fake, clock):
    fake.statuses = [500, 200]
    subscribe(client)
    publish(client)
    dispatcher = engine.dispatcher
    dispatcher._deadline = clock.now() + 3600.0  # asleep for an hour
    dispatcher._wake.clear()
    dispatcher.dispatch_due(inline)  # the first attempt fails: its retry is due in ~10 s
    assert not dispatcher._wake.is_set()
    engine.store.settle()  # once the retry is stored (claimable), the dispatcher is told when it is due
    (row,) = engine.store.read("SELECT status, next_attempt_at FROM deliveries")
    assert row["status"] == "pending" and dispatcher._wake.is_set()
    assert dispatcher._deadline == row["next_attempt_at"] < clock.now() + 12


def test_a_subscriber_is_sent_more_requests_at_once_as_it_succeeds_and_one_after_a_failure(engine, client, fake):
    fake.statuses = [200]
    subscribe(client)
    publish(client, n=8)
    dispatch(engine)  # one request at a time to begin with, one more allowed per success
    sub = engine.registry.subscription("default", "orders-sub")
    lane = engine.dispatcher._lanes[sub.id]
    assert lane.window == min(1 + 8, engine.config.subscription_concurrency)
    fake.statuses = [None]  # refused from now on
    publish(client, n=1, start=8)
    dispatch(engine)
    assert lane.window == 1
    publish(client, n=8, start=9)
    hired = []
    engine.dispatcher.dispatch_due(lambda work: (hired.append(1), work.close()))
    assert hired == [1]  # a failing subscriber ties up one worker, however much waits for it
    let_go(engine)

def test_deliveries_handed_over_for_a_subscription_deleted_meanwhile_are_dropped_without_waiting(engine, client, fake, clock):
    from broker.engine import _Batch
    from broker.events import Event

    subscribe(client)
    dispatch(engine)  # its lane exists and is caught up: fresh deliveries are claimed at birth
    engine.dispatcher._direct = True
    topic = engine.registry.topic("default")
    batch = _Batch(engine, topic, [Event(id="late", type="T", time="2026-01-01T00:00:00Z", subject="s", data={})])
    assert any(batch.claimed.values())
    client.delete("/topics/default/eventSubscriptions/orders-sub")  # between the routing and the commit
    seqs, first = engine.store.deliveries.append(*batch.rows)
    batch.accepted(seqs, first)  # hands over to a lane that is gone: must not wait for the store
    engine.store.settle()
    assert engine.store.read("SELECT status, dead_letter_reason FROM deliveries") == [
        {"status": "dropped", "dead_letter_reason": "SubscriptionDeleted"}]


def test_pending_deliveries_for_a_subscription_deleted_between_routing_and_commit_are_dropped(engine, client, fake):
    from broker.engine import _Batch
    from broker.events import Event

    subscribe(client)  # no lane yet: its deliveries are stored pending, not claimed at birth
    batch = _Batch(engine, engine.registry.topic("default"), [Event(id="late", type="T", time="2026-01-01T00:00:00Z", subject="s", data={})])
    assert not any(batch.claimed.values())
    client.delete("/topics/default/eventSubscriptions/orders-sub")
    batch.accepted(*engine.store.deliveries.append(*batch.rows))
    engine.store.settle()
    assert engine.store.read("SELECT status, dead_letter_reason FROM deliveries") == [
        {"status": "dropped", "dead_letter_reason": "SubscriptionDeleted"}]
