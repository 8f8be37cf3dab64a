"""A mail catcher outage: the email service answers 503 while SMTP is down, the broker retries on
its schedule, and once SMTP is back on the same port every confirmation arrives exactly once."""

from __future__ import annotations

import pytest
import requests

from tests.integration.processes import Broker, SmtpSink, event, order, subscription, wait_until

pytestmark = pytest.mark.integration

SCALE = 0.01  # retries after 0.1 s, 0.3 s, 0.6 s, 3 s ...
ORDERS = 10


def test_orders_published_while_smtp_is_down_are_mailed_exactly_once_when_it_returns(processes):
    smtp = SmtpSink()  # not started: connections to its port are refused
    mails = processes.email_service(smtp.port, smtp_timeout=2)
    broker = Broker.of(processes.broker(time_scale=SCALE))
    broker.subscribe("default", "email-service", subscription(mails.url + "/events", event_types=["NewOrder"]))
    sent = [event("NewOrder", order(f"OUT-{n}", email=f"customer{n}@example.com")) for n in range(ORDERS)]
    broker.publish_ok(sent)
    by_event = {e["id"]: e["data"]["orderId"] for e in sent}

    def failed_twice() -> bool:
        rows = broker.query("SELECT d.attempts, d.last_status FROM named_deliveries d WHERE d.subscription_name='email-service'")
        return len(rows) == ORDERS and all(r["attempts"] >= 2 and r["last_status"] == 503 for r in rows)

    wait_until(failed_twice, 15, "every order to have been refused with 503 twice")
    assert requests.get(mails.url + "/mails", timeout=5).json()["count"] == 0
    statuses = broker.statuses("default", "email-service")
    assert statuses["pending"] + statuses["inflight"] == ORDERS, "an order was given up while SMTP was down"

    smtp.start()  # the same port again
    try:
        try:
            smtp.wait_for_count(ORDERS, 20)
        except AssertionError as exc:  # say where each delivery stands in the broker
            rows = broker.query("SELECT id, status, attempts, last_status, next_attempt_at - strftime('%s','now') AS due_in "
                                "FROM named_deliveries WHERE subscription_name='email-service'")
            raise AssertionError(f"{exc}\n" + "\n".join(map(str, rows))) from None
        assert broker.wait_settled("default", "email-service", ORDERS) == {"delivered": ORDERS}
        got = smtp.snapshot()  # anything sent twice would have arrived before the deliveries settled
        assert len(got) == ORDERS
        assert sorted(m["Message-ID"] for m in got) == sorted({m["Message-ID"] for m in got}), "a mail was sent twice"
        assert {m["X-Event-Id"]: m["X-Order-Id"] for m in got} == by_event
        for mail in got:
            n = mail["X-Order-Id"].removeprefix("OUT-")
            assert mail["To"] == f"customer{n}@example.com"
            assert mail["Subject"] == f"Order OUT-{n} confirmed"
            assert "Total: 33.00 EUR" in mail.get_content()
        listed = requests.get(mails.url + "/mails", params={"limit": 100}, timeout=5).json()
        assert listed["count"] == ORDERS
    finally:
        smtp.stop()
