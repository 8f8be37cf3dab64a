"""The email service app with a fake mailer injected through its Config: no SMTP, no sockets."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from email_service import confirmation
from email_service.app import create_app
from email_service.config import Config
from email_service.mailer import MailerError, SmtpMailer
from email_service.sent_mails import SentMails
from servicekit.order import parse_order


class FakeMailer:
    """Accepts messages like an SMTP server would, after refusing the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage) -> None:
        if self.failures:
            self.failures -= 1
            raise MailerError("SMTP localhost:1025 did not accept the mail: [Errno 111] Connection refused")
        self.sent.append(message)


def order_data(order_id: str = "12345", **overrides) -> dict:
    data = {
        "orderId": order_id,
        "customerName": "Ada Lovelace",
        "customerEmail": "ada@example.com",
        "items": [
            {"sku": "CF-4001", "name": "Coffee beans 1 kg", "quantity": 2, "unitPrice": 18.75},
            {"sku": "CF-4002", "name": "Ceramic mug", "quantity": 3, "unitPrice": 9.99},
        ],
        "total": 67.47,
        "currency": "EUR",
        "createdAt": "2026-01-01T12:00:00.000Z",
    }
    return {**data, **overrides}


def new_order(event_id: str = "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", **data) -> dict:
    return {
        "id": event_id,
        "eventType": "NewOrder",
        "subject": "orders/12345",
        "dataVersion": "1.0",
        "data": order_data(**data),
    }


def make_client(data_dir, mailer):
    return create_app(Config(data_dir=data_dir, mailer=mailer)).test_client()


@pytest.fixture
def mailer() -> FakeMailer:
    return FakeMailer()


@pytest.fixture
def client(tmp_path, mailer):
    return make_client(tmp_path, mailer)


def test_confirmation_goes_to_the_customer_with_the_order_id_in_the_subject(client, mailer):
    response = client.post("/events", json=[new_order()])

    assert response.status_code == 200
    [message] = mailer.sent
    assert message["To"] == "ada@example.com"
    assert message["From"] == "orders@shop.example"
    assert message["Subject"] == "Order 12345 confirmed"


def test_confirmation_body_lists_each_line_and_the_total_with_currency(client, mailer):
    client.post("/events", json=[new_order()])

    body = mailer.sent[0].get_content()

    assert "Hello Ada Lovelace," in body
    assert "  2 x Coffee beans 1 kg @ 18.75 EUR = 37.50 EUR\n" in body
    assert "  3 x Ceramic mug @ 9.99 EUR = 29.97 EUR\n" in body
    assert "Total: 67.47 EUR" in body
    assert mailer.sent[0].get_content_type() == "text/plain"


def test_message_id_is_derived_from_the_event_id(client, mailer):
    client.post("/events", json=[new_order("2d1781af-3a4c-4d7c-bd0c-e34b19da4e66")])

    assert mailer.sent[0]["Message-ID"] == "<2d1781af-3a4c-4d7c-bd0c-e34b19da4e66@shop.example>"


def test_event_id_unfit_for_a_message_id_is_hashed_stably():
    odd = confirmation.message_id("id with <spaces> and @", "Shop <orders@shop.example>")

    assert odd == confirmation.message_id("id with <spaces> and @", "Shop <orders@shop.example>")
    assert odd.startswith("<")
    assert odd.endswith("@shop.example>")
    assert " " not in odd
    assert odd.count("@") == 1


def test_smtp_failure_answers_503_and_the_retry_sends_exactly_once(tmp_path):
    mailer = FakeMailer(failures=1)
    client = make_client(tmp_path, mailer)

    failed = client.post("/events", json=[new_order()], headers={"aeg-delivery-count": "0"})
    retried = client.post("/events", json=[new_order()], headers={"aeg-delivery-count": "1"})
    again = client.post("/events", json=[new_order()], headers={"aeg-delivery-count": "2"})

    assert failed.status_code == 503
    assert "did not accept" in failed.json["error"]
    assert retried.status_code == 200
    assert again.json["duplicates"] == 1
    assert len(mailer.sent) == 1
    assert client.get("/mails").json["count"] == 1


