"""The store's write path: group commit with per-caller all-or-nothing, and sequence numbers."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from broker import store as store_module
from broker.store import Store
from tests.waiting import wait_until


def append(store: Store, n: int, sub: str | None = "sub", claimed: bool = False):
    """Store n events with one delivery each (to `sub`); return their sequence numbers."""
    events = [(f"id{i}", "T", "s", b'{"id": "x"}') for i in range(n)]
    routes = [[(sub, 1e12, claimed)] if sub else [] for _ in range(n)]
    return store.append("default", events, routes, 1.0)[0]


def test_append_numbers_events_in_order_and_continues_after_reopen(tmp_path):
    store = Store(tmp_path / "b.db")
    assert append(store, 3) == [1, 2, 3]
    assert append(store, 2) == [4, 5]
    store.close()
    reopened = Store(tmp_path / "b.db")
    assert append(reopened, 1) == [6]
    assert reopened.status_totals() == {"pending": 6}
    reopened.close()


def test_a_failing_write_is_rolled_back_alone_and_raises_in_its_caller(tmp_path):
    store = Store(tmp_path / "b.db")

    def half_then_fail(db: sqlite3.Connection):
        db.execute("INSERT INTO events (topic, event_id, event_type, body, received_at) VALUES ('t', 'half', 'T', x'00', 0)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store._transact(half_then_fail)
    assert append(store, 2) == [1, 2]  # numbering is unaffected by the rolled-back job
    assert [r["event_id"] for r in store.read("SELECT event_id FROM events ORDER BY seq")] == ["id0", "id1"]
    store.close()


def test_concurrent_writers_all_land_with_unique_sequence_numbers(tmp_path):
    store = Store(tmp_path / "b.db")
    results: list[list[int]] = []
    lock = threading.Lock()

    def writer():
        for _ in range(20):
            seqs = append(store, 5)
            with lock:
                results.append(seqs)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = sorted(s for seqs in results for s in seqs)
    assert every == list(range(1, 8 * 20 * 5 + 1))
    assert store.event_count() == 800 and store.status_totals() == {"pending": 800}
    store.close()


def test_deliveries_claimed_at_birth_are_inflight_with_the_ids_append_returned(tmp_path):
    store = Store(tmp_path / "b.db")
    append(store, 2)
    events = [("a", "T", "s", b"{}"), ("b", "T", "s", b"{}")]
    seqs, first_id = store.append("default", events, [[("one", 9.0, True), ("two", 9.0, False)], [("one", 9.0, True)]], 1.0)
    rows = store.read("SELECT id, event_seq, subscription, status FROM deliveries WHERE id >= ? ORDER BY id", (first_id,))
    assert seqs == [3, 4] and first_id == 3
    assert [(r["id"], r["event_seq"], r["subscription"], r["status"]) for r in rows] == [
        (3, 3, "one", "inflight"), (4, 3, "two", "pending"), (5, 4, "one", "inflight")]
    assert store.claim("default", "one", 10.0, 10) == []  # already claimed: nobody else sends them
    assert store.recover() == 2 and len(store.claim("default", "one", 10.0, 10)) == 2  # a restart re-sends them
    store.close()


def test_a_write_nobody_waits_for_is_committed_by_the_writer_thread_alone(tmp_path):
    store = Store(tmp_path / "b.db")
    store._submit(lambda db: db.execute("INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (7, 't', 'q', 'T', x'00', 0)"))
    wait_until(lambda: store.event_count() == 1, 5, "the queued write to be committed")
    store.close()


def _insert(seq):
    return lambda db: db.execute(
        "INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (?, 't', 'q', 'T', x'00', 0)", (seq,))


def test_a_lazy_write_waits_for_its_interval_then_the_writer_thread_commits_it(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 0.5)
    store = Store(tmp_path / "b.db")
    store._submit(_insert(1), lazy=True)
    store._submit(_insert(2), lazy=True)
    assert store.event_count() == 0  # not committed at once: other writes may still join it
    wait_until(lambda: store.event_count() == 2, 5, "the lazy writes to be committed")
    store.close()


def test_a_lazy_write_is_left_to_the_writer_but_settle_and_close_commit_it_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 60)
    store = Store(tmp_path / "b.db")
    store._submit(_insert(100), lazy=True)
    append(store, 1)  # a caller leading its own group commits its own write only
    assert store.event_count() == 1
    store.settle()  # what the API does before serving a request
    assert store.event_count() == 2
    store._submit(_insert(101), lazy=True)
    store._submit(_insert(102))  # a write that is not lazy does not wait for the lazy one's interval
    wait_until(lambda: store.event_count() == 4, 5, "the queued writes to be committed")
    store._submit(_insert(103), lazy=True)
    store.close()  # commits what is queued
    reopened = Store(tmp_path / "b.db")
    assert reopened.event_count() == 5
    reopened.close()


def _insert_noting_thread(seq, threads):
    def fn(db):
        threads.append(threading.get_ident())
        return _insert(seq)(db)
    return fn


def test_lazy_writes_queued_on_a_loop_are_committed_by_its_timer_on_its_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    timers = []
    store.lazy_writes_on(lambda: True, lambda delay, fn: timers.append((delay, fn)))
    threads = []
    store._submit(_insert_noting_thread(1, threads), lazy=True)
    store._submit(_insert_noting_thread(2, threads), lazy=True)
    assert [delay for delay, _ in timers] == [store_module.LAZY_WRITE_SECONDS]  # one timer for both
    assert not store._queued.is_set()  # the writer thread was not woken
    timers[0][1]()  # the loop's timer fires
    assert store.event_count() == 2
    assert threads == [threading.get_ident()] * 2
    store._submit(_insert(3), lazy=True)
    assert len(timers) == 2  # the next round sets the timer again
    store.close()  # commits what is still queued
    reopened = Store(tmp_path / "b.db")
    assert reopened.event_count() == 3
    reopened.close()


def test_a_loop_timer_that_finds_the_store_busy_leaves_its_writes_to_the_writer_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    timers = []
    store.lazy_writes_on(lambda: True, lambda delay, fn: timers.append(fn))
    threads = []
    store._submit(_insert_noting_thread(1, threads), lazy=True)
    with store._write_lock:  # another write is running
        timers[0]()
        assert threads == []
    wait_until(lambda: store.event_count() == 1, 5, "the writer thread to commit the lazy write")
    assert threads and threads[0] != threading.get_ident()
    store.close()
    timers[0]()  # a timer that fires after close does nothing


def test_a_loop_timer_leaves_writes_that_are_not_lazy_to_the_writer_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    timers = []
    store.lazy_writes_on(lambda: True, lambda delay, fn: timers.append(fn))
    threads = []
    store._jobs.append(store_module._Job(_insert_noting_thread(1, threads), waited=False))  # queued, writer not yet woken
    store._submit(_insert_noting_thread(2, threads), lazy=True)
    timers[0]()
    wait_until(lambda: store.event_count() == 2, 5, "the writer thread to commit both")
    assert threading.get_ident() not in threads
    store.close()


def test_lazy_writes_from_other_threads_and_settle_work_as_without_a_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 60)
    store = Store(tmp_path / "b.db")
    timers = []
    store.lazy_writes_on(lambda: False, lambda delay, fn: timers.append(fn))  # not called on the loop
    store._submit(_insert(1), lazy=True)
    assert timers == []
    store.settle()  # what the API does before serving a request
    assert store.event_count() == 1
    store.close()


def _publish(store, event_id):
    return store.appending("t", [(event_id, "T", "s", b"{}")], [[("sub", 1e12, True)]], 1.0)


def test_a_group_of_publishes_runs_without_savepoints_and_again_with_them_when_one_fails(tmp_path):
    store = Store(tmp_path / "b.db")
    statements = []
    store._db().set_trace_callback(statements.append)
    results = []
    store.transact_soon([(_publish(store, f"e{i}"), lambda r, e: results.append((r, e))) for i in range(3)])
    assert [e for _, e in results] == [None] * 3
    assert [r[0] for r, _ in results] == [[1], [2], [3]]
    assert not [s for s in statements if "SAVEPOINT" in s]  # one transaction, no savepoint per publish

    def failing(db):
        _publish(store, "bad")(db)  # takes numbers, then fails: rolled back with them
        raise RuntimeError("boom")

    results.clear()
    statements.clear()
    store.transact_soon([(_publish(store, "e3"), lambda r, e: results.append((r, e))),
                         (failing, lambda r, e: results.append((r, e))),
                         (_publish(store, "e4"), lambda r, e: results.append((r, e)))])
    assert [type(e).__name__ if e else None for _, e in results] == [None, "RuntimeError", None]
    assert [results[0][0][0], results[2][0][0]] == [[4], [5]]  # numbered again, without a gap
    assert [s for s in statements if "SAVEPOINT" in s]  # the second run guarded each publish
    assert store.read("SELECT event_id FROM events ORDER BY seq") == [{"event_id": e} for e in ("e0", "e1", "e2", "e3", "e4")]
    assert store.read("SELECT event_seq FROM deliveries ORDER BY id") == [{"event_seq": n} for n in range(1, 6)]
    store.close()


def test_flush_returns_only_after_every_earlier_queued_write_is_committed(tmp_path):
    store = Store(tmp_path / "b.db")
    for i in range(50):
        store._submit(lambda db, i=i: db.execute(
            "INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (?, 't', 'q', 'T', x'00', 0)", (i + 1,)))
    store.flush()
    assert store.event_count() == 50
    store.close()


def test_writes_after_close_fail_instead_of_hanging(tmp_path):
    store = Store(tmp_path / "b.db")
    store.close()
    with pytest.raises(RuntimeError):
        append(store, 1)


def test_a_store_of_the_old_schema_keeps_its_deliveries_and_loses_the_indexes_every_status_change_paid_for(tmp_path):
    old = sqlite3.connect(tmp_path / "b.db")
    old.executescript(store_module.SCHEMA.split("-- Only the states")[0])  # the tables, without the new indexes
    old.execute("CREATE INDEX deliveries_due ON deliveries (topic, subscription, status, next_attempt_at)")
    old.execute("CREATE INDEX deliveries_status ON deliveries (status, next_attempt_at)")
    old.execute("INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (1, 'default', 'e', 'T', x'7b7d', 1)")
    old.execute("INSERT INTO deliveries (event_seq, topic, subscription, status, next_attempt_at, expires_at, created_at) "
                "VALUES (1, 'default', 'sub', 'pending', 1, 1e12, 1)")
    old.commit()
    old.close()
    store = Store(tmp_path / "b.db")
    indexes = {r["name"] for r in store.read("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='deliveries'")}
    assert indexes == {"deliveries_pending", "deliveries_dead"}
    claim_plan = " ".join(r["detail"] for r in store.read(
        "EXPLAIN QUERY PLAN SELECT id FROM deliveries WHERE topic='default' AND subscription='sub' AND status='pending' "
        "AND next_attempt_at<=1 ORDER BY next_attempt_at, id LIMIT 5"))
    assert "deliveries_pending" in claim_plan and "TEMP B-TREE" not in claim_plan  # no sort of the backlog
    assert [c.event_seq for c in store.claim("default", "SUB", 2.0, 10)] == [1]  # names match without case
    store.close()


def test_a_batch_attempt_is_recorded_for_each_of_its_deliveries_beside_lone_ones(tmp_path):
    from broker.store import Outcome

    store = Store(tmp_path / "b.db")
    append(store, 4, claimed=True)
    ids = [r["id"] for r in store.read("SELECT id FROM deliveries ORDER BY id")]
    batch_headers = {"aeg-delivery-count": "0"}
    store.complete([
        Outcome([ids[0], ids[2]], 1, 5.0, "delivered", "Delivered", 200, 1.5, headers=batch_headers, batch_size=2),
        Outcome([ids[1]], 1, 6.0, "pending", "Failed", 503, 2.0, error="busy", next_attempt_at=16.0),
    ])
    rows = {r["id"]: r for r in store.read("SELECT * FROM deliveries")}
    assert [rows[i]["status"] for i in ids] == ["delivered", "pending", "delivered", "inflight"]
    assert rows[ids[0]]["done_at"] == 5.0 and rows[ids[1]]["done_at"] is None and rows[ids[1]]["next_attempt_at"] == 16.0
    attempts = {a["delivery_id"]: a for a in store.attempts_for(ids)}
    assert sorted(attempts) == [ids[0], ids[1], ids[2]]
    assert attempts[ids[0]]["headers"] == attempts[ids[2]]["headers"] == batch_headers
    assert attempts[ids[0]]["batch_size"] == attempts[ids[2]]["batch_size"] == 2
    # ... though the batch's headers are stored once, on its newest delivery's row
    stored = store.read("SELECT delivery_id, headers IS NOT NULL AS kept, headers_from FROM attempts WHERE batch_size = 2 ORDER BY delivery_id")
    assert stored == [{"delivery_id": ids[0], "kept": 0, "headers_from": ids[2]}, {"delivery_id": ids[2], "kept": 1, "headers_from": None}]
    assert [a["headers"] for a in store.attempts_for([ids[0]])] == [batch_headers]  # asked for alone, too
    assert (attempts[ids[1]]["status_code"], attempts[ids[1]]["error"], attempts[ids[1]]["headers"]) == (503, "busy", None)
    # a delivery no longer in flight (dropped meanwhile) keeps its state; its attempt is still on record
    store.complete([Outcome([ids[0], ids[3]], 2, 7.0, "pending", "Failed", 500, 1.0, next_attempt_at=9.0)])
    assert store.read("SELECT status FROM deliveries WHERE id=?", (ids[0],)) == [{"status": "delivered"}]
    assert store.read("SELECT status FROM deliveries WHERE id=?", (ids[3],)) == [{"status": "pending"}]
    assert len(store.attempts_for([ids[0]])) == 2
    store.close()


def test_outcomes_not_waited_for_are_recorded_together_by_one_lazy_job(tmp_path, monkeypatch):
    from broker.store import Outcome

    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 60)
    store = Store(tmp_path / "b.db")
    append(store, 3, claimed=True)
    ids = [r["id"] for r in store.read("SELECT id FROM deliveries ORDER BY id")]
    for i, delivery in enumerate(ids):
        store.complete([Outcome([delivery], 1, 5.0 + i, "delivered", "Delivered", 200, 1.0, headers={"n": str(i)})], wait=False)
    assert len(store._jobs) == 1  # one job for the three of them
    assert store.status_totals() == {"inflight": 3}  # not committed yet
    store.settle()
    assert store.status_totals() == {"delivered": 3}
    assert [(a["delivery_id"], a["at"], a["headers"]) for a in store.attempts_for(ids)] == [
        (delivery, 5.0 + i, {"n": str(i)}) for i, delivery in enumerate(ids)]
    store.complete([Outcome([ids[0]], 2, 9.0, "delivered", "Delivered", 200, 1.0)], wait=False)
    assert len(store._jobs) == 1  # the next round queues its own job
    store.close()  # and closing commits it
    reopened = Store(tmp_path / "b.db")
    assert len(reopened.attempts_for([ids[0]])) == 2
    reopened.close()


def test_a_store_made_before_shared_batch_headers_gets_the_column(tmp_path):
    old = sqlite3.connect(tmp_path / "b.db")
    old.executescript(store_module.SCHEMA)
    old.execute("ALTER TABLE attempts DROP COLUMN headers_from")
    old.execute("INSERT INTO attempts (delivery_id, attempt, at, outcome, headers) VALUES (1, 1, 2.0, 'Delivered', '{\"a\": \"b\"}')")
    old.commit()
    old.close()
    store = Store(tmp_path / "b.db")
    assert [(a["delivery_id"], a["headers"]) for a in store.attempts_for([1])] == [(1, {"a": "b"})]
    store.close()


def test_a_store_made_before_first_delivery_finds_each_events_deliveries_by_rowid_after_the_upgrade(tmp_path):
    """Stores made before events.first_delivery get it filled in from deliveries.event_seq, and lose
    the two indexes a publish's commit used to write (deliveries_event, events_received)."""
    old = sqlite3.connect(tmp_path / "b.db")
    old.executescript("""
        CREATE TABLE events (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
                             subject TEXT, body BLOB NOT NULL, received_at REAL NOT NULL);
        CREATE INDEX events_received ON events (received_at);
        CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event_seq INTEGER NOT NULL, topic TEXT NOT NULL COLLATE NOCASE,
                                 subscription TEXT NOT NULL COLLATE NOCASE, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                                 next_attempt_at REAL NOT NULL, expires_at REAL NOT NULL, created_at REAL NOT NULL,
                                 last_attempt_at REAL, last_status INTEGER, last_outcome TEXT, last_latency_ms REAL,
                                 done_at REAL, dead_letter_reason TEXT);
        CREATE INDEX deliveries_event ON deliveries (event_seq);
        INSERT INTO events VALUES (1, 'default', 'a', 'T', NULL, x'7b7d', 1), (2, 'default', 'b', 'T', NULL, x'7b7d', 1),
                                  (3, 'default', 'c', 'T', NULL, x'7b7d', 1);
        INSERT INTO deliveries (id, event_seq, topic, subscription, status, next_attempt_at, expires_at, created_at) VALUES
            (1, 1, 'default', 's1', 'delivered', 1, 1e12, 1), (2, 1, 'default', 's2', 'delivered', 1, 1e12, 1),
            (3, 3, 'default', 's1', 'pending', 1, 1e12, 1);
    """)
    old.commit()
    old.close()
    store = Store(tmp_path / "b.db")
    assert [(r["seq"], r["first_delivery"], r["fanout"]) for r in store.read("SELECT * FROM events ORDER BY seq")] == [
        (1, 1, 2), (2, None, 0), (3, 3, 1)]
    indexes = {r["name"] for r in store.read("SELECT name FROM sqlite_master WHERE type='index'")}
    assert not indexes & {"deliveries_event", "events_received"}
    assert [(d["id"], d["event_seq"]) for d in store.deliveries_for([1, 2, 3])] == [(1, 1), (2, 1), (3, 3)]
    assert [d["id"] for d in store.deliveries_for([3])] == [3]
    plan = " ".join(r["detail"] for r in store.read(
        "EXPLAIN QUERY PLAN SELECT d.* FROM events e JOIN deliveries d ON d.id >= e.first_delivery "
        "AND d.id < e.first_delivery + e.fanout WHERE e.seq IN (1, 3)"))
    assert "SCAN d" not in plan  # a rowid range per event, not a pass over every delivery
    assert store.prune(2.0) == 2  # events 1 and 2; event 3's delivery is pending
    assert [r["id"] for r in store.read("SELECT id FROM deliveries")] == [3]
    store.close()
    Store(tmp_path / "b.db").close()  # opened again: nothing left to upgrade


def test_each_event_records_the_rowids_of_its_deliveries(tmp_path):
    store = Store(tmp_path / "b.db")
    seqs, first = store.append("default", [("a", "T", None, b"{}"), ("b", "T", None, b"{}"), ("c", "T", None, b"{}")],
                               [[("s1", 1e12, False), ("s2", 1e12, False)], [], [("s1", 1e12, True)]], 1.0)
    rows = {r["seq"]: r for r in store.read("SELECT seq, first_delivery, fanout FROM events")}
    assert [(rows[s]["first_delivery"], rows[s]["fanout"]) for s in seqs] == [(first, 2), (None, 0), (first + 2, 1)]
    by_event = {}
    for d in store.deliveries_for(seqs):
        by_event.setdefault(d["event_seq"], []).append(d["subscription"])
    assert by_event == {seqs[0]: ["s1", "s2"], seqs[2]: ["s1"]}
    store.close()
