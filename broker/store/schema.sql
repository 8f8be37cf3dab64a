-- The broker's durable state. Every resource, every accepted event and every delivery lives here, so
-- a broker that is killed and restarted resumes exactly where it was. (migrate.py upgrades stores
-- made by earlier versions; PRAGMA user_version holds the schema's version.)

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);

-- Every resource of the management API, one row each, nested as Azure Resource Manager nests them:
-- topics, domains and namespaces at the top; domain topics and namespace topics under theirs; event
-- subscriptions under their scope (a topic, domain, domain topic or namespace topic).
CREATE TABLE IF NOT EXISTS resources (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,              -- topic | domain | domaintopic | namespace | namespacetopic | subscription
    parent          INTEGER,                    -- resources.id of the one it belongs to; NULL at the top
    name            TEXT NOT NULL COLLATE NOCASE,
    arm_subscription TEXT NOT NULL,             -- the Azure subscription id and resource group of its ARM id
    resource_group  TEXT NOT NULL,
    location        TEXT NOT NULL DEFAULT '',
    tags            TEXT,                       -- JSON object, or NULL
    properties      TEXT NOT NULL,              -- JSON: the kind's settings as validated
    state           TEXT,                       -- event subscriptions: AwaitingValidation | AwaitingManualAction | Succeeded | Failed
    state_detail    TEXT,                       -- why validation failed / what it waits for
    validation_code TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    -- A deleted resource is gone from the API at once; its row stays while deliveries refer to it,
    -- so that the dashboard still names them (Deliveries.prune removes it with the last of them).
    deleted_at      REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_name ON resources (kind, IFNULL(parent, 0), name) WHERE deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    topic       INTEGER NOT NULL,               -- resources.id of what it was published to (topic, domain or namespace topic)
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    subject     TEXT,
    body        BLOB NOT NULL,                  -- Event.to_record() as JSON
    received_at REAL NOT NULL,
    -- Its deliveries are the ids first_delivery .. first_delivery + fanout - 1: an event's deliveries
    -- are numbered together when it is stored, so they are found by rowid, with no index on
    -- deliveries.event_seq.
    first_delivery INTEGER,
    fanout         INTEGER NOT NULL DEFAULT 0
);
-- No index on received_at: retention (Deliveries.prune) walks events in seq order, the order they
-- arrived in. Each index is one more page written by every commit of a publish.

-- One row per (event, matching subscription). Status is explicit, never inferred:
--   pending -> inflight -> delivered | pending (retry) | deadlettered | dropped
-- A namespace queue subscription's events are held here too:
--   pending -> locked (by a receiver, until next_attempt_at) -> delivered (acknowledged)
--           | pending (released, or its lock ran out) | deadlettered | dropped (rejected, too many receives, too old)
-- and `attempts` counts the receives (Azure's deliveryCount).
CREATE TABLE IF NOT EXISTS deliveries (
    id                 INTEGER PRIMARY KEY,
    event_seq          INTEGER NOT NULL,
    subscription       INTEGER NOT NULL,        -- resources.id of the event subscription
    status             TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    REAL NOT NULL,
    expires_at         REAL NOT NULL,           -- time-to-live deadline (already multiplied by the time scale)
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
-- recovery (inflight) and deleting a subscription scan the table instead.
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (subscription, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (subscription) WHERE status = 'deadlettered';
-- A queue subscription's events locked by a receiver, by when their lock runs out.
CREATE INDEX IF NOT EXISTS deliveries_locked ON deliveries (subscription, next_attempt_at) WHERE status = 'locked';

-- One row per delivery attempt: the dashboard's timeline and the request the subscriber was sent.
-- A redelivered dead letter starts again at attempt 1, so (delivery_id, attempt) is not unique.
-- The deliveries of one batched request share its headers: only the row of the batch's last delivery
-- holds them, the others name that delivery in headers_from (Deliveries.attempts_for puts them back).
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

-- For people (and tests) reading the store: each delivery with the names of its event subscription
-- and of what that belongs to (a topic, domain, domain topic or namespace topic).
CREATE VIEW IF NOT EXISTS named_deliveries AS
    SELECT d.*, s.name AS subscription_name, t.name AS topic_name
    FROM deliveries d JOIN resources s ON s.id = d.subscription LEFT JOIN resources t ON t.id = s.parent;
