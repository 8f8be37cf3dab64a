"""servicekit.webhook and servicekit.idempotency, through a Flask test client (no sockets)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from servicekit.idempotency import Claim, ProcessedEvents
from servicekit.service import create_service_app
from servicekit.webhook import (
    VALIDATION_EVENT,
    ReceivedEvent,
    RejectedEvent,
    RetryableError,
    create_webhook_blueprint,
)


class Recorder:
    """A handler that records what it saw and fails on cue, by event id."""

    def __init__(self) -> None:
        self.seen: list[ReceivedEvent] = []
        self.fail: dict[str, BaseException | bool] = {}

    def __call__(self, event: ReceivedEvent) -> bool | None:
        outcome = self.fail.pop(event.id, None)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is False:
            return False
        self.seen.append(event)
        return None

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.seen]


def make_client(data_dir, handler, **options):
    app = create_service_app("test_service")
    processed = options.pop("processed", None) or ProcessedEvents(data_dir)
    app.register_blueprint(create_webhook_blueprint(handler, event_types=("NewOrder",), processed=processed, **options))
    return app.test_client()


def eventgrid(event_id: str, event_type: str = "NewOrder", **data) -> dict:
    return {
        "id": event_id,
        "eventType": event_type,
        "subject": f"orders/{event_id}",
        "eventTime": "2026-01-01T12:00:00Z",
        "dataVersion": "1.0",
        "data": {"orderId": event_id, **data},
    }


def cloudevent(event_id: str, event_type: str = "NewOrder") -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type,
        "source": "/shop/checkout",
        "time": "2026-01-01T12:00:00Z",
        "datacontenttype": "application/json",
        "data": {"orderId": event_id},
    }


@pytest.fixture
def handler() -> Recorder:
    return Recorder()


@pytest.fixture
def client(tmp_path, handler):
    return make_client(tmp_path, handler)


# --- handshakes ---------------------------------------------------------------------------------


def test_eventgrid_validation_event_is_answered_with_its_code(client, handler):
    body = [{"id": "v1", "eventType": VALIDATION_EVENT, "data": {"validationCode": "512d38b6"}}]

    response = client.post("/events", json=body, headers={"aeg-event-type": "SubscriptionValidation"})

    assert response.status_code == 200
    assert response.json == {"validationResponse": "512d38b6"}
    assert handler.seen == []


def test_validation_event_is_recognised_by_type_even_without_the_header(client):
    body = {"id": "v1", "eventType": VALIDATION_EVENT, "data": {"validationCode": "abc"}}

    assert client.post("/events", json=body).json == {"validationResponse": "abc"}


def test_validation_without_a_code_is_a_bad_request(client):
    response = client.post(
        "/events",
        json=[{"id": "v1", "eventType": VALIDATION_EVENT, "data": {}}],
        headers={"aeg-event-type": "SubscriptionValidation"},
    )

    assert response.status_code == 400
    assert "validationCode" in response.json["error"]


def test_cloudevents_options_handshake_echoes_the_origin_and_allows_any_rate(client):
    response = client.options("/events", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})

    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert response.headers["WebHook-Allowed-Rate"] == "*"


def test_cloudevents_handshake_refuses_an_origin_outside_the_allowed_list(tmp_path, handler):
    client = make_client(tmp_path, handler, allowed_origins={"broker"})

    refused = client.options("/events", headers={"WebHook-Request-Origin": "elsewhere"})
    allowed = client.options("/events", headers={"WebHook-Request-Origin": "broker"})

    assert refused.status_code == 403
    assert "WebHook-Allowed-Origin" not in refused.headers
    assert allowed.headers["WebHook-Allowed-Origin"] == "broker"


def test_plain_options_without_origin_lists_the_allowed_methods(client):
    response = client.options("/events")

    assert response.status_code == 200
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert "WebHook-Allowed-Origin" not in response.headers


# --- body shapes --------------------------------------------------------------------------------


def test_array_of_eventgrid_events_is_handled_in_order(client, handler):
    response = client.post("/events", json=[eventgrid("a"), eventgrid("b")], headers={"aeg-event-type": "Notification"})

    assert response.status_code == 200
    assert response.json == {"received": 2, "processed": 2, "duplicates": 0, "ignored": 0}
    assert handler.ids == ["a", "b"]
    assert handler.seen[0].data == {"orderId": "a"}
    assert handler.seen[0].schema == "EventGridSchema"
    assert handler.seen[0].time == "2026-01-01T12:00:00Z"


def test_single_event_object_is_handled_like_a_batch_of_one(client, handler):
    response = client.post("/events", json=eventgrid("solo"))

    assert response.status_code == 200
    assert response.json["processed"] == 1
    assert handler.ids == ["solo"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/cloudevents+json", cloudevent("ce1")),
        ("application/cloudevents-batch+json; charset=utf-8", [cloudevent("ce1")]),
        ("application/json", [cloudevent("ce1")]),
    ],
)
def test_cloudevents_in_structured_and_batch_mode_are_handled(client, handler, content_type, body):
    response = client.post("/events", data=json.dumps(body), content_type=content_type)

    assert response.status_code == 200
    assert handler.ids == ["ce1"]
    event = handler.seen[0]
    assert (event.type, event.schema, event.source) == ("NewOrder", "CloudEventSchemaV1_0", "/shop/checkout")
    assert event.data == {"orderId": "ce1"}


def test_cloudevent_data_base64_reaches_the_handler_as_bytes(client, handler):
    event = {**cloudevent("bin"), "data_base64": base64.b64encode(b"\x00\x01raw").decode()}
    del event["data"]

    client.post("/events", json=event)

    assert handler.seen[0].data == b"\x00\x01raw"


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "empty array"),
        (b"[42]", "not a JSON object"),
        (json.dumps([{"eventType": "NewOrder", "data": {}}]).encode(), "no string id"),
        (json.dumps([{"id": "x", "data": {}}]).encode(), "neither EventGridSchema"),
        (json.dumps([{"id": "x", "eventType": "", "data": {}}]).encode(), "no string type"),
        (json.dumps([{**cloudevent("x"), "specversion": "0.3"}]).encode(), "specversion"),
        (json.dumps([{**cloudevent("x"), "data_base64": "***"}]).encode(), "data_base64"),
    ],
)
def test_malformed_body_is_a_json_400_and_nothing_is_handled(client, handler, body, complaint):
    response = client.post("/events", data=body, content_type="application/json")

    assert response.status_code == 400
    assert complaint in response.json["error"]
    assert handler.seen == []


def test_one_malformed_event_rejects_the_whole_body_before_anything_runs(client, handler):
    response = client.post("/events", json=[eventgrid("good"), {"id": "bad"}])

    assert response.status_code == 400
    assert handler.seen == []


def test_non_json_content_type_is_unsupported_media_type(client, handler):
    response = client.post("/events", data="id=1", content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert response.json["status"] == 415
    assert handler.seen == []


def test_events_of_unconfigured_types_are_acknowledged_but_not_handled(client, handler):
    response = client.post("/events", json=[eventgrid("x", "OrderShipped"), eventgrid("y")])

    assert response.status_code == 200
    assert response.json["ignored"] == 1
    assert handler.ids == ["y"]


# --- idempotency --------------------------------------------------------------------------------


def test_redelivered_event_is_acknowledged_but_processed_once(client, handler):
    first = client.post("/events", json=[eventgrid("dup")])
    second = client.post("/events", json=[eventgrid("dup")], headers={"aeg-delivery-count": "1"})

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json == {"received": 1, "processed": 0, "duplicates": 1, "ignored": 0}
    assert handler.ids == ["dup"]


def test_same_id_twice_in_one_batch_is_processed_once(client, handler):
    response = client.post("/events", json=[eventgrid("twin"), eventgrid("twin")])

    assert response.json["duplicates"] == 1
    assert handler.ids == ["twin"]


def test_processed_ids_survive_recreating_the_app_on_the_same_data_dir(tmp_path, handler):
    make_client(tmp_path, handler).post("/events", json=[eventgrid("durable")])

    restarted = make_client(tmp_path, handler)
    response = restarted.post("/events", json=[eventgrid("durable")])

    assert response.json["duplicates"] == 1
    assert handler.ids == ["durable"]


def test_concurrent_delivery_of_an_event_in_flight_gets_503_and_does_not_run_twice(tmp_path, handler):
    clients, nested = [], []

    def redeliver_while_processing(event: ReceivedEvent) -> None:
        # The broker retrying (say after a timeout) while the first attempt is still running.
        nested.append(clients[0].post("/events", json=[eventgrid(event.id)]))
        handler(event)

    clients.append(make_client(tmp_path, redeliver_while_processing))
    first = clients[0].post("/events", json=[eventgrid("race")])

    assert first.status_code == 200
    assert nested[0].status_code == 503
    assert nested[0].headers["Retry-After"] == "1"
    assert "another delivery" in nested[0].json["error"]
    assert handler.ids == ["race"]


def test_retryable_error_answers_503_and_the_retry_skips_events_already_done(client, handler):
    handler.fail["b"] = RetryableError("smtp down")
    batch = [eventgrid("a"), eventgrid("b"), eventgrid("c")]

    failed = client.post("/events", json=batch)
    retried = client.post("/events", json=batch)

    assert failed.status_code == 503
    assert failed.json == {"error": "smtp down", "status": 503, "eventId": "b"}
    # The batch stopped at b; the retry redoes b, does c, and leaves a alone.
    assert retried.status_code == 200
    assert retried.json == {"received": 3, "processed": 2, "duplicates": 1, "ignored": 0}
    assert handler.ids == ["a", "b", "c"]


def test_handler_returning_false_asks_for_a_retry(client, handler):
    handler.fail["f"] = False

    assert client.post("/events", json=[eventgrid("f")]).status_code == 503
    assert client.post("/events", json=[eventgrid("f")]).status_code == 200
    assert handler.ids == ["f"]


def test_handler_crash_is_a_500_and_the_event_is_processed_on_retry(client, handler):
    handler.fail["boom"] = KeyError("bug")

    crashed = client.post("/events", json=[eventgrid("boom")])
    retried = client.post("/events", json=[eventgrid("boom")])

    assert crashed.status_code == 500
    assert crashed.json["eventId"] == "boom"
    assert retried.json["processed"] == 1
    assert handler.ids == ["boom"]


def test_rejected_event_is_a_400_naming_it_while_the_rest_of_the_batch_is_handled(client, handler):
    handler.fail["bad"] = RejectedEvent("total does not add up")

    response = client.post("/events", json=[eventgrid("bad"), eventgrid("good")])

    assert response.status_code == 400
    assert response.json["rejected"] == [{"eventId": "bad", "error": "total does not add up"}]
    assert response.json["processed"] == 1
    assert handler.ids == ["good"]


# --- the ledger itself --------------------------------------------------------------------------


def test_failed_attempt_is_not_recorded_as_processed(tmp_path, handler):
    processed = ProcessedEvents(tmp_path)
    client = make_client(tmp_path, handler, processed=processed)
    handler.fail["e"] = RetryableError("later")

    client.post("/events", json=[eventgrid("e")])

    assert processed.status("e") == "failed"
    client.post("/events", json=[eventgrid("e")])
    assert processed.status("e") == "done"


def test_claim_left_by_a_dead_process_is_released_on_start_up(tmp_path):
    before_crash = ProcessedEvents(tmp_path)
    assert before_crash.claim("orphan", "NewOrder") is Claim.CLAIMED

    after_restart = ProcessedEvents(tmp_path)
    released = after_restart.recover()

    assert released == 1
    assert after_restart.claim("orphan", "NewOrder") is Claim.CLAIMED


def test_claim_older_than_its_ttl_can_be_taken_over(tmp_path):
    now = [1000.0]
    ledger = ProcessedEvents(tmp_path, claim_ttl=60, clock=lambda: now[0])
    ledger.claim("stuck", "NewOrder")

    now[0] += 59
    assert ledger.claim("stuck", "NewOrder") is Claim.IN_FLIGHT
    now[0] += 2
    assert ledger.claim("stuck", "NewOrder") is Claim.CLAIMED


def test_done_id_is_never_claimed_again(tmp_path):
    ledger = ProcessedEvents(tmp_path)
    ledger.claim("x", "NewOrder")
    ledger.complete("x")

    assert ledger.claim("x", "NewOrder") is Claim.DONE
    assert ProcessedEvents(tmp_path).claim("x", "NewOrder") is Claim.DONE


# --- health and logs ----------------------------------------------------------------------------


def test_healthz_answers_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_log_lines_carry_event_and_domain_fields(tmp_path, handler, caplog):
    client = make_client(tmp_path, handler, log_fields=lambda event: {"order_id": event.data["orderId"]})
    client.post("/events", json=[eventgrid("logged")])

    with caplog.at_level(logging.INFO, logger="servicekit.webhook"):
        client.post("/events", json=[eventgrid("logged")], headers={"aeg-subscription-name": "orders-sub"})

    record = next(r for r in caplog.records if r.getMessage() == "skipped duplicate event")
    assert (record.event_id, record.event_type, record.order_id) == ("logged", "NewOrder", "logged")
    assert record.subscription == "orders-sub"
