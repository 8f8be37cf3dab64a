"""The example system as a user runs it: `docker compose up`, publish, read the order list and the mail.

Order ids are unique per test so each test finds its own order and mail in a shared stack; the
restart test runs last (file order) because it takes the stack down and up.
"""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

import pytest

from publisher.orders import generate_orders
from tests.e2e.stack import Stack, wait_until
from tests.mailbox import Mail

pytestmark = pytest.mark.e2e

SUBSCRIPTIONS = {
    "order-processor": "http://order_processor:5001/events",
    "email-service": "http://email_service:5002/events",
}
DELIVERY_TIMEOUT = 60  # seconds; a delivery normally takes well under one


def new_order_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sent_order(order_id: str, seed: int) -> dict:
    """The order `python -m publisher --count 1 --order-id ID --seed SEED` sends: its generator is
    pure, so the same seed makes it again here -- an oracle independent of the subscribers' code."""
    return next(iter(generate_orders(1, rng=random.Random(seed), first_order_id=order_id)))


def processed_order(stack: Stack, order_id: str) -> dict:
    def check():
        status, body = stack.get_json("order_processor", f"/orders/{order_id}")
        return body if status == 200 else None

    return wait_until(check, timeout=DELIVERY_TIMEOUT, what=f"order {order_id} processed by order_processor",
                      diagnostics=stack.logs)


def listed_orders(stack: Stack) -> list[dict]:
    status, body = stack.get_json("order_processor", "/orders?limit=1000")
    assert status == 200, body
    return body["orders"]


def mail_for(stack: Stack, order_id: str, timeout: float = DELIVERY_TIMEOUT) -> Mail:
    return stack.mailbox.wait_for(lambda mail: order_id in mail.subject, timeout=timeout)


def stored_deliveries(stack: Stack, order_id: str, subscription: str, status: str, min_attempts: int = 0) -> dict | None:
    """The broker's deliveries of the order's event by subscription (from its dashboard API), once
    `subscription`'s delivery has `status` after at least `min_attempts` attempts; else None."""
    _status, body = stack.get_json("broker", "/dashboard/api/events?limit=500")
    event = next((e for e in body.get("events", []) if e["subject"] == f"orders/{order_id}"), None)
    found = {d["subscription"]: d for d in event["deliveries"]} if event else {}
    delivery = found.get(subscription, {})
    if delivery.get("status") == status and delivery.get("attemptCount", 0) >= min_attempts:
        return found
    return None


def amount(value: float, currency: str = "EUR") -> str:
    return f"{Decimal(str(value)):.2f} {currency}"


def assert_confirmation(mail: Mail, order: dict) -> None:
    """The mail says what the order says: addressee, id, every line and the total."""
    assert mail.to == (order["customerEmail"].lower(),)
    assert order["orderId"] in mail.subject
    for item in order["items"]:
        line = f"{item['quantity']} x {item['name']} @ {amount(item['unitPrice'])}"
        assert line in mail.body, f"{line!r} missing from:\n{mail.body}"
    assert f"Total: {amount(order['total'])}" in mail.body, mail.body


def test_config_subscriptions_pass_the_webhook_validation_handshake(stack: Stack):
    for name, endpoint in SUBSCRIPTIONS.items():
        def succeeded(name=name):
            status, body = stack.get_json("broker", f"/topics/default/eventSubscriptions/{name}")
            return body if status == 200 and body["properties"]["provisioningState"] == "Succeeded" else None

        resource = wait_until(succeeded, timeout=DELIVERY_TIMEOUT, what=f"subscription {name} validated",
                              diagnostics=stack.logs)
        props = resource["properties"]
        destination = props["destination"]["properties"]
        assert destination["endpointUrl"] == endpoint
        assert destination.get("skipValidation") is False  # Succeeded through the real handshake
        assert props["filter"]["includedEventTypes"] == ["NewOrder"]
        assert props["deadLetterDestination"]["endpointType"] == "StorageBlob"


