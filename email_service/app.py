"""The email service's Flask app: a confirmation mail per NewOrder event, and a list of what went out.

| method | path       | answer                                                             |
|--------|------------|--------------------------------------------------------------------|
| POST   | `/events`  | Event Grid / CloudEvents deliveries (see servicekit.webhook); 503 while SMTP is down |
| OPTIONS| `/events`  | CloudEvents webhook handshake                                      |
| GET    | `/mails`   | `{"count": all sent, "mails": [newest first]}`; `?limit=` 1..1000, default 100 |
| GET    | `/healthz` | `{"status": "ok"}` (does not probe SMTP: a down catcher is retried, not a dead service) |
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify

from email_service import confirmation
from email_service.config import Config
from email_service.mailer import MailerError, SmtpMailer
from email_service.sent_mails import SentMails
from servicekit.idempotency import ProcessedEvents
from servicekit.order import InvalidOrder, order_id_of, parse_order
from servicekit.service import create_service_app, limit_arg
from servicekit.webhook import ReceivedEvent, RejectedEvent, RetryableError, create_webhook_blueprint

log = logging.getLogger(__name__)


def _log_fields(event: ReceivedEvent) -> dict[str, str | None]:
    return {"order_id": order_id_of(event.data)}


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    mailer = config.mailer or SmtpMailer(config.smtp_host, config.smtp_port, config.smtp_timeout)
    sent = SentMails(config.data_dir)
    # A claim must outlive the slowest send (connect and each command may each take the timeout),
    # or a retry arriving meanwhile would take over and mail the customer twice.
    processed = ProcessedEvents(config.data_dir, claim_ttl=max(120.0, 6 * config.smtp_timeout))
    processed.recover()

    def send_confirmation(event: ReceivedEvent) -> None:
        try:
            order = parse_order(event.data)
        except InvalidOrder as error:
            raise RejectedEvent(str(error)) from error
        fields = {"event_id": event.id, "event_type": event.type, "order_id": order.order_id}
        # The mail went out on an earlier attempt that died before the event was marked processed:
        # sending again would be the duplicate this service exists to avoid.
        if sent.was_sent(event.id):
            log.info("confirmation was already sent", extra=fields)
            return
        message = confirmation.compose(order, event_id=event.id, sender=config.smtp_from)
        try:
            mailer.send(message)
        except MailerError as error:
            raise RetryableError(str(error)) from error
        sent.record(message, event_id=event.id, order_id=order.order_id)
        log.info(
            "sent confirmation for order %s",
            order.order_id,
            extra={**fields, "to": order.customer_email, "message_id": message["Message-ID"]},
        )

    app = create_service_app("email_service")
    app.register_blueprint(
        create_webhook_blueprint(
            send_confirmation, event_types=config.event_types, processed=processed, log_fields=_log_fields
        )
    )

    @app.get("/mails")
    def list_mails():
        return jsonify(count=sent.count(), mails=sent.recent(limit_arg()))

    return app