def test_nothing_is_listed_as_sent_while_smtp_refuses(tmp_path):
    client = make_client(tmp_path, FakeMailer(failures=5))

    client.post("/events", json=[new_order()])

    assert client.get("/mails").json == {"count": 0, "mails": []}


def test_mail_sent_before_a_crash_is_not_sent_again_on_redelivery(tmp_path, mailer):
    # The previous process got the mail accepted and recorded, then died before marking the event
    # processed: the redelivery must not mail the customer a second time.
    message = confirmation.compose(parse_order(order_data()), event_id="ev-1", sender="orders@shop.example")
    SentMails(tmp_path).record(message, event_id="ev-1", order_id="12345")

    response = make_client(tmp_path, mailer).post("/events", json=[new_order("ev-1")])

    assert response.status_code == 200
    assert mailer.sent == []


def test_sent_mails_survive_a_restart_and_duplicates_are_not_resent(tmp_path, mailer):
    make_client(tmp_path, mailer).post("/events", json=[new_order("ev-1")])

    restarted = make_client(tmp_path, mailer)
    restarted.post("/events", json=[new_order("ev-1")])

    assert len(mailer.sent) == 1
    assert restarted.get("/mails").json["count"] == 1


def test_mail_listing_shows_order_recipient_subject_and_time_newest_first(client):
    client.post("/events", json=[new_order("ev-1", order_id="100")])
    client.post("/events", json=[new_order("ev-2", order_id="200", customerEmail="grace@example.com")])

    mails = client.get("/mails").json["mails"]

    assert [(m["orderId"], m["to"], m["subject"]) for m in mails] == [
        ("200", "grace@example.com", "Order 200 confirmed"),
        ("100", "ada@example.com", "Order 100 confirmed"),
    ]
    assert mails[0]["sentAt"].endswith("Z")
    assert mails[0]["messageId"] == "<ev-2@shop.example>"


def test_order_without_a_usable_address_is_rejected_and_not_mailed(client, mailer):
    response = client.post("/events", json=[new_order(customerEmail="ada@example.com\r\nBcc: all@example.com")])

    assert response.status_code == 400
    assert mailer.sent == []


def test_smtp_mailer_turns_a_refused_connection_into_a_mailer_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(smtplib, "SMTP", refuse)

    with pytest.raises(MailerError, match="Connection refused"):
        SmtpMailer("localhost", 1025, timeout=1).send(EmailMessage())


def test_smtp_mailer_turns_a_refused_recipient_into_a_mailer_error(monkeypatch):
    class RefusingServer:
        def __init__(self, host, port, timeout):
            self.address = (host, port, timeout)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def send_message(self, message):
            raise smtplib.SMTPRecipientsRefused({"ada@example.com": (550, b"no such mailbox")})

    monkeypatch.setattr(smtplib, "SMTP", RefusingServer)

    with pytest.raises(MailerError, match="did not accept"):
        SmtpMailer("mailhost", 1025, timeout=1).send(EmailMessage())


def test_config_reads_smtp_settings_from_the_environment():
    config = Config.from_env(
        {"SMTP_HOST": "mailcatcher", "SMTP_PORT": "2525", "SMTP_FROM": "shop@example.org", "SMTP_TIMEOUT": "2.5"}
    )
    defaults = Config.from_env({})

    assert (config.smtp_host, config.smtp_port, config.smtp_from, config.smtp_timeout) == (
        "mailcatcher",
        2525,
        "shop@example.org",
        2.5,
    )
    assert (defaults.smtp_host, defaults.smtp_port, defaults.port, defaults.smtp_timeout) == (
        "localhost",
        1025,
        5002,
        10.0,
    )