def test_published_order_is_listed_and_mailed_to_the_customer(stack: Stack):
    order_id, seed = new_order_id("E2E"), random.randrange(2**32)
    output = stack.publish("--count", "1", "--order-id", order_id, "--seed", str(seed))
    assert "accepted=1 failed=0" in output, output
    sent = sent_order(order_id, seed)

    stored = processed_order(stack, order_id)
    assert stored["customerEmail"] == sent["customerEmail"]
    assert stored["total"] == sent["total"]
    assert stored["itemCount"] == sum(item["quantity"] for item in sent["items"])
    assert order_id in [order["orderId"] for order in listed_orders(stack)]

    assert_confirmation(mail_for(stack, order_id), sent)


def test_prototype_publish_endpoint_delivers_to_both_subscribers(stack: Stack):
    # What the prototype's README did with curl: POST /publish {"eventType", "data"}.
    order = {
        "orderId": new_order_id("CURL"),
        "customerName": "Grace Hopper",
        "customerEmail": "grace.hopper@example.com",
        "items": [{"sku": "PN-2001", "name": "Fountain pen", "quantity": 2, "unitPrice": 24.0},
                  {"sku": "CF-4002", "name": "Ceramic mug", "quantity": 1, "unitPrice": 9.99}],
        "total": 57.99,
        "currency": "EUR",
    }
    response = stack.http.post(stack.url("broker", "/publish"), json={"eventType": "NewOrder", "data": order}, timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["subscriptions"] == 2

    stored = processed_order(stack, order["orderId"])
    assert stored["customerEmail"] == order["customerEmail"]
    assert stored["total"] == order["total"]
    assert_confirmation(mail_for(stack, order["orderId"]), order)


def test_down_and_up_keeps_orders_subscriptions_and_undelivered_events(stack: Stack):
    # With the email service stopped, the broker can only keep the event's mail delivery pending
    # in its store; after `docker compose down` and `up` it must still deliver it, from the volume.
    stopped = stack.compose_run("stop", "email_service")
    assert stopped.returncode == 0, stopped.stderr
    order_id, seed = new_order_id("KEEP"), random.randrange(2**32)
    assert "accepted=1 failed=0" in stack.publish("--count", "1", "--order-id", order_id, "--seed", str(seed))
    sent = sent_order(order_id, seed)
    processed_order(stack, order_id)  # the order processor is up and got it
    before = {order["eventId"] for order in listed_orders(stack)}
    # Down only once the broker has tried the mail and recorded the failure, so what happens after
    # the restart is a retry from the store (a connect to the stopped container may take a while).
    failed = wait_until(lambda: stored_deliveries(stack, order_id, "email-service", "pending", min_attempts=1),
                        timeout=DELIVERY_TIMEOUT, what=f"failed mail delivery of order {order_id} recorded",
                        diagnostics=stack.logs)
    assert not [mail for mail in stack.mailbox.messages() if order_id in mail.subject]

    stack.down_and_up()

    after = listed_orders(stack)
    assert before <= {order["eventId"] for order in after}, "orders were lost with the containers"
    for name in SUBSCRIPTIONS:
        status, body = stack.get_json("broker", f"/topics/default/eventSubscriptions/{name}")
        assert status == 200, body
        assert body["properties"]["provisioningState"] == "Succeeded", body
    # The pending delivery waits out Azure's retry schedule (10 s, 30 s, 1 min ...) from its last
    # failed attempt, so allow for a couple of steps of it.
    assert_confirmation(mail_for(stack, order_id, timeout=150), sent)
    # Redelivery after the restart did not process the order a second time.
    assert [order["orderId"] for order in listed_orders(stack)].count(order_id) == 1

    # The broker's store still holds the event published before `down`, with the mail delivery's
    # failed attempt from before the restart and its success after it.
    after_restart = wait_until(lambda: stored_deliveries(stack, order_id, "email-service", "delivered"),
                               timeout=30, what=f"stored event of order {order_id} delivered")
    assert after_restart["email-service"]["attemptCount"] > failed["email-service"]["attemptCount"]
    assert after_restart["order-processor"]["status"] == "delivered"
