"""Processed orders, in `<data_dir>/orders.sqlite3`: one row per NewOrder event handled.

A row per event rather than per order id: the publisher's default order id (12345) comes back on
every run, and each run's event is a new order placement that was processed in its own right.
`get(order_id)` returns the latest one.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from servicekit.clock import utc_now_iso
from servicekit.database import Database
from servicekit.order import Order

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS orders (
    event_id       TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,
    customer_name  TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    total          TEXT NOT NULL,
    currency       TEXT NOT NULL,
    item_count     INTEGER NOT NULL,
    lines          TEXT NOT NULL,
    created_at     TEXT,
    processed_at   TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS orders_by_order_id ON orders (order_id, processed_at)",
    "CREATE INDEX IF NOT EXISTS orders_by_processed_at ON orders (processed_at)",
)


def _money(text: str) -> float:
    # Stored as the exact decimal text; served as a JSON number, the way the publisher sent it.
    return float(Decimal(text))


def _summary(row: Any) -> dict[str, Any]:
    return {
        "orderId": row["order_id"],
        "customer": row["customer_name"],
        "customerEmail": row["customer_email"],
        "total": _money(row["total"]),
        "currency": row["currency"],
        "itemCount": row["item_count"],
        "createdAt": row["created_at"],
        "processedAt": row["processed_at"],
        "eventId": row["event_id"],
    }


class OrderStore:
    FILENAME = "orders.sqlite3"

    def __init__(self, data_dir: Path | str) -> None:
        self.db = Database(Path(data_dir) / self.FILENAME, SCHEMA)

    def add(self, order: Order, *, event_id: str) -> bool:
        """Store an order processed from `event_id`; False if that event's order is already stored.

        The check matters when a crash came after this insert but before the event was marked
        processed: the redelivery must not store the order twice.
        """
        lines = [
            {
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unitPrice": str(line.unit_price),
                "lineTotal": str(line.total),
            }
            for line in order.lines
        ]
        with self.db.transaction() as db:
            cursor = db.execute(
                "INSERT INTO orders (event_id, order_id, customer_name, customer_email, total, currency,"
                " item_count, lines, created_at, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO NOTHING",
                (
                    event_id,
                    order.order_id,
                    order.customer_name,
                    order.customer_email,
                    str(order.total),
                    order.currency,
                    order.item_count,
                    json.dumps(lines),
                    order.created_at,
                    utc_now_iso(),
                ),
            )
            return cursor.rowcount == 1

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """Summaries of the latest `limit` processed orders, newest first."""
        with self.db.transaction(write=False) as db:
            rows = db.execute(
                "SELECT * FROM orders ORDER BY processed_at DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_summary(row) for row in rows]

    def count(self) -> int:
        with self.db.transaction(write=False) as db:
            return db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]

    def get(self, order_id: str) -> dict[str, Any] | None:
        """The latest processing of `order_id`, with its lines; None if it was never processed."""
        with self.db.transaction(write=False) as db:
            row = db.execute(
                "SELECT * FROM orders WHERE order_id = ? ORDER BY processed_at DESC, rowid DESC LIMIT 1",
                (order_id,),
            ).fetchone()
        if row is None:
            return None
        lines = [
            {**line, "unitPrice": _money(line["unitPrice"]), "lineTotal": _money(line["lineTotal"])}
            for line in json.loads(row["lines"])
        ]
        return {**_summary(row), "items": lines}
