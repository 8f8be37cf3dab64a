"""Events, their deliveries and the attempts made: the queries of the delivery engine.

Every write goes through the group commit (commits.py); reads use the calling thread's connection.
An event is stored with all its deliveries in one write, so an accepted batch is stored whole or
not at all. A delivery is keyed by its event subscription's resource id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from .commits import GroupCommit, Then

# A delivery leaves the pending/inflight states exactly once, into one of these.
FINAL_STATES = ("delivered", "deadlettered", "dropped")

# Recording attempts: each delivery's new state and its attempt row, for one delivery (_LONE: the
# parameters end with its id) or for a batch's deliveries (_SHARED: they end with a JSON list of ids
# and the id of the one whose row keeps the shared headers).
_UPDATE = (
    "UPDATE deliveries SET status=?, attempts=?, last_attempt_at=?, last_status=?, last_outcome=?, last_latency_ms=?, "
    "next_attempt_at=COALESCE(?, next_attempt_at), done_at=?, dead_letter_reason=? WHERE id IN ({ids}) AND status='inflight'"
)
_INSERT = "INSERT INTO attempts (delivery_id, attempt, at, status_code, latency_ms, outcome, error, headers, batch_size, headers_from) "
_LONE = (_UPDATE.format(ids="?"), _INSERT + "VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)")
_SHARED = (
    _UPDATE.format(ids="SELECT value FROM json_each(?)"),
    _INSERT + "SELECT value, ?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN value = ?10 THEN ?7 END, ?8, CASE WHEN value <> ?10 THEN ?10 END "
    "FROM json_each(?9)",
)

# The deliveries `d` of the event `e` (see events.first_delivery): a range of rowids.
OF_EVENT = "d.id >= e.first_delivery AND d.id < e.first_delivery + e.fanout"

# A stored event: (event_id, event_type, subject, record_json). A route: the (subscription id,
# expires_at, claimed) triples one event fans out to.
EventRow = tuple[str, str, "str | None", bytes]
Route = Sequence[tuple[int, float, bool]]


@dataclass(slots=True)
class Claimed:
    """A delivery taken for an attempt, with the stored event it carries."""

    id: int
    event_seq: int
    attempts: int
    created_at: float
    expires_at: float
    body: bytes


@dataclass(slots=True)
class Outcome:
    """What one attempt did to the deliveries it names; `status` is their new state. The deliveries
    of one request that share a result share one Outcome (a batch of a hundred is one object, not a
    hundred: building, grouping and counting them one by one was a tenth of batched fan-out)."""

    delivery_ids: list[int]
    attempt: int
    at: float
    status: str  # pending (retry) | delivered | deadlettered | dropped
    outcome: str  # Delivered | Failed | Timeout | Error | Rejected ... (Azure's lastDeliveryOutcome)
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    dead_letter_reason: str | None = None
    headers: dict[str, str] | None = None
    batch_size: int = 1


class Claim(list):
    """The deliveries a claim took; `exhausted` when nothing more of the subscription was due
    (a claim cut short by its byte bound left some)."""

    exhausted = True


class Deliveries:
    def __init__(self, commits: GroupCommit) -> None:
        self.commits = commits
        self._next: dict[str, int] = {}  # next events.seq / deliveries.id, used under the write lock
        commits.on_rollback.append(self._next.clear)  # a rolled-back job's numbers were never stored
        # Outcomes not waited for gather here for one lazy job that writes them all (see complete).
        self._unrecorded: list[Outcome] = []
        self._unrecorded_then: list[Callable[[BaseException | None], None]] = []
        self._unrecorded_lock = threading.Lock()
        self._recording = False  # that job is queued

    def _db(self) -> sqlite3.Connection:
        return self.commits.db()

    # -- ingress -----------------------------------------------------------------------------

    def append(self, topic: int, events: Sequence[EventRow], routes: Sequence[Route], now: float) -> tuple[list[int], int]:
        """Store a batch of events and their deliveries in one transaction; return the events'
        sequence numbers and the id of the first delivery (the others follow in route order).

        `routes[i]` holds the (subscription id, expires_at, claimed) triples event i fans out to. A
        claimed delivery is stored `inflight`: the caller hands it to the dispatcher itself (at
        start-up, recover() returns it to pending like any other claim the process did not finish).
        """
        return self.commits.transact(self.appending(topic, events, routes, now))

    def appending(self, topic: int, events: Sequence[EventRow], routes: Sequence[Route],
                  now: float) -> Callable[[sqlite3.Connection], tuple[list[int], int]]:
        """`append`'s write, to run with `GroupCommit.transact_soon` (it changes only the database)."""
        def tx(db: sqlite3.Connection) -> tuple[list[int], int]:
            # Numbers are handed out here, under the write lock, so the whole batch goes in with two
            # executemany calls instead of a statement per row.
            deliveries = [(seq, sub, expires, claimed) for seq, route in enumerate(routes) for sub, expires, claimed in route]
            first = self._numbers(db, "events", "seq", len(events))
            first_id = self._numbers(db, "deliveries", "id", len(deliveries))
            rows, next_id = [], first_id
            for i, (event, route) in enumerate(zip(events, routes, strict=True)):
                rows.append((first + i, topic, *event, now, next_id if route else None, len(route)))
                next_id += len(route)
            db.executemany(
                "INSERT INTO events (seq, topic, event_id, event_type, subject, body, received_at, first_delivery, fanout) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if deliveries:
                db.executemany(
                    "INSERT INTO deliveries (id, event_seq, subscription, status, next_attempt_at, expires_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(first_id + k, first + i, sub, "inflight" if claimed else "pending", now, expires, now)
                     for k, (i, sub, expires, claimed) in enumerate(deliveries)],
                )
            return list(range(first, first + len(events))), first_id

        return tx

    def _numbers(self, db: sqlite3.Connection, table: str, column: str, count: int) -> int:
        """Take `count` consecutive numbers for `table.column` (under the write lock); return the first."""
        first = self._next.get(table)
        if first is None:
            first = (db.execute(f"SELECT MAX({column}) FROM {table}").fetchone()[0] or 0) + 1
        self._next[table] = first + count
        return first

    # -- dispatch ----------------------------------------------------------------------------

    def claim(self, subscription: int, now: float, limit: int, max_bytes: int | None = None) -> Claim:
        """Atomically move up to `limit` due deliveries of one subscription to inflight, with at most
        `max_bytes` of event bodies among them (one delivery always, however large)."""
        def tx(db: sqlite3.Connection):
            # In the index's order (deliveries_pending), so a claim never sorts the whole backlog.
            due = db.execute(
                "SELECT d.id, d.event_seq, d.attempts, d.created_at, d.expires_at, length(e.body) FROM deliveries d "
                "JOIN events e ON e.seq = d.event_seq WHERE d.subscription=? AND d.status='pending' AND d.next_attempt_at<=? "
                "ORDER BY d.next_attempt_at, d.id LIMIT ?",
                (subscription, now, limit),
            ).fetchall()
            exhausted = len(due) < limit
            if max_bytes is not None:
                total, kept = 0, 0
                for row in due:
                    total += row[5]
                    if kept and total > max_bytes:
                        break
                    kept += 1
                exhausted = exhausted and kept == len(due)
                due = due[:kept]
            if not due:
                return [], {}, exhausted
            db.executemany("UPDATE deliveries SET status='inflight' WHERE id=?", [(r[0],) for r in due])
            seqs = sorted({r[1] for r in due})
            bodies = dict(db.execute(f"SELECT seq, body FROM events WHERE seq IN ({','.join('?' * len(seqs))})", seqs).fetchall())
            return due, bodies, exhausted

        rows, bodies, exhausted = self.commits.transact(tx)
        claim = Claim(Claimed(r[0], r[1], r[2], r[3], r[4], bodies[r[1]]) for r in sorted(rows, key=lambda r: r[0]))
        claim.exhausted = exhausted
        return claim

    def next_due(self, subscription: int) -> float | None:
        row = self._db().execute(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE subscription=? AND status='pending'", (subscription,)
        ).fetchone()
        return row[0]

    def complete(self, outcomes: Iterable[Outcome], wait: bool = True,
                 then: Callable[[BaseException | None], None] | None = None) -> None:
        """Record attempts and move each delivery to its next state, in one transaction.

        With `wait=False` the caller goes on before the commit, and `then(error)` (if given) runs
        once it is committed or failed: until then the deliveries are still `inflight`, and if the
        process dies first they go back to pending at start-up (at-least-once). Such outcomes wait in
        one list for one lazy job, which writes all of them: the delivery loop hands over what each
        of its passes completed, and a job apiece cost a savepoint and two statement runs each
        (docs/performance.md). A failed commit puts them back for the next job: the caller decides
        when that runs (`record_pending`)."""
        if wait:
            self.commits.transact(partial(self._record, list(outcomes)))
            return
        with self._unrecorded_lock:
            self._unrecorded.extend(outcomes)
            if then is not None:
                self._unrecorded_then.append(then)
            if self._recording:
                return
            self._recording = True
        self.commits.submit(self._record_unrecorded, lazy=True, then=self._recorded)

    @property
    def unrecorded(self) -> int:
        """Outcomes waiting for their commit (or for a retry after a failed one)."""
        return len(self._unrecorded)

    def record_pending(self) -> None:
        """Queue the outcomes a failed commit left behind again (no-op if there are none)."""
        with self._unrecorded_lock:
            if self._recording or not self._unrecorded:
                return
            self._recording = True
        self.commits.submit(self._record_unrecorded, lazy=True, then=self._recorded)

    def _record_unrecorded(self, db: sqlite3.Connection) -> tuple[list[Outcome], list]:
        with self._unrecorded_lock:
            outcomes, self._unrecorded = self._unrecorded, []
            thens, self._unrecorded_then = self._unrecorded_then, []
            self._recording = False
        try:
            self._record(outcomes, db)
        except BaseException:
            self._put_back(outcomes, thens)
            raise
        return outcomes, thens

    def _recorded(self, result: tuple[list[Outcome], list] | None, error: BaseException | None) -> None:
        """After the lazy job: its callers' follow-ups, once committed. A failed commit puts the
        outcomes (and follow-ups) back for `record_pending` (a failed statement did so already)."""
        if error is None:
            for then in result[1]:
                then(None)
        elif result is not None:
            self._put_back(*result)

    def _put_back(self, outcomes: list[Outcome], thens: list) -> None:
        with self._unrecorded_lock:
            self._unrecorded[:0] = outcomes
            self._unrecorded_then[:0] = thens

    @staticmethod
    def _record(outcomes: list[Outcome], db: sqlite3.Connection) -> None:
        # The deliveries of one Outcome share their attempt: its result, time and headers. A group of
        # them is one UPDATE and one INSERT over a JSON list of their ids, which SQLite runs several
        # times faster than one statement step per delivery. Lone deliveries (no batching) are
        # stepped one by one, where json_each would only add its own cost.
        lone_updates, lone_attempts, shared_updates, shared_attempts = [], [], [], []
        for o in outcomes:
            ids = o.delivery_ids
            headers = orjson.dumps(o.headers).decode() if o.headers else None
            update = (o.status, o.attempt, o.at, o.status_code, o.outcome, o.latency_ms, o.next_attempt_at,
                      o.at if o.status in FINAL_STATES else None, o.dead_letter_reason)
            attempt = (o.attempt, o.at, o.status_code, o.latency_ms, o.outcome, o.error, headers, o.batch_size)
            if len(ids) == 1:
                lone_updates.append((*update, ids[0]))
                lone_attempts.append((*attempt, ids[0]))
            elif ids:
                # The headers once per batch, not once per event: the same few hundred bytes a hundred
                # times over were most of what a batch wrote. They go with the newest event, pruned
                # last of the batch.
                key = orjson.dumps(ids).decode()
                shared_updates.append((*update, key))
                shared_attempts.append((*attempt, key, max(ids)))
        for updates, attempts, (update_sql, insert_sql) in ((lone_updates, lone_attempts, _LONE),
                                                            (shared_updates, shared_attempts, _SHARED)):
            if updates:
                db.executemany(update_sql, updates)
                db.executemany(insert_sql, attempts)

    def expire(self, outcomes: Iterable[Outcome]) -> None:
        """Final state for deliveries that ran out of time before another attempt (no attempt row)."""
        rows = [(o.status, o.at, o.dead_letter_reason, i) for o in outcomes for i in o.delivery_ids]

        def tx(db: sqlite3.Connection):
            db.executemany("UPDATE deliveries SET status=?, done_at=?, dead_letter_reason=? WHERE id=? AND status='inflight'", rows)
        self.commits.transact(tx)

    def release(self, delivery_ids: Sequence[int], then: Then | None = None) -> None:
        """Give claimed deliveries back untouched (e.g. their lane went away mid-claim), without
        waiting for the commit."""
        rows = [(i,) for i in delivery_ids]

        def tx(db: sqlite3.Connection):
            db.executemany("UPDATE deliveries SET status='pending' WHERE id=? AND status='inflight'", rows)
        self.commits.submit(tx, then=then)

    def drop(self, delivery_ids: Sequence[int], reason: str, now: float, then: Then | None = None) -> None:
        """Deliveries that will never be attempted (their subscription was deleted), without waiting."""
        rows = [(reason, now, i) for i in delivery_ids]

        def tx(db: sqlite3.Connection):
            db.executemany("UPDATE deliveries SET status='dropped', dead_letter_reason=?, done_at=? "
                           "WHERE id=? AND status IN ('pending', 'inflight', 'locked')", rows)
        self.commits.submit(tx, then=then)

    @staticmethod
    def drop_subscriptions(db: sqlite3.Connection, subscriptions: Sequence[int], reason: str, now: float) -> None:
        """Within a write: every delivery of these subscriptions still to be attempted is dropped."""
        db.executemany(
            "UPDATE deliveries SET status='dropped', dead_letter_reason=?, done_at=? "
            "WHERE subscription=? AND status IN ('pending', 'inflight', 'locked')",
            [(reason, now, s) for s in subscriptions],
        )

    def recover(self) -> int:
        """Deliveries that were in flight when the process died go back to pending."""
        def tx(db: sqlite3.Connection):
            return db.execute("UPDATE deliveries SET status='pending' WHERE status='inflight'").rowcount
        return self.commits.transact(tx)

    # -- reading -----------------------------------------------------------------------------

    def counts(self) -> dict[int, dict[str, int]]:
        """Deliveries by subscription id and status."""
        counts: dict[int, dict[str, int]] = {}
        for sub, status, n in self._db().execute("SELECT subscription, status, COUNT(*) FROM deliveries GROUP BY subscription, status"):
            counts.setdefault(sub, {})[status] = n
        return counts

    def status_totals(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in self._db().execute("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status")}

    def event_count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def events_per_topic(self) -> dict[int, int]:
        return dict(self._db().execute("SELECT topic, COUNT(*) FROM events GROUP BY topic").fetchall())

    def recent_events(self, limit: int = 100, before_seq: int | None = None) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT seq, topic, event_id, event_type, subject, body, received_at FROM events "
            "WHERE seq < ? ORDER BY seq DESC LIMIT ?",
            (before_seq if before_seq is not None else 2**62, limit),
        ).fetchall()
        return [dict(r) for r in rows]

    def event(self, seq: int) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM events WHERE seq=?", (seq,)).fetchone()
        return dict(row) if row else None

    def of_events(self, event_seqs: Sequence[int]) -> list[dict[str, Any]]:
        if not event_seqs:
            return []
        marks = ",".join("?" * len(event_seqs))
        return [dict(r) for r in self._db().execute(
            f"SELECT d.* FROM events e JOIN deliveries d ON {OF_EVENT} WHERE e.seq IN ({marks}) ORDER BY d.id", list(event_seqs))]

    def attempts_for(self, delivery_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not delivery_ids:
            return []
        db = self._db()
        marks = ",".join("?" * len(delivery_ids))
        rows = [dict(r) for r in db.execute(
            f"SELECT * FROM attempts WHERE delivery_id IN ({marks}) ORDER BY delivery_id, id", list(delivery_ids))]
        holders = list({r["headers_from"] for r in rows if r["headers_from"] is not None})
        if holders:  # a batch's headers, kept on one of its rows (see _record)
            marks = ",".join("?" * len(holders))
            shared = {(r["delivery_id"], r["at"]): r["headers"] for r in db.execute(
                f"SELECT delivery_id, at, headers FROM attempts WHERE delivery_id IN ({marks}) AND headers IS NOT NULL", holders)}
            for r in rows:
                if r["headers_from"] is not None:
                    r["headers"] = shared.get((r["headers_from"], r["at"]))
        for r in rows:
            r["headers"] = orjson.loads(r["headers"]) if r["headers"] else None
            del r["headers_from"]
        return rows

    # -- dead letters --------------------------------------------------------------------------

    def dead_letters(self, subscription: int, skip: int = 0, top: int = 100) -> tuple[list[dict], int]:
        db = self._db()
        total = db.execute("SELECT COUNT(*) FROM deliveries WHERE subscription=? AND status='deadlettered'", (subscription,)).fetchone()[0]
        rows = db.execute(
            "SELECT d.*, e.body, e.received_at FROM deliveries d JOIN events e ON e.seq = d.event_seq "
            "WHERE d.subscription=? AND d.status='deadlettered' ORDER BY d.id LIMIT ? OFFSET ?",
            (subscription, top, skip),
        ).fetchall()
        return [dict(r) for r in rows], total

    def dead_letter(self, subscription: int, delivery_id: int) -> dict | None:
        row = self._db().execute(
            "SELECT d.*, e.body, e.received_at FROM deliveries d JOIN events e ON e.seq = d.event_seq "
            "WHERE d.subscription=? AND d.id=? AND d.status='deadlettered'",
            (subscription, delivery_id),
        ).fetchone()
        return dict(row) if row else None

    def all_dead_letters(self, limit: int) -> tuple[list[dict], int]:
        db = self._db()
        rows = db.execute(
            "SELECT d.id, d.subscription, d.event_seq, d.attempts, d.last_status, d.last_outcome, d.dead_letter_reason, "
            "d.last_attempt_at, d.done_at, e.event_id, e.event_type, e.subject FROM deliveries d JOIN events e ON e.seq = d.event_seq "
            "WHERE d.status = 'deadlettered' ORDER BY d.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        total = db.execute("SELECT COUNT(*) FROM deliveries WHERE status = 'deadlettered'").fetchone()[0]
        return [dict(r) for r in rows], total

    def redeliver(self, subscription: int, delivery_id: int | None, now: float, expires_at: float) -> int:
        """Dead letters back to pending with a fresh attempt count and time-to-live."""
        sql = ("UPDATE deliveries SET status='pending', attempts=0, next_attempt_at=?, expires_at=?, done_at=NULL, "
               "dead_letter_reason=NULL WHERE subscription=? AND status='deadlettered'")
        args: list[Any] = [now, expires_at, subscription]
        if delivery_id is not None:
            sql += " AND id=?"
            args.append(delivery_id)
        return self.commits.transact(lambda db: db.execute(sql, args).rowcount)

    def purge_dead_letters(self, subscription: int) -> int:
        return self.commits.transact(lambda db: db.execute(
            "UPDATE deliveries SET status='dropped', dead_letter_reason='Purged' WHERE subscription=? AND status='deadlettered'",
            (subscription,)).rowcount)

    # -- retention -----------------------------------------------------------------------------

    def prune(self, before: float, limit: int = 10_000) -> int:
        """Delete events older than `before` whose deliveries are all final (delivered/dropped), and
        the rows of resources deleted before then.

        Dead-lettered events stay until purged or redelivered: they are the user's to inspect.
        """
        # Events are numbered in the order they arrive, so those received before `before` come first:
        # the first one received since bounds the candidates (read outside the write transaction). An
        # event stored out of order -- a clock set back -- waits for a later round.
        newer = self._db().execute("SELECT seq FROM events WHERE received_at >= ? ORDER BY seq LIMIT 1", (before,)).fetchone()
        bound = newer[0] if newer else 2**62

        def tx(db: sqlite3.Connection):
            seqs = [
                r[0]
                for r in db.execute(
                    f"SELECT seq FROM events e WHERE seq < ? AND NOT EXISTS (SELECT 1 FROM deliveries d "
                    f"WHERE {OF_EVENT} AND d.status IN ('pending', 'inflight', 'locked', 'deadlettered')) LIMIT ?",
                    (bound, limit),
                )
            ]
            if seqs:
                marks = ",".join("?" * len(seqs))
                doomed = f"SELECT d.id FROM events e JOIN deliveries d ON {OF_EVENT} WHERE e.seq IN ({marks})"
                db.execute(f"DELETE FROM attempts WHERE delivery_id IN ({doomed})", seqs)
                db.execute(f"DELETE FROM deliveries WHERE id IN ({doomed})", seqs)
                db.execute(f"DELETE FROM events WHERE seq IN ({marks})", seqs)
            # A deleted resource's row only names old deliveries for the dashboard: it goes once it
            # is past retention (what still refers to it then shows as deleted, without a name).
            db.execute("DELETE FROM resources WHERE deleted_at IS NOT NULL AND deleted_at < ?", (before,))
            return len(seqs)

        return self.commits.transact(tx)
