"""Which event ids a service has already processed, kept in SQLite so it survives restarts.

Event Grid delivers at least once: a retry after a timeout, or a redelivery after the subscriber
crashed between doing the work and answering, brings the same event id again. A subscriber stays
correct by doing the work once per id. Each id moves through explicit states:

    (absent) --claim--> processing --complete--> done
                            |  ^
                    release |  | claim (next delivery)
                            v  |
                           failed

An id is only marked `done` after its handler succeeded, so a failed attempt is retried by the next
delivery. The `processing` claim is what stops two concurrent deliveries of one id (the broker
retrying while the first attempt is still running) from both doing the work.

One process owns a data dir: on start-up `recover()` turns claims left `processing` by a process
that died back into `failed`, so their redelivery is processed instead of waiting for the claim to
go stale.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from pathlib import Path

from servicekit.database import Database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS processed_events (
    event_id   TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('processing', 'done', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    claimed_at REAL,
    done_at    REAL,
    last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS processed_events_status ON processed_events (status, claimed_at)",
)


class Claim(enum.Enum):
    """What `ProcessedEvents.claim` found: go ahead, already done, or someone else is on it."""

    CLAIMED = "claimed"
    DONE = "done"
    IN_FLIGHT = "in_flight"


class ProcessedEvents:
    """The processed-id ledger of one service, in `<data_dir>/processed_events.sqlite3`.

    `claim_ttl` bounds how long a `processing` claim blocks other deliveries: a handler stuck past it
    (or a thread that died without releasing) no longer holds the event hostage. Keep it above the
    slowest handler (the email service's SMTP timeout) so a slow success isn't done twice.
    """

    FILENAME = "processed_events.sqlite3"

    def __init__(self, data_dir: Path | str, *, claim_ttl: float = 120.0, clock: Callable[[], float] = time.time):
        self.db = Database(Path(data_dir) / self.FILENAME, SCHEMA)
        self.claim_ttl = claim_ttl
        self._clock = clock

    def recover(self) -> int:
        """Release claims a previous process left behind (call once at start-up); returns how many."""
        with self.db.transaction() as db:
            cursor = db.execute(
                "UPDATE processed_events SET status = 'failed', last_error = 'interrupted: process restarted'"
                " WHERE status = 'processing'"
            )
            return cursor.rowcount

    def claim(self, event_id: str, event_type: str) -> Claim:
        """Atomically take an id for processing, unless it is done or another delivery holds it."""
        now = self._clock()
        with self.db.transaction() as db:
            row = db.execute(
                "SELECT status, claimed_at FROM processed_events WHERE event_id = ?", (event_id,)
            ).fetchone()
            if row is not None:
                status, claimed_at = row
                if status == "done":
                    return Claim.DONE
                if status == "processing" and now - claimed_at < self.claim_ttl:
                    return Claim.IN_FLIGHT
            db.execute(
                "INSERT INTO processed_events (event_id, event_type, status, attempts, claimed_at)"
                " VALUES (?, ?, 'processing', 1, ?)"
                " ON CONFLICT (event_id) DO UPDATE SET status = 'processing',"
                " attempts = attempts + 1, claimed_at = excluded.claimed_at",
                (event_id, event_type, now),
            )
            return Claim.CLAIMED

    def complete(self, event_id: str) -> None:
        """Mark a claimed id done: from now on deliveries of it are acknowledged and skipped."""
        with self.db.transaction() as db:
            db.execute(
                "UPDATE processed_events SET status = 'done', done_at = ?, last_error = NULL WHERE event_id = ?",
                (self._clock(), event_id),
            )

    def release(self, event_id: str, error: str) -> None:
        """Give a claimed id back after a failed attempt, so the broker's retry processes it."""
        with self.db.transaction() as db:
            db.execute(
                "UPDATE processed_events SET status = 'failed', last_error = ? WHERE event_id = ? AND status = 'processing'",
                (error[:500], event_id),
            )

    def status(self, event_id: str) -> str | None:
        """The id's state ('processing', 'done', 'failed') or None if never seen; for tests and debugging."""
        with self.db.transaction(write=False) as db:
            row = db.execute("SELECT status FROM processed_events WHERE event_id = ?", (event_id,)).fetchone()
        return row[0] if row else None
