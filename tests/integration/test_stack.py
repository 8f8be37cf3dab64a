"""The runnable stack as real processes: broker + order_processor + email_service + an SMTP server.

A NewOrder published either way (the prototype's POST /publish, Event Grid's POST /api/events)
ends up as one stored order and exactly one confirmation mail with the order's details.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import requests

from tests.integration.processes import Broker, SmtpSink, event, order, subscription, wait_until

pytestmark = pytest.mark.integration

TOPIC = "default"


@pytest.fixture(scope="module")
def stack(module_processes):
    smtp = SmtpSink().start()
    try:
        broker = module_processes.broker()
        orders = module_processes.order_processor()
        mails = module_processes.email_service(smtp.port)
        api = Broker.of(broker)
        # Through the management API, with the validation handshake each real subscriber answers.
        for name, service in (("order-processor", orders), ("email-service", mails)):
            api.subscribe(TOPIC, name, subscription(service.url + "/events", event_types=["NewOrder"]))
        yield SimpleNamespace(api=api, orders=orders, mails=mails, smtp=smtp)
    finally:
        smtp.stop()


def stored_order(stack, order_id: str) -> dict | None:
    listing = requests.get(stack.orders.url + "/orders", timeout=5).json()
    return next((o for o in listing["orders"] if o["orderId"] == order_id), None)


def mails_for(stack, order_id: str) -> list:
    return [m for m in stack.smtp.snapshot() if m["X-Order-Id"] == order_id]


def assert_processed_once(stack, order_id: str, event_id: str) -> None:
    got = wait_until(lambda: stored_order(stack, order_id), 15, f"order {order_id} at GET /orders")
    assert got["total"] == 33.0 and got["currency"] == "EUR" and got["itemCount"] == 3
    assert got["customerEmail"] == "ada@example.com" and got["eventId"] == event_id

    wait_until(lambda: mails_for(stack, order_id), 15, f"the confirmation mail of order {order_id}")
    # Only once both deliveries are settled can "exactly one" be checked: a redelivery would come before.
    for name in ("order-processor", "email-service"):
        rows = wait_until(lambda name=name: [r for r in stack.api.query(
            "SELECT d.status, d.attempts FROM named_deliveries d JOIN events e ON e.seq = d.event_seq "
            "WHERE e.event_id=? AND d.subscription_name=? AND d.status='delivered'", (event_id, name))],
            15, f"{name}'s delivery of {event_id} to be recorded as delivered")
        assert rows == [{"status": "delivered", "attempts": 1}]
    [mail] = mails_for(stack, order_id)
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == f"Order {order_id} confirmed"
    assert mail["X-Event-Id"] == event_id
    text = mail.get_content()
    assert "Hello Ada Lovelace," in text
    assert "2 x Paperback notebook A5 @ 4.50 EUR = 9.00 EUR" in text
    assert "Total: 33.00 EUR" in text


def test_legacy_publish_stores_the_order_and_sends_exactly_one_mail(stack):
    # The prototype's curl, byte for byte: curl -X POST .../publish -H "Content-Type: application/json" -d '...'
    body = json.dumps({"eventType": "NewOrder", "data": order("L-1001")})
    resp = requests.post(stack.api.url + "/publish", data=body, headers={"Content-Type": "application/json"}, timeout=5)
    assert resp.status_code == 202, resp.text
    answer = resp.json()
    assert answer["status"] == "accepted" and answer["subscriptions"] == 2
    assert_processed_once(stack, "L-1001", answer["id"])


def test_event_grid_publish_stores_the_order_and_sends_exactly_one_mail(stack):
    new_order = event("NewOrder", order("EG-2002"), subject="orders/EG-2002")
    resp = stack.api.request("POST", "/api/events", params={"api-version": "2018-01-01"}, json=[new_order])
    assert resp.status_code == 200 and resp.content == b""
    assert_processed_once(stack, "EG-2002", new_order["id"])


def test_events_of_other_types_reach_neither_subscriber(stack):
    other = event("OrderShipped", order("SHIP-3003"))
    stack.api.publish_ok([other])
    marker = event("NewOrder", order("AFTER-3004"))
    stack.api.publish_ok([marker])
    # The later NewOrder arriving proves the earlier event had its chance to be (wrongly) delivered.
    assert_processed_once(stack, "AFTER-3004", marker["id"])
    assert stored_order(stack, "SHIP-3003") is None and not mails_for(stack, "SHIP-3003")
    assert stack.api.query("SELECT COUNT(*) AS n FROM deliveries d JOIN events e ON e.seq = d.event_seq "
                           "WHERE e.event_id=?", (other["id"],)) == [{"n": 0}]


def test_legacy_subscribe_registers_a_webhook_that_gets_the_next_event(stack, webhook):
    early = event("NewOrder", order("EARLY-4001"))
    stack.api.publish_ok([early])
    hook = webhook(validate=False)  # the prototype had no handshake, and /subscribe does not do one
    resp = requests.post(stack.api.url + "/subscribe", json={"eventType": "NewOrder", "endpoint": hook.url}, timeout=5)
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "subscribed"
    # The same registration again is not a second subscription.
    again = requests.post(stack.api.url + "/subscribe", json={"eventType": "NewOrder", "endpoint": hook.url}, timeout=5)
    assert again.status_code == 200 and again.json()["subscription"] == resp.json()["subscription"]

    resp = requests.post(stack.api.url + "/publish", json={"eventType": "NewOrder", "data": order("NEXT-4002")}, timeout=5)
    assert resp.status_code == 202 and resp.json()["subscriptions"] == 3
    next_id = resp.json()["id"]
    hook.wait_for_ids({next_id}, 10)
    assert_processed_once(stack, "NEXT-4002", next_id)
    # Azure routes at publish time: the event published before the subscription existed is not sent.
    assert hook.ids() == [next_id]
    [delivery] = hook.deliveries()
    assert delivery.events[0]["data"]["orderId"] == "NEXT-4002"
    assert delivery.headers["aeg-event-type"] == "Notification"


def test_declared_subscriptions_wait_for_subscribers_that_start_later(processes, tmp_path):
    """BROKER_CONFIG subscriptions to services that are not up yet: events published meanwhile are
    kept and delivered once the handshake succeeds (as with `docker compose up` in any order)."""
    smtp = SmtpSink().start()
    try:
        orders = processes.order_processor(start=False)
        mails = processes.email_service(smtp.port, start=False)
        config = tmp_path / "broker-config.json"
        config.write_text(json.dumps({"topics": [{"name": "orders", "subscriptions": [
            {"name": "order-processor", **subscription(orders.url + "/events", event_types=["NewOrder"])},
            {"name": "email-service", **subscription(mails.url + "/events", event_types=["NewOrder"])},
        ]}]}))
        api = Broker.of(processes.broker(BROKER_CONFIG=config))
        states = {s["name"]: s["properties"]["provisioningState"]
                  for s in api.request("GET", "/topics/orders/eventSubscriptions").json()["value"]}
        assert states == {"order-processor": "AwaitingValidation", "email-service": "AwaitingValidation"}

        waiting = event("NewOrder", order("DECL-5001"))
        api.publish_ok([waiting], topic="orders")
        orders.start()
        mails.start()
        [mail] = smtp.wait_for_count(1, 30)
        assert mail["X-Order-Id"] == "DECL-5001"
        listing = requests.get(orders.url + "/orders", timeout=5).json()
        assert [o["orderId"] for o in listing["orders"]] == ["DECL-5001"]
        assert api.wait_settled("orders", "email-service", 1)["delivered"] == 1
        assert len(smtp.snapshot()) == 1
    finally:
        smtp.stop()
