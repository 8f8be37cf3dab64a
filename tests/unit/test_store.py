"""The store's write path: group commit with per-caller all-or-nothing, and sequence numbers."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from broker.store import Store
from broker.store import commits as store_module
from tests.waiting import wait_until

SUB, ONE, TWO = 7, 8, 9  # subscription ids (deliveries refer to subscriptions by resource id)


def append(store: Store, n: int, sub: int | None = SUB, claimed: bool = False):
    """Store n events with one delivery each (to `sub`); return their sequence numbers."""
    events = [(f"id{i}", "T", "s", b'{"id": "x"}') for i in range(n)]
    routes = [[(sub, 1e12, claimed)] if sub else [] for _ in range(n)]
    return store.deliveries.append(1, events, routes, 1.0)[0]


def test_append_numbers_events_in_order_and_continues_after_reopen(tmp_path):
    store = Store(tmp_path / "b.db")
    assert append(store, 3) == [1, 2, 3]
    assert append(store, 2) == [4, 5]
    store.close()
    reopened = Store(tmp_path / "b.db")
    assert append(reopened, 1) == [6]
    assert reopened.deliveries.status_totals() == {"pending": 6}
    reopened.close()


def test_a_failing_write_is_rolled_back_alone_and_raises_in_its_caller(tmp_path):
    store = Store(tmp_path / "b.db")

    def half_then_fail(db: sqlite3.Connection):
        db.execute("INSERT INTO events (topic, event_id, event_type, body, received_at) VALUES (1, 'half', 'T', x'00', 0)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.commits.transact(half_then_fail)
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
    assert store.deliveries.event_count() == 800 and store.deliveries.status_totals() == {"pending": 800}
    store.close()


def test_deliveries_claimed_at_birth_are_inflight_with_the_ids_append_returned(tmp_path):
    store = Store(tmp_path / "b.db")
    append(store, 2)
    events = [("a", "T", "s", b"{}"), ("b", "T", "s", b"{}")]
    seqs, first_id = store.deliveries.append(1, events, [[(ONE, 9.0, True), (TWO, 9.0, False)], [(ONE, 9.0, True)]], 1.0)
    rows = store.read("SELECT id, event_seq, subscription, status FROM deliveries WHERE id >= ? ORDER BY id", (first_id,))
    assert seqs == [3, 4] and first_id == 3
    assert [(r["id"], r["event_seq"], r["subscription"], r["status"]) for r in rows] == [
        (3, 3, ONE, "inflight"), (4, 3, TWO, "pending"), (5, 4, ONE, "inflight")]
    assert store.deliveries.claim(ONE, 10.0, 10) == []  # already claimed: nobody else sends them
    assert store.deliveries.recover() == 2 and len(store.deliveries.claim(ONE, 10.0, 10)) == 2  # a restart re-sends them
    store.close()


def test_a_write_nobody_waits_for_is_committed_by_the_writer_thread_alone(tmp_path):
    store = Store(tmp_path / "b.db")
    store.commits.submit(lambda db: db.execute("INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (7, 1, 'q', 'T', x'00', 0)"))
    wait_until(lambda: store.deliveries.event_count() == 1, 5, "the queued write to be committed")
    store.close()


def _insert(seq):
    return lambda db: db.execute(
        "INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (?, 1, 'q', 'T', x'00', 0)", (seq,))


def test_a_lazy_write_waits_for_its_interval_then_the_writer_thread_commits_it(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 0.5)
    store = Store(tmp_path / "b.db")
    store.commits.submit(_insert(1), lazy=True)
    store.commits.submit(_insert(2), lazy=True)
    assert store.deliveries.event_count() == 0  # not committed at once: other writes may still join it
    wait_until(lambda: store.deliveries.event_count() == 2, 5, "the lazy writes to be committed")
    store.close()


def test_a_lazy_write_is_left_to_the_writer_but_settle_and_close_commit_it_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 60)
    store = Store(tmp_path / "b.db")
    store.commits.submit(_insert(100), lazy=True)
    append(store, 1)  # a caller leading its own group commits its own write only
    assert store.deliveries.event_count() == 1
    store.settle()  # what the API does before serving a request
    assert store.deliveries.event_count() == 2
    store.commits.submit(_insert(101), lazy=True)
    store.commits.submit(_insert(102))  # a write that is not lazy does not wait for the lazy one's interval
    wait_until(lambda: store.deliveries.event_count() == 4, 5, "the queued writes to be committed")
    store.commits.submit(_insert(103), lazy=True)
    store.close()  # commits what is queued
    reopened = Store(tmp_path / "b.db")
    assert reopened.deliveries.event_count() == 5
    reopened.close()


def _insert_noting_thread(seq, threads):
    def fn(db):
        threads.append(threading.get_ident())
        return _insert(seq)(db)
    return fn


def test_lazy_writes_queued_on_a_loop_are_committed_by_its_timer_on_its_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    timers = []
    store.commits.lazy_writes_on(lambda: True, lambda delay, fn: timers.append((delay, fn)))
    threads = []
    store.commits.submit(_insert_noting_thread(1, threads), lazy=True)
    store.commits.submit(_insert_noting_thread(2, threads), lazy=True)
    assert [delay for delay, _ in timers] == [store_module.LAZY_WRITE_SECONDS]  # one timer for both
    assert not store.commits._queued.is_set()  # the writer thread was not woken
    timers[0][1]()  # the loop's timer fires
    assert store.deliveries.event_count() == 2
    assert threads == [threading.get_ident()] * 2
    store.commits.submit(_insert(3), lazy=True)
    assert len(timers) == 2  # the next round sets the timer again
    store.close()  # commits what is still queued
    reopened = Store(tmp_path / "b.db")
    assert reopened.deliveries.event_count() == 3
    reopened.close()


def test_a_loop_timer_that_finds_the_store_busy_leaves_its_writes_to_the_writer_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    timers = []
    store.commits.lazy_writes_on(lambda: True, lambda delay, fn: timers.append(fn))
    threads = []
    store.commits.submit(_insert_noting_thread(1, threads), lazy=True)
    with store.commits._write_lock:  # another write is running
        timers[0]()
        assert threads == []
    wait_until(lambda: store.deliveries.event_count() == 1, 5, "the writer thread to commit the lazy write")
    assert threads and threads[0] != threading.get_ident()
    store.close()
    timers[0]()  # a timer that fires after close does nothing


def test_a_loop_timer_leaves_writes_that_are_not_lazy_to_the_writer_thread(tmp_path):
    store = Store(tmp_path / "b.db")
    timers = []
    store.commits.lazy_writes_on(lambda: True, lambda delay, fn: timers.append(fn))
    threads = []
    store.commits._jobs.append(store_module._Job(_insert_noting_thread(1, threads), waited=False))  # queued, writer not yet woken
    store.commits.submit(_insert_noting_thread(2, threads), lazy=True)
    timers[0]()
    wait_until(lambda: store.deliveries.event_count() == 2, 5, "the writer thread to commit both")
    assert threading.get_ident() not in threads
    store.close()


def test_lazy_writes_from_other_threads_and_settle_work_as_without_a_loop(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 60)
    store = Store(tmp_path / "b.db")
    timers = []
    store.commits.lazy_writes_on(lambda: False, lambda delay, fn: timers.append(fn))  # not called on the loop
    store.commits.submit(_insert(1), lazy=True)
    assert timers == []
    store.settle()  # what the API does before serving a request
    assert store.deliveries.event_count() == 1
    store.close()


def _publish(store, event_id):
    return store.deliveries.appending(1, [(event_id, "T", "s", b"{}")], [[(SUB, 1e12, True)]], 1.0)


def test_a_group_of_publishes_runs_without_savepoints_and_again_with_them_when_one_fails(tmp_path):
    store = Store(tmp_path / "b.db")
    statements = []
    store.commits.db().set_trace_callback(statements.append)
    results = []
    store.commits.transact_soon([(_publish(store, f"e{i}"), lambda r, e: results.append((r, e))) for i in range(3)])
    assert [e for _, e in results] == [None] * 3
    assert [r[0] for r, _ in results] == [[1], [2], [3]]
    assert not [s for s in statements if "SAVEPOINT" in s]  # one transaction, no savepoint per publish

    def failing(db):
        _publish(store, "bad")(db)  # takes numbers, then fails: rolled back with them
        raise RuntimeError("boom")

    results.clear()
    statements.clear()
    store.commits.transact_soon([(_publish(store, "e3"), lambda r, e: results.append((r, e))),
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
        store.commits.submit(lambda db, i=i: db.execute(
            "INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (?, 1, 'q', 'T', x'00', 0)", (i + 1,)))
    store.flush()
    assert store.deliveries.event_count() == 50
    store.close()


def test_writes_after_close_fail_instead_of_hanging(tmp_path):
    store = Store(tmp_path / "b.db")
    store.close()
    with pytest.raises(RuntimeError):
        append(store, 1)


def test_a_batch_attempt_is_recorded_for_each_of_its_deliveries_beside_lone_ones(tmp_path):
    from broker.store import Outcome

    store = Store(tmp_path / "b.db")
    append(store, 4, claimed=True)
    ids = [r["id"] for r in store.read("SELECT id FROM deliveries ORDER BY id")]
    batch_headers = {"aeg-delivery-count": "0"}
    store.deliveries.complete([
        Outcome([ids[0], ids[2]], 1, 5.0, "delivered", "Delivered", 200, 1.5, headers=batch_headers, batch_size=2),
        Outcome([ids[1]], 1, 6.0, "pending", "Failed", 503, 2.0, error="busy", next_attempt_at=16.0),
    ])
    rows = {r["id"]: r for r in store.read("SELECT * FROM deliveries")}
    assert [rows[i]["status"] for i in ids] == ["delivered", "pending", "delivered", "inflight"]
    assert rows[ids[0]]["done_at"] == 5.0 and rows[ids[1]]["done_at"] is None and rows[ids[1]]["next_attempt_at"] == 16.0
    attempts = {a["delivery_id"]: a for a in store.deliveries.attempts_for(ids)}
    assert sorted(attempts) == [ids[0], ids[1], ids[2]]
    assert attempts[ids[0]]["headers"] == attempts[ids[2]]["headers"] == batch_headers
    assert attempts[ids[0]]["batch_size"] == attempts[ids[2]]["batch_size"] == 2
    # ... though the batch's headers are stored once, on its newest delivery's row
    stored = store.read("SELECT delivery_id, headers IS NOT NULL AS kept, headers_from FROM attempts WHERE batch_size = 2 ORDER BY delivery_id")
    assert stored == [{"delivery_id": ids[0], "kept": 0, "headers_from": ids[2]}, {"delivery_id": ids[2], "kept": 1, "headers_from": None}]
    assert [a["headers"] for a in store.deliveries.attempts_for([ids[0]])] == [batch_headers]  # asked for alone, too
    assert (attempts[ids[1]]["status_code"], attempts[ids[1]]["error"], attempts[ids[1]]["headers"]) == (503, "busy", None)
    # a delivery no longer in flight (dropped meanwhile) keeps its state; its attempt is still on record
    store.deliveries.complete([Outcome([ids[0], ids[3]], 2, 7.0, "pending", "Failed", 500, 1.0, next_attempt_at=9.0)])
    assert store.read("SELECT status FROM deliveries WHERE id=?", (ids[0],)) == [{"status": "delivered"}]
    assert store.read("SELECT status FROM deliveries WHERE id=?", (ids[3],)) == [{"status": "pending"}]
    assert len(store.deliveries.attempts_for([ids[0]])) == 2
    store.close()


def test_outcomes_not_waited_for_are_recorded_together_by_one_lazy_job(tmp_path, monkeypatch):
    from broker.store import Outcome

    monkeypatch.setattr(store_module, "LAZY_WRITE_SECONDS", 60)
    store = Store(tmp_path / "b.db")
    append(store, 3, claimed=True)
    ids = [r["id"] for r in store.read("SELECT id FROM deliveries ORDER BY id")]
    for i, delivery in enumerate(ids):
        store.deliveries.complete([Outcome([delivery], 1, 5.0 + i, "delivered", "Delivered", 200, 1.0, headers={"n": str(i)})], wait=False)
    assert len(store.commits._jobs) == 1  # one job for the three of them
    assert store.deliveries.status_totals() == {"inflight": 3}  # not committed yet
    store.settle()
    assert store.deliveries.status_totals() == {"delivered": 3}
    assert [(a["delivery_id"], a["at"], a["headers"]) for a in store.deliveries.attempts_for(ids)] == [
        (delivery, 5.0 + i, {"n": str(i)}) for i, delivery in enumerate(ids)]
    store.deliveries.complete([Outcome([ids[0]], 2, 9.0, "delivered", "Delivered", 200, 1.0)], wait=False)
    assert len(store.commits._jobs) == 1  # the next round queues its own job
    store.close()  # and closing commits it
    reopened = Store(tmp_path / "b.db")
    assert len(reopened.deliveries.attempts_for([ids[0]])) == 2
    reopened.close()


def test_each_event_records_the_rowids_of_its_deliveries(tmp_path):
    store = Store(tmp_path / "b.db")
    seqs, first = store.deliveries.append(1, [("a", "T", None, b"{}"), ("b", "T", None, b"{}"), ("c", "T", None, b"{}")],
                                          [[(ONE, 1e12, False), (TWO, 1e12, False)], [], [(ONE, 1e12, True)]], 1.0)
    rows = {r["seq"]: r for r in store.read("SELECT seq, first_delivery, fanout FROM events")}
    assert [(rows[s]["first_delivery"], rows[s]["fanout"]) for s in seqs] == [(first, 2), (None, 0), (first + 2, 1)]
    by_event = {}
    for d in store.deliveries.of_events(seqs):
        by_event.setdefault(d["event_seq"], []).append(d["subscription"])
    assert by_event == {seqs[0]: [ONE, TWO], seqs[2]: [ONE]}
    store.close()


def test_a_claim_takes_at_most_its_bytes_of_event_bodies_but_always_one_delivery(tmp_path):
    store = Store(tmp_path / "b.db")
    store.deliveries.append(1, [(f"e{i}", "T", "s", b"x" * 1000) for i in range(5)], [[(SUB, 1e12, False)]] * 5, 1.0)
    assert len(store.deliveries.claim(SUB, 2.0, 10, max_bytes=2500)) == 2
    assert len(store.deliveries.claim(SUB, 2.0, 10, max_bytes=10)) == 1  # a large event still goes, alone
    assert len(store.deliveries.claim(SUB, 2.0, 10)) == 2
    store.close()


V1_SCHEMA = (Path(__file__).parent / "schema_v1.sql").read_text()


def test_a_version_1_store_is_upgraded_with_its_topics_subscriptions_events_and_deliveries(tmp_path):
    old = sqlite3.connect(tmp_path / "b.db")
    old.executescript(V1_SCHEMA)
    old.executescript("""
        INSERT INTO topics VALUES ('orders', 'EventGridSchema', '["k1"]', 5.0);
        INSERT INTO subscriptions VALUES ('orders', 'mailer', '{"destination": {"endpointType": "WebHook",
            "properties": {"endpointUrl": "http://127.0.0.1:9/x"}}}', 'Succeeded', NULL, 'CODE', 6.0, 6.0);
        INSERT INTO events VALUES (1, 'orders', 'a', 'T', 's', x'7b7d', 7.0, 1, 2), (2, 'Orders', 'b', 'T', 's', x'7b7d', 8.0, 3, 1);
        INSERT INTO deliveries (id, event_seq, topic, subscription, status, next_attempt_at, expires_at, created_at) VALUES
            (1, 1, 'orders', 'mailer', 'delivered', 7, 1e12, 7), (2, 1, 'orders', 'gone', 'dropped', 7, 1e12, 7),
            (3, 2, 'ORDERS', 'Mailer', 'pending', 8, 1e12, 8);
        INSERT INTO attempts (delivery_id, attempt, at, outcome) VALUES (1, 1, 7.5, 'Delivered');
    """)
    old.commit()
    old.close()
    store = Store(tmp_path / "b.db", arm_subscription="sub-1", resource_group="rg-1")
    rows = {(r.kind, r.name): r for r in store.resources.all()}
    topic, mailer = rows[("topic", "orders")], rows[("subscription", "mailer")]
    assert topic.properties == {"inputSchema": "EventGridSchema", "keys": ["k1"]} and (topic.arm_subscription, topic.resource_group) == ("sub-1", "rg-1")
    assert mailer.parent == topic.id and mailer.state == "Succeeded" and mailer.validation_code == "CODE"
    assert ("subscription", "gone") not in rows  # deleted before the upgrade: kept only to name its rows
    gone = store.read("SELECT id, deleted_at FROM resources WHERE name='gone'")
    assert len(gone) == 1 and gone[0]["deleted_at"] is not None
    assert [(e["seq"], e["topic"]) for e in store.read("SELECT seq, topic FROM events ORDER BY seq")] == [(1, topic.id), (2, topic.id)]
    assert [(d["id"], d["subscription"]) for d in store.read("SELECT id, subscription FROM deliveries ORDER BY id")] == [
        (1, mailer.id), (2, gone[0]["id"]), (3, mailer.id)]
    assert [c.id for c in store.deliveries.claim(mailer.id, 9.0, 10)] == [3]
    assert len(store.deliveries.attempts_for([1])) == 1
    assert store.read("PRAGMA user_version") == [{"user_version": 2}]
    tables = {r["name"] for r in store.read("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not tables & {"topics", "subscriptions", "events_v1", "deliveries_v1"}
    store.close()
    Store(tmp_path / "b.db").close()  # opened again: nothing left to upgrade


def test_an_upgrade_that_fails_leaves_the_old_store_as_it_was(tmp_path, monkeypatch):
    from broker.store import migrate

    old = sqlite3.connect(tmp_path / "b.db")
    old.executescript(V1_SCHEMA)
    old.execute("INSERT INTO topics VALUES ('orders', 'EventGridSchema', '[]', 5.0)")
    old.commit()
    old.close()

    def broken(*_args):
        raise RuntimeError("killed midway")

    monkeypatch.setattr(migrate, "_from_v1", lambda db, *a: (db.execute("ALTER TABLE events RENAME TO events_v1"), broken()))
    with pytest.raises(RuntimeError):
        Store(tmp_path / "b.db")
    check = sqlite3.connect(tmp_path / "b.db")
    assert {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {"topics", "events", "deliveries"}
    check.close()


def test_a_receive_takes_about_its_bytes_of_events_but_always_one(tmp_path):
    from broker.store import QueueRules

    store = Store(tmp_path / "b.db")
    store.deliveries.append(1, [(f"e{i}", "T", "s", b"x" * 1000) for i in range(6)], [[(SUB, 1e12, False)]] * 6, 1.0)
    rules = QueueRules(60.0, 10, False)
    first = store.commits.transact(store.queues.receiving(SUB, 100, 2.0, rules, max_bytes=2500))
    assert len(first) == 2
    assert len(store.commits.transact(store.queues.receiving(SUB, 100, 2.0, rules, max_bytes=10))) == 1
    assert len(store.commits.transact(store.queues.receiving(SUB, 100, 2.0, rules))) == 3
    store.close()


def test_a_lock_token_is_refused_when_made_up_and_fails_once_its_event_was_received_again(tmp_path):
    from broker.store import QueueRules

    store = Store(tmp_path / "b.db")
    store.deliveries.append(1, [("e1", "T", "s", b"{}")], [[(SUB, 1e12, False)]], 1.0)
    rules = QueueRules(10.0, 10, False)
    [got] = store.commits.transact(store.queues.receiving(SUB, 1, 2.0, rules))
    forged = got.lock_token.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAA"
    ok, failed = store.commits.transact(store.queues.settling(SUB, "release", [got.lock_token, forged], 3.0, rules))
    assert ok == [got.lock_token] and [(t, e[0]) for t, e in failed] == [(forged, "BadToken")]
    [again] = store.commits.transact(store.queues.receiving(SUB, 1, 4.0, rules))
    assert again.delivery_count == 2 and again.lock_token != got.lock_token
    ok, failed = store.commits.transact(store.queues.settling(SUB, "acknowledge", [got.lock_token], 5.0, rules))
    assert ok == [] and failed[0][1][0] == "TokenLost"
    store.close()
    reopened = Store(tmp_path / "b.db")  # tokens are signed with a secret kept in the store
    ok, _ = reopened.commits.transact(reopened.queues.settling(SUB, "acknowledge", [again.lock_token], 6.0, rules))
    assert ok == [again.lock_token]
    reopened.close()
