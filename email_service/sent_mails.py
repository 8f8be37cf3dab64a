"""Mails the SMTP server accepted, in `<data_dir>/sent_mails.sqlite3`, one row per event."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path
from typing import Any

from servicekit.clock import utc_now_iso
from servicekit.database import Database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sent_mails (
    event_id   TEXT PRIMARY KEY,
    order_id   TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at    TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sent_mails_by_sent_at ON sent_mails (sent_at)",
)


class SentMails:
    FILENAME = "sent_mails.sqlite3"

    def __init__(self, data_dir: Path | str) -> None:
        self.db = Database(Path(data_dir) / self.FILENAME, SCHEMA)

    def was_sent(self, event_id: str) -> bool:
        with self.db.transaction(write=False) as db:
            return db.execute("SELECT 1 FROM sent_mails WHERE event_id = ?", (event_id,)).fetchone() is not None

    def record(self, message: EmailMessage, *, event_id: str, order_id: str) -> None:
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO sent_mails (event_id, order_id, recipient, subject, message_id, sent_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                (event_id, order_id, message["To"], message["Subject"], message["Message-ID"], utc_now_iso()),
            )

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest `limit` mails, newest first."""
        with self.db.transaction(write=False) as db:
            rows = db.execute("SELECT * FROM sent_mails ORDER BY sent_at DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
        return [
            {
                "orderId": row["order_id"],
                "to": row["recipient"],
                "subject": row["subject"],
                "messageId": row["message_id"],
                "sentAt": row["sent_at"],
                "eventId": row["event_id"],
            }
            for row in rows
        ]

    def count(self) -> int:
        with self.db.transaction(write=False) as db:
            return db.execute("SELECT COUNT(*) FROM sent_mails").fetchone()[0]
