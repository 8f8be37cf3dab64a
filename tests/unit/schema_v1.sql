-- The broker's durable state. Every accepted event and every delivery lives here, so a broker that
-- is killed and restarted resumes exactly where it was.

CREATE TABLE IF NOT EXISTS topics (
    name         TEXT PRIMARY KEY COLLATE NOCASE,
    input_schema TEXT NOT NULL,
    keys         TEXT NOT NULL DEFAULT '[]',   -- JSON list of base64 access keys; [] = anonymous
    created_at   REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS subscriptions (
    topic           TEXT NOT NULL COLLATE NOCASE,
    name            TEXT NOT NULL COLLATE NOCASE,
    spec            TEXT NOT NULL,              -- Azure-shaped `properties` JSON, as given
    state           TEXT NOT NULL,              -- AwaitingValidation | AwaitingManualAction | Succeeded | Failed
    state_detail    TEXT,                       -- why validation failed / what it waits for
    validation_code TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (topic, name)
);

CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    topic       TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    subject     TEXT,
    body        BLOB NOT NULL,                  -- Event.to_record() as JSON
    received_at REAL NOT NULL,
    -- Its deliveries are the ids first_delivery .. first_delivery + fanout - 1: an event's deliveries
    -- are numbered together when it is stored, so they are found by rowid, with no index on
    -- deliveries.event_seq (Store._migrate fills these in for stores made before them).
    first_delivery INTEGER,
    fanout         INTEGER NOT NULL DEFAULT 0
);
-- No index on received_at: retention (Store.prune) walks events in seq order, the order they arrived
-- in. Each index is one more page written by every commit of a publish: with two of them gone
-- (this one and deliveries_event), 4 pages a commit became 2.
DROP INDEX IF EXISTS events_received;  -- (received_at), until 2026-11

-- One row per (event, matching subscription). Status is explicit, never inferred:
--   pending -> inflight -> delivered | pending (retry) | deadlettered | dropped
CREATE TABLE IF NOT EXISTS deliveries (
    id                 INTEGER PRIMARY KEY,
    event_seq          INTEGER NOT NULL,
    topic              TEXT NOT NULL COLLATE NOCASE,
    subscription       TEXT NOT NULL COLLATE NOCASE,
    status             TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    REAL NOT NULL,
    expires_at         REAL NOT NULL,           -- time-to-live deadline (already divided by the time scale)
    created_at         REAL NOT NULL,
    last_attempt_at    REAL,
    last_status        INTEGER,
    last_outcome       TEXT,
    last_latency_ms    REAL,
    done_at            REAL,
    dead_letter_reason TEXT
);
-- Only the states a query looks for by subscription are indexed, so the common life of a delivery
-- (stored inflight, handed straight to the dispatcher, then delivered) touches no index: each index
-- entry added and removed on a status change costs SQLite row work on every delivery. Start-up
-- recovery (inflight) and deleting a subscription scan the table instead. An event's deliveries are
-- found through events.first_delivery (deliveries_event, (event_seq), was dropped in 2026-11).
DROP INDEX IF EXISTS deliveries_due;     -- (topic, subscription, status, next_attempt_at), until 2026-11
DROP INDEX IF EXISTS deliveries_status;  -- (status, next_attempt_at), until 2026-11
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (topic, subscription, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (topic, subscription) WHERE status = 'deadlettered';

-- One row per delivery attempt: the dashboard's timeline and the request the subscriber was sent.
-- A redelivered dead letter starts again at attempt 1, so (delivery_id, attempt) is not unique.
-- The deliveries of one batched request share its headers: only the row of the batch's last delivery
-- holds them, the others name that delivery in headers_from (Store.attempts_for puts them back).
CREATE TABLE IF NOT EXISTS attempts (
    id           INTEGER PRIMARY KEY,
    delivery_id  INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    at           REAL NOT NULL,
    status_code  INTEGER,
    latency_ms   REAL,
    outcome      TEXT NOT NULL,
    error        TEXT,
    headers      TEXT,                          -- JSON object of the request headers sent
    batch_size   INTEGER NOT NULL DEFAULT 1,
    headers_from INTEGER                        -- the delivery whose attempt row at the same `at` holds them
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id);
