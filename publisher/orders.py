"""Realistic NewOrder payloads, generated without I/O so a seed makes a run repeatable.

The shape matches what the subscribers validate (servicekit.order): totals are computed in Decimal
and only then turned into JSON numbers, so "total equals the sum of the lines" holds exactly.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

DEFAULT_ORDER_ID = "12345"
CURRENCY = "EUR"

# (sku, name, unit price): a small shop's catalogue, prices as text so they are exact Decimals.
CATALOGUE = (
    ("BK-1001", "Paperback notebook A5", "4.50"),
    ("BK-1002", "Hardcover notebook A4", "12.90"),
    ("PN-2001", "Fountain pen", "24.00"),
    ("PN-2002", "Ink cartridges (pack of 6)", "3.95"),
    ("DK-3001", "Desk lamp", "39.99"),
    ("DK-3002", "Monitor stand", "54.50"),
    ("CF-4001", "Coffee beans 1 kg", "18.75"),
    ("CF-4002", "Ceramic mug", "9.99"),
    ("BG-5001", "Laptop backpack", "69.00"),
    ("BG-5002", "Canvas tote bag", "14.25"),
)
FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "Linus")
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Allen",
    "Torvalds",
)


def order_ids(count: int, *, rng: random.Random, first: str | None = None) -> list[str]:
    """`count` distinct order ids. One order is 12345 unless `first` says otherwise; more orders
    count up from `first` (when numeric) or from a random seven-digit base, so a run never repeats
    an id within itself."""
    if count == 1:
        return [first or DEFAULT_ORDER_ID]
    if first is not None and not first.isdigit():
        return [f"{first}-{n}" for n in range(1, count + 1)]
    base = int(first) if first is not None else rng.randrange(1_000_000, 9_000_000)
    return [str(base + n) for n in range(count)]


def _customer(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    # example.com is reserved for documentation (RFC 2606): no real mailbox ever receives these.
    return f"{first} {last}", f"{first}.{last}@example.com".lower()


def new_order(order_id: str, *, rng: random.Random, created_at: dt.datetime) -> dict[str, Any]:
    """One NewOrder event's `data`: one to four distinct products, quantities one to three."""
    name, email = _customer(rng)
    items, total = [], Decimal("0.00")
    for sku, product, price in rng.sample(CATALOGUE, rng.randint(1, 4)):
        quantity = rng.randint(1, 3)
        total += Decimal(price) * quantity
        items.append({"sku": sku, "name": product, "quantity": quantity, "unitPrice": float(Decimal(price))})
    return {
        "orderId": order_id,
        "customerName": name,
        "customerEmail": email,
        "items": items,
        "total": float(total),
        "currency": CURRENCY,
        "createdAt": created_at.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def generate_orders(
    count: int, *, rng: random.Random, first_order_id: str | None = None, now: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """`count` orders, made one at a time as they are consumed: a load test of a million events
    then holds one batch in memory, not a million."""
    now = now or dt.datetime.now(dt.UTC)
    for order_id in order_ids(count, rng=rng, first=first_order_id):
        yield new_order(order_id, rng=rng, created_at=now)
