"""The group commit's threading rules: no follow-up runs under the write lock, a write asked for
under the lock fails loudly, and a full disk is a StoreUnavailable the caller can answer 503 for."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from broker.store import Outcome, Store, StoreUnavailable, WriteUnderLock, unavailable
from tests.waiting import wait_until


def _event(seq: int):
    return lambda db: db.execute(
        "INSERT INTO events (seq, topic, event_id, event_type, body, received_at) VALUES (?, 1, 'e', 'T', x'7b7d', 0)", (seq,))


def test_a_follow_up_runs_after_the_write_lock_is_released_and_may_write_again(tmp_path):
    store = Store(tmp_path / "b.db")
    seen = []

    def then(_result, error):
        seen.append((error, store.commits._write_lock.locked()))
        store.commits.transact(_event(2))  # what Dispatcher.hand_over's release used to deadlock on

    store.commits.transact_soon([(_event(1), then)])
    assert seen == [(None, False)]
    assert store.deliveries.event_count() == 2
    store.close()


def test_a_follow_up_on_the_writer_thread_that_writes_does_not_wait_for_itself(tmp_path):
    store = Store(tmp_path / "b.db")
    done = threading.Event()
    threads = []

    def then(_result, _error):
        threads.append(threading.current_thread().name)
        store.commits.transact(_event(2))
        done.set()

    with store.commits._write_lock:  # busy: the jobs go to the writer thread
        store.commits.transact_soon([(_event(1), then)])
    assert done.wait(5), "the writer thread deadlocked on its own follow-up's write"
    assert threads == ["store-writer"] and store.deliveries.event_count() == 2
    store.close()


def test_a_write_asked_for_while_holding_the_write_lock_fails_loudly(tmp_path):
    store = Store(tmp_path / "b.db")
    errors = []

    def nested(db):
        try:
            store.commits.transact(_event(2))
        except WriteUnderLock as exc:
            errors.append(exc)
            raise

    with pytest.raises(WriteUnderLock):
        store.commits.transact(nested)
    assert len(errors) == 1 and store.deliveries.event_count() == 0
    store.close()


def _fill_the_disk(store: Store) -> None:
    """SQLite refuses to grow the file past max_page_count: SQLITE_FULL, as on a full disk."""
    db = store.commits.db()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    for conn in store.commits._connections:
        conn.execute(f"PRAGMA max_page_count={pages}")


def _big_events(store: Store, n: int, start: int = 1) -> None:
    store.deliveries.append(1, [(f"e{i}", "T", "s", b"x" * 4000) for i in range(start, start + n)], [[] for _ in range(n)], 1.0)


def test_a_full_disk_is_a_store_unavailable_and_stores_nothing_of_the_write(tmp_path):
    store = Store(tmp_path / "b.db")
    _big_events(store, 1)
    _fill_the_disk(store)
    with pytest.raises(StoreUnavailable) as raised:
        _big_events(store, 50, start=2)
    assert raised.value.retry_after > 0 and isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert store.deliveries.event_count() == 1
    store.close()


def test_the_readiness_probe_writes_to_the_database_itself(tmp_path):
    """Not to a TEMP table, which lives in memory and stays writable on a full disk."""
    store = Store(tmp_path / "b.db")
    store.check_writable()
    first = store.read("SELECT value FROM main.meta WHERE key='ready_probe'")
    store.check_writable()
    second = store.read("SELECT value FROM main.meta WHERE key='ready_probe'")
    assert len(first) == 1 and first != second
    store.close()


def test_unavailable_maps_only_errors_a_retry_can_cure():
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    constraint = sqlite3.IntegrityError("UNIQUE constraint failed")
    constraint.sqlite_errorcode = 2067
    assert isinstance(unavailable(full), StoreUnavailable)
    assert unavailable(constraint) is None and unavailable(RuntimeError("x")) is None


def test_outcomes_whose_commit_failed_are_kept_and_recorded_once_space_is_back(tmp_path):
    store = Store(tmp_path / "b.db")
    store.deliveries.append(1, [("e1", "T", "s", b"{}")], [[(5, 1e12, True)]], 1.0)
    _big_events(store, 1, start=2)
    _fill_the_disk(store)
    with pytest.raises(StoreUnavailable):
        _big_events(store, 200, start=3)
    recorded = []
    # Lots of attempt rows (long errors) so the write needs pages the full database does not have.
    outcomes = [Outcome([1], 1, 5.0, "delivered", "Delivered", 200, 1.0, error="x" * 3000, headers={"h": "y" * 8000})]
    store.deliveries.complete(outcomes, wait=False, then=lambda _e: recorded.append(True))
    store.settle()
    assert store.deliveries.status_totals() == {"inflight": 1} and store.deliveries.unrecorded == 1 and recorded == []
    for conn in store.commits._connections:
        conn.execute("PRAGMA max_page_count=1073741823")  # space is back
    store.deliveries.record_pending()
    store.settle()
    wait_until(lambda: recorded == [True], 5, "the kept outcome to be recorded")
    assert store.deliveries.status_totals() == {"delivered": 1} and store.deliveries.unrecorded == 0
    store.close()
