"""The events a namespace queue subscription holds, and the receivers' locks on them.

A queue subscription's events are its rows in `deliveries`: `pending` until a receive locks them
(`locked`, until `next_attempt_at`), then acknowledged (`delivered`), released (`pending` again,
after the release delay), rejected, or past their time to live or the subscription's
maxDeliveryCount (`deadlettered` where the subscription has a dead-letter destination, `dropped`
otherwise). A lock that runs out is noticed by the next receive, which treats the event as released.

A lock token names the delivery and the receive that locked it (`attempts`, its delivery count),
signed with a secret kept in the store: so a token survives a restart, an old token of an event
received again fails, and a made-up one is refused without a lookup. All writes go through the
group commit; `receiving` and `settling` return the job for `GroupCommit.transact_soon`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .commits import GroupCommit

# Azure's failed-token error codes: a token that is not one, and one whose lock is gone (expired,
# or the event settled or received again since).
BAD_TOKEN = ("BadToken", "The lock token is not a lock token of this event subscription.")
TOKEN_LOST = ("TokenLost", "Token has expired.")
# The events one receive answers with, at most (one always, however large): a hundred events of a
# megabyte each would make a 100 MB answer, built in memory.
MAX_RECEIVE_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class QueueRules:
    """What a queue subscription's settings decide here (times already scaled)."""

    lock_seconds: float
    max_delivery_count: int
    dead_letter: bool


@dataclass(slots=True)
class Received:
    lock_token: str
    delivery_count: int
    body: bytes  # the stored event record


