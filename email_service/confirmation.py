"""The order confirmation mail: what a customer receives for a NewOrder event."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from servicekit.order import Order

# What may stand left of the @ in a Message-ID (RFC 5322 dot-atom text, minus a few odd ones).
_ID_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def message_id(event_id: str, sender: str) -> str:
    """A Message-ID derived from the event id, so a redelivered event's mail is recognisably the same.

    Event Grid ids are usually GUIDs and fit as they are; anything else is hashed rather than escaped.
    """
    local = event_id if _ID_SAFE.match(event_id) else hashlib.sha256(event_id.encode()).hexdigest()[:40]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    return f"<{local}@{domain}>"


def subject(order: Order) -> str:
    return f"Order {order.order_id} confirmed"


def _amount(value: Decimal, currency: str) -> str:
    return f"{value:.2f} {currency}"


def body(order: Order) -> str:
    lines = [
        f"  {line.quantity} x {line.name} @ {_amount(line.unit_price, order.currency)}"
        f" = {_amount(line.total, order.currency)}"
        for line in order.lines
    ]
    return "\n".join(
        [
            f"Hello {order.customer_name},",
            "",
            f"thank you for your order {order.order_id}. We have received it and are getting it ready.",
            "",
            *lines,
            "",
            f"Total: {_amount(order.total, order.currency)}",
            "",
            "Shop Example",
            "",
        ]
    )


def compose(order: Order, *, event_id: str, sender: str) -> EmailMessage:
    """The confirmation for `order` as a plain-text message from `sender` to the customer."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = order.customer_email
    message["Subject"] = subject(order)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(event_id, sender)
    # Lets someone reading the catcher's raw mail find the order and event without parsing the body.
    message["X-Order-Id"] = order.order_id
    message["X-Event-Id"] = event_id
    message.set_content(body(order))
    return message
