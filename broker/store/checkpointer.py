"""Copies the store's write-ahead log into the database file on a thread of its own.

SQLite's automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages: that commit
copies 4 MB and waits for two fsyncs, 15-25 ms on the 2-core test machine. The broker commits a
publish on the thread that serves requests, so every few hundred publishes everything stalled for
that long. Measured at 600 events/s with a subscriber: p99 publish -> delivery 125 ms with
automatic checkpoints, 3 ms without.

So the store's connections turn the automatic checkpoint off and this thread checkpoints every
`interval` seconds in PASSIVE mode, which never blocks a writer. (SQLite does the copying and
syncing without the GIL, so it also runs on the other core.) It keeps the same `synchronous`
level, so nothing about durability changes.

A PASSIVE checkpoint cannot rewind the log while writes keep coming: SQLite starts the log over
only when a write begins with every frame already copied. So once the log reaches `reset_bytes`,
the checkpointer holds the store's write lock for one more PASSIVE round, which copies only what
arrived since the last one (4-5 ms measured). The writes queued meanwhile share one commit, and the
first of them starts the log over: the log file stays within about `reset_bytes`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("broker.store")

CHECKPOINT_SECONDS = 0.1  # small rounds: rounds a second apart made writers wait up to ~25 ms
# Log size that makes the checkpointer hold writers off for a round: measured 4-5 ms held, about once
# a second at 600 events/s with a subscriber.
RESET_BYTES = 16 << 20
# journal_size_limit: a log file larger than this is cut back after a reset. Above RESET_BYTES, so
# that it rarely happens: cutting 48 MB off the file took tens of milliseconds on this machine.
KEEP_BYTES = 32 << 20
WARN_EVERY_SECONDS = 30.0  # a failing checkpoint (a full disk) is logged this often


class Checkpointer:
    def __init__(self, path: Path, sync: str, write_lock: threading.Lock, interval: float = CHECKPOINT_SECONDS,
                 reset_bytes: int = RESET_BYTES) -> None:
        self.path = path
        self.sync = sync
        self.write_lock = write_lock
        self.interval = interval
        self.reset_bytes = reset_bytes
        self.resets = 0  # rounds run under the write lock (tests and curiosity)
        # Set while this thread waits for the write lock: no writer takes it meanwhile (callers queue
        # for the writer thread, which waits), so the round starts once the current holder is done.
        # (A thread that commits in a tight loop releases and takes the lock again before the waiting
        # checkpointer is even scheduled: unfair, the log grew to 24 MB under such a loop before a
        # reset round got in.)
        self.waiting = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            db.execute(f"PRAGMA synchronous={self.sync}")
            page = db.execute("PRAGMA page_size").fetchone()[0]
            warned = -WARN_EVERY_SECONDS
            failures = 0
            while not self._stop.wait(self.interval):
                try:
                    self.checkpoint(db, page)
                except sqlite3.Error:  # e.g. the disk is full: the next round tries again
                    failures += 1
                    now = time.monotonic()
                    if now - warned >= WARN_EVERY_SECONDS:  # ten rounds a second: say it once in a while
                        warned = now
                        log.warning("checkpoint failed", extra={"failures": failures}, exc_info=True)
                        failures = 0
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection, page: int) -> None:
        _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames * page >= self.reset_bytes:
            self.waiting = True
            try:
                with self.write_lock:  # no write can start: this round copies everything that is left
                    self.waiting = False
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                self.waiting = False
            self.resets += 1