class Queues:
    def __init__(self, commits: GroupCommit) -> None:
        self.commits = commits
        self._secret = self._load_secret()

    def _load_secret(self) -> bytes:
        db = self.commits.db()
        row = db.execute("SELECT value FROM meta WHERE key='lock_secret'").fetchone()
        if row is None:
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('lock_secret', ?)", (secrets.token_hex(32),))
            row = db.execute("SELECT value FROM meta WHERE key='lock_secret'").fetchone()
        return bytes.fromhex(row[0])

    # -- tokens ------------------------------------------------------------------------------

    def token(self, delivery_id: int, attempt: int) -> str:
        text = f"{delivery_id}.{attempt}"
        sig = base64.urlsafe_b64encode(hmac.new(self._secret, text.encode(), hashlib.sha256).digest()[:12]).decode()
        return f"{text}.{sig}"

    def parse_token(self, token: object) -> tuple[int, int] | None:
        if not isinstance(token, str) or token.count(".") != 2:
            return None
        delivery, attempt, _sig = token.split(".")
        if not (delivery.isdigit() and attempt.isdigit()) or not hmac.compare_digest(token, self.token(int(delivery), int(attempt))):
            return None
        return int(delivery), int(attempt)

    # -- receive -----------------------------------------------------------------------------

    def receiving(self, subscription: int, max_events: int, now: float, rules: QueueRules,
                  max_bytes: int = MAX_RECEIVE_BYTES, dead: list[int] | None = None) -> Callable[[sqlite3.Connection], list[Received]]:
        """The write of one receive: up to `max_events` available events and about `max_bytes`
        of them (one always), locked until now + lock. Locks that ran out first go back to the
        queue, or out of it past maxDeliveryCount; events past their time to live go out of it.
        The deliveries dead-lettered on the way are put in `dead` (for their blobs, written once
        the commit is in)."""
        final = "deadlettered" if rules.dead_letter else "dropped"
        dead = [] if dead is None else dead

        def tx(db: sqlite3.Connection) -> list[Received]:
            dead.clear()  # a group commit may run a write twice: only the last run counts
            lapsed = db.execute(
                "SELECT id, attempts FROM deliveries WHERE subscription=? AND status='locked' AND next_attempt_at<=?", (subscription, now)
            ).fetchall()
            if lapsed:
                over = [(final, now, "MaxDeliveryCountExceeded", i) for i, n in lapsed if n >= rules.max_delivery_count]
                back = [(i,) for i, n in lapsed if n < rules.max_delivery_count]
                db.executemany("UPDATE deliveries SET status=?, done_at=?, dead_letter_reason=? WHERE id=?", over)
                db.executemany("UPDATE deliveries SET status='pending' WHERE id=?", back)
                if rules.dead_letter:
                    dead.extend(o[3] for o in over)
            got: list[Received] = []
            size = 0
            while len(got) < max_events and size < max_bytes:
                rows = db.execute(
                    "SELECT d.id, d.attempts, d.expires_at, e.body FROM deliveries d JOIN events e ON e.seq = d.event_seq "
                    "WHERE d.subscription=? AND d.status='pending' AND d.next_attempt_at<=? ORDER BY d.next_attempt_at, d.id LIMIT ?",
                    (subscription, now, max_events - len(got)),
                ).fetchall()
                if not rows:
                    break
                old = [(final, now, "TimeToLiveExceeded", r[0]) for r in rows if r[2] <= now]
                live = []
                for r in rows:
                    if r[2] > now and (not live and not got or size + len(r[3]) <= max_bytes):
                        live.append(r)
                        size += len(r[3])
                done = len(live) < len([r for r in rows if r[2] > now])  # the byte bound was reached
                db.executemany("UPDATE deliveries SET status=?, done_at=?, dead_letter_reason=? WHERE id=?", old)
                if rules.dead_letter:
                    dead.extend(o[3] for o in old)
                db.executemany(
                    "UPDATE deliveries SET status='locked', attempts=?, next_attempt_at=?, last_attempt_at=? WHERE id=?",
                    [(r[1] + 1, now + rules.lock_seconds, now, r[0]) for r in live],
                )
                got += [Received(self.token(r[0], r[1] + 1), r[1] + 1, r[3]) for r in live]
                if done:
                    break
            return got

        return tx

    def next_change(self, subscription: int) -> float | None:
        """When an event of the subscription becomes receivable next (a release delay or a lock
        running out), if any is waiting for that."""
        return self.commits.db().execute(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE subscription=? AND status IN ('pending', 'locked')", (subscription,)
        ).fetchone()[0]

    # -- settle ------------------------------------------------------------------------------

    def settling(self, subscription: int, action: str, tokens: Sequence[object], now: float, rules: QueueRules,
                 delay: float = 0.0, dead: list[int] | None = None
                 ) -> Callable[[sqlite3.Connection], tuple[list[str], list[tuple[str, tuple[str, str]]]]]:
        """The write of acknowledge, release, reject or renewLock for `tokens`; its result is
        (succeeded tokens, [(failed token, (code, message))]). Deliveries dead-lettered (a reject,
        a release past maxDeliveryCount) are put in `dead`."""
        final = "deadlettered" if rules.dead_letter else "dropped"
        parsed = [(t, self.parse_token(t)) for t in tokens]
        dead = [] if dead is None else dead

        def tx(db: sqlite3.Connection):
            dead.clear()
            succeeded, failed = [], []
            for token, found in parsed:
                if found is None:
                    failed.append((str(token), BAD_TOKEN))
                    continue
                delivery, attempt = found
                match = "WHERE id=? AND subscription=? AND attempts=? AND status='locked' AND next_attempt_at>?"
                args = (delivery, subscription, attempt, now)
                if action == "acknowledge":
                    changed = db.execute(f"UPDATE deliveries SET status='delivered', done_at=?, last_outcome='Acknowledged' {match}",
                                         (now, *args)).rowcount
                elif action == "reject":
                    changed = db.execute(f"UPDATE deliveries SET status=?, done_at=?, dead_letter_reason='Rejected', last_outcome='Rejected' {match}",
                                         (final, now, *args)).rowcount
                    if changed and rules.dead_letter:
                        dead.append(delivery)
                elif action == "renewLock":
                    changed = db.execute(f"UPDATE deliveries SET next_attempt_at=? {match}", (now + rules.lock_seconds, *args)).rowcount
                else:  # release: receivable again after the delay, unless it has been received too often
                    if attempt >= rules.max_delivery_count:
                        changed = db.execute(f"UPDATE deliveries SET status=?, done_at=?, dead_letter_reason='MaxDeliveryCountExceeded' {match}",
                                             (final, now, *args)).rowcount
                        if changed and rules.dead_letter:
                            dead.append(delivery)
                    else:
                        changed = db.execute(f"UPDATE deliveries SET status='pending', next_attempt_at=?, last_outcome='Released' {match}",
                                             (now + delay, *args)).rowcount
                if changed:
                    succeeded.append(token)
                else:
                    failed.append((token, TOKEN_LOST))
            return succeeded, failed

        return tx

    def counts(self, subscription: int, now: float) -> dict[str, int]:
        """Queue depth as the dashboard shows it: available, locked (lock still running), dead letters."""
        rows = self.commits.db().execute(
            "SELECT status, next_attempt_at > ? AS later, COUNT(*) FROM deliveries WHERE subscription=? "
            "AND status IN ('pending', 'locked', 'deadlettered') GROUP BY 1, 2", (now, subscription)).fetchall()
        out = {"available": 0, "locked": 0, "deadlettered": 0}
        for status, later, n in rows:
            if status == "locked" and later:
                out["locked"] += n
            elif status == "deadlettered":
                out["deadlettered"] += n
            else:
                out["available"] += n
        return out
