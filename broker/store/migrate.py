"""Upgrades a store made by an earlier version of the broker to the current schema, in place.

Version 1 (until 2026-12) kept topics and subscriptions in tables of their own and named them in
every event and delivery row (`topic`, `subscription` text columns). Version 2 keeps every resource
in `resources` and refers to it by id. The upgrade runs in one transaction: a broker killed midway
finds the old store untouched and upgrades it at its next start.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator

import orjson

log = logging.getLogger("broker.store")

VERSION = 2


def statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one by one (executescript would commit the transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def upgrade(db: sqlite3.Connection, schema: str, arm_subscription: str, resource_group: str) -> None:
    """Create the schema, upgrading an older store first. `arm_subscription` and `resource_group`
    go into the ids of the resources a version 1 store held (they had none of their own)."""
    if "topics" in _tables(db) and "resources" not in _tables(db):
        db.execute("BEGIN IMMEDIATE")
        try:
            _from_v1(db, schema, arm_subscription, resource_group)
            db.execute(f"PRAGMA user_version={VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("upgraded the store to schema version 2")
    db.executescript(schema)
    db.execute(f"PRAGMA user_version={VERSION}")


def _from_v1(db: sqlite3.Connection, schema: str, arm_subscription: str, resource_group: str) -> None:
    # What version 1 itself upgraded at start-up, for the oldest stores.
    if "headers_from" not in _columns(db, "attempts"):
        db.execute("ALTER TABLE attempts ADD COLUMN headers_from INTEGER")
    if "first_delivery" not in _columns(db, "events"):
        db.execute("ALTER TABLE events ADD COLUMN first_delivery INTEGER")
        db.execute("ALTER TABLE events ADD COLUMN fanout INTEGER NOT NULL DEFAULT 0")
        db.execute(
            "UPDATE events SET first_delivery = d.first, fanout = d.n FROM (SELECT event_seq, MIN(id) AS first, "
            "COUNT(*) AS n FROM deliveries GROUP BY event_seq) AS d WHERE d.event_seq = events.seq"
        )
    for index in ("deliveries_pending", "deliveries_dead", "deliveries_due", "deliveries_status", "deliveries_event", "events_received"):
        db.execute(f"DROP INDEX IF EXISTS {index}")
    db.execute("ALTER TABLE events RENAME TO events_v1")
    db.execute("ALTER TABLE deliveries RENAME TO deliveries_v1")
    for statement in statements(schema):
        db.execute(statement)

    def insert(kind, parent, name, properties, created, state=None, detail=None, code=None, deleted=None) -> int:
        return db.execute(
            "INSERT INTO resources (kind, parent, name, arm_subscription, resource_group, properties, state, state_detail, "
            "validation_code, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, parent, name, arm_subscription, resource_group, orjson.dumps(properties).decode(), state, detail, code,
             created, created, deleted),
        ).lastrowid

    topics: dict[str, int] = {}
    for name, schema_name, keys, created in db.execute("SELECT name, input_schema, keys, created_at FROM topics").fetchall():
        topics[name.lower()] = insert("topic", None, name, {"inputSchema": schema_name, "keys": orjson.loads(keys)}, created)
    subs: dict[tuple[str, str], int] = {}
    for row in db.execute("SELECT topic, name, spec, state, state_detail, validation_code, created_at FROM subscriptions").fetchall():
        topic, name, spec, state, detail, code, created = row
        if topic.lower() in topics:
            subs[(topic.lower(), name.lower())] = insert("subscription", topics[topic.lower()], name, orjson.loads(spec), created,
                                                         state, detail, code)
    # Deleted topics and subscriptions that old rows still name: kept as deleted resources.
    for (topic,) in db.execute("SELECT DISTINCT topic FROM events_v1").fetchall():
        if topic.lower() not in topics:
            topics[topic.lower()] = insert("topic", None, topic, {"inputSchema": "Auto", "keys": []}, 0.0, deleted=0.0)
    for topic, name in db.execute("SELECT DISTINCT topic, subscription FROM deliveries_v1").fetchall():
        if (topic.lower(), name.lower()) not in subs:
            if topic.lower() not in topics:
                topics[topic.lower()] = insert("topic", None, topic, {"inputSchema": "Auto", "keys": []}, 0.0, deleted=0.0)
            subs[(topic.lower(), name.lower())] = insert("subscription", topics[topic.lower()], name, {}, 0.0, deleted=0.0)

    db.execute("CREATE TEMP TABLE topic_ids (name TEXT PRIMARY KEY COLLATE NOCASE, id INTEGER)")
    db.executemany("INSERT INTO topic_ids VALUES (?, ?)", topics.items())
    db.execute("CREATE TEMP TABLE subscription_ids (topic TEXT COLLATE NOCASE, name TEXT COLLATE NOCASE, id INTEGER, PRIMARY KEY (topic, name))")
    db.executemany("INSERT INTO subscription_ids VALUES (?, ?, ?)", [(t, n, i) for (t, n), i in subs.items()])
    db.execute(
        "INSERT INTO events (seq, topic, event_id, event_type, subject, body, received_at, first_delivery, fanout) "
        "SELECT e.seq, t.id, e.event_id, e.event_type, e.subject, e.body, e.received_at, e.first_delivery, e.fanout "
        "FROM events_v1 e JOIN topic_ids t ON t.name = e.topic"
    )
    db.execute(
        "INSERT INTO deliveries (id, event_seq, subscription, status, attempts, next_attempt_at, expires_at, created_at, "
        "last_attempt_at, last_status, last_outcome, last_latency_ms, done_at, dead_letter_reason) "
        "SELECT d.id, d.event_seq, s.id, d.status, d.attempts, d.next_attempt_at, d.expires_at, d.created_at, d.last_attempt_at, "
        "d.last_status, d.last_outcome, d.last_latency_ms, d.done_at, d.dead_letter_reason "
        "FROM deliveries_v1 d JOIN subscription_ids s ON s.topic = d.topic AND s.name = d.subscription"
    )
    for table in ("events_v1", "deliveries_v1", "topics", "subscriptions", "temp.topic_ids", "temp.subscription_ids"):
        db.execute(f"DROP TABLE {table}")
