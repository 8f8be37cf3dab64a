"""The store's write-ahead log is checkpointed off the commit path and stays bounded."""

from __future__ import annotations

import os
import time

from broker.store import Store
from broker.store.checkpointer import Checkpointer
from tests.waiting import wait_until


def wal_bytes(store: Store) -> int:
    wal = f"{store.path}-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else 0


def test_commits_never_checkpoint_themselves(tmp_path):
    store = Store(tmp_path / "b.db")
    try:
        assert store.commits.db().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    finally:
        store.close()


def test_the_checkpointer_copies_the_log_into_the_database_in_the_background(tmp_path):
    store = Store(tmp_path / "b.db")
    store.checkpointer.stop()  # until the writes are done: the database file holds the schema only
    try:
        body = b"x" * 2000
        for i in range(200):
            store.deliveries.append(1, [(f"id{i}", "T", "s", body)], [[]], 1.0)
        probe = store.commits.db()
        assert os.path.getsize(store.path) < 100 * 1024 and wal_bytes(store) > 200 * len(body)
        store.commits.checkpointer = Checkpointer(store.path, store.commits.sync, store.commits._write_lock, interval=0.02)
        store.checkpointer.start()

        def fully_copied():
            # A PASSIVE checkpoint of our own finds nothing left to copy once the checkpointer ran.
            _busy, frames, copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return frames > 0 and frames == copied

        wait_until(fully_copied, 5, "the checkpointer to copy the log")
        assert os.path.getsize(store.path) > 200 * len(body)  # the events are in the database file now
    finally:
        store.close()


def test_the_log_is_started_over_under_steady_writes(tmp_path):
    """Writes that never pause would grow the log for ever with PASSIVE checkpoints alone."""
    store = Store(tmp_path / "b.db")
    store.checkpointer.stop()
    store.commits.checkpointer = Checkpointer(store.path, store.commits.sync, store.commits._write_lock, interval=0.01, reset_bytes=256 << 10)
    store.checkpointer.start()
    body = b"y" * 3000
    written, deadline = 0, time.monotonic() + 60
    try:
        while (store.checkpointer.resets < 3 or written < 40_000) and time.monotonic() < deadline:
            store.deliveries.append(1, [(f"e{written}", "T", "s", body)], [[]], 1.0)
            written += 1
        assert store.checkpointer.resets >= 3
        # Never started over, the log would hold every event's bytes, 120 MB (and index pages on top).
        # Started over, it stays at what is written between two rounds: ~7 MB at this pace, but up to
        # 24 MB seen on a busy machine, where a round's fsync took long while the writes went on
        # (the bound stays a third of the bytes written; at 10,000 writes that third was 10 MB and
        # such a round failed the test).
        assert wal_bytes(store) < written * len(body) / 3, f"{written} writes left a {wal_bytes(store)} byte log"
        assert store.deliveries.event_count() == written
    finally:
        store.close()


def test_writers_leave_the_lock_to_a_checkpointer_waiting_for_it(tmp_path, monkeypatch):
    """While the checkpointer waits for the write lock nobody else takes it: a write queues for the
    writer thread, which waits until the checkpointer has had its round. So a caller committing in
    a tight loop cannot keep the checkpointer out."""
    import threading

    store = Store(tmp_path / "b.db")
    ran_on = []
    run_group = store.commits._run_group
    monkeypatch.setattr(store.commits, "_run_group", lambda db, jobs: ran_on.append(threading.current_thread().name) or run_group(db, jobs))
    try:
        store.deliveries.append(1, [("e1", "T", "s", b"{}")], [[]], 1.0)
        store.checkpointer.waiting = True  # as the checkpointer does before it blocks on the lock
        writer = threading.Thread(target=store.deliveries.append, args=(1, [("e2", "T", "s", b"{}")], [[]], 1.0))
        writer.start()
        writer.join(0.3)
        assert writer.is_alive() and store.deliveries.event_count() == 1  # e2 waits for the round
        with store.commits._write_lock:  # the checkpointer's round
            store.checkpointer.waiting = False
        writer.join(5)
        assert not writer.is_alive() and store.deliveries.event_count() == 2
        assert ran_on == [threading.current_thread().name, "store-writer"]
    finally:
        store.checkpointer.waiting = False
        store.close()
