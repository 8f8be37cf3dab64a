"""The `data` of a NewOrder event, validated into an `Order`.

Both subscribers read the same payload, so its rules live here once. Money is `Decimal` from the
start: the JSON numbers the publisher sends (19.99) are floats on the wire, and summing floats would
make "total equals the sum of the lines" fail by a rounding error.

    {"orderId": "12345", "customerName": "Ada Lovelace", "customerEmail": "ada@example.com",
     "items": [{"sku": "BK-001", "name": "Notebook", "quantity": 2, "unitPrice": 4.5}],
     "total": 9.0, "currency": "EUR", "createdAt": "2026-01-01T12:00:00Z"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
# Deliberately loose (one @, a dot in the domain, no whitespace): the mail server is the authority;
# this only rejects what cannot be an address, including CR/LF that would inject mail headers.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class InvalidOrder(ValueError):
    """The order data breaks a rule; redelivering the same event cannot fix it."""


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def total(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(CENT)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    customer_name: str
    customer_email: str
    lines: tuple[OrderLine, ...]
    total: Decimal
    currency: str
    created_at: str | None

    @property
    def item_count(self) -> int:
        """Units ordered (2 notebooks and 1 pen are 3 items), not the number of lines."""
        return sum(line.quantity for line in self.lines)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # orderId 12345 and "12345" name the same order
    if not isinstance(value, str) or not value.strip():
        raise InvalidOrder(f"{key} must be a non-empty string")
    if "\r" in value or "\n" in value:
        raise InvalidOrder(f"{key} must be a single line")
    return value.strip()


def _money(value: Any, what: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidOrder(f"{what} must be a number")
    try:
        # str() first: Decimal(19.99) would keep the float's binary error, Decimal("19.99") doesn't.
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidOrder(f"{what} must be a number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidOrder(f"{what} must be a non-negative amount")
    if amount != amount.quantize(CENT):
        raise InvalidOrder(f"{what} has more than two decimals")
    return amount.quantize(CENT)


def _line(item: Any, index: int) -> OrderLine:
    if not isinstance(item, dict):
        raise InvalidOrder(f"items[{index}] must be an object")
    quantity = item.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise InvalidOrder(f"items[{index}].quantity must be a positive integer")
    try:
        return OrderLine(
            sku=_text(item, "sku"),
            name=_text(item, "name"),
            quantity=quantity,
            unit_price=_money(item.get("unitPrice"), f"items[{index}].unitPrice"),
        )
    except InvalidOrder as error:
        raise InvalidOrder(f"items[{index}]: {error}") from None


def parse_order(data: Any) -> Order:
    """Validate a NewOrder payload; raises `InvalidOrder` naming the first rule it breaks."""
    if not isinstance(data, dict):
        raise InvalidOrder("order data must be a JSON object")
    items = data.get("items")
    if not isinstance(items, list) or not items:
        raise InvalidOrder("items must be a non-empty list")
    lines = tuple(_line(item, index) for index, item in enumerate(items))
    email = _text(data, "customerEmail")
    if not _EMAIL.match(email):
        raise InvalidOrder("customerEmail is not an email address")
    currency = _text(data, "currency")
    if not _CURRENCY.match(currency):
        raise InvalidOrder("currency must be a three-letter ISO 4217 code such as EUR")
    total = _money(data.get("total"), "total")
    expected = sum((line.total for line in lines), Decimal("0.00"))
    if total != expected:
        raise InvalidOrder(f"total {total} does not equal the sum of the lines {expected}")
    created_at = data.get("createdAt")
    return Order(
        order_id=_text(data, "orderId"),
        customer_name=_text(data, "customerName"),
        customer_email=email,
        lines=lines,
        total=total,
        currency=currency,
        created_at=created_at if isinstance(created_at, str) else None,
    )


def order_id_of(data: Any) -> str | None:
    """The orderId of a payload for log lines, without validating anything else (may be None)."""
    value = data.get("orderId") if isinstance(data, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
