"""Group commit: every write of the store runs here, one SQLite write transaction at a time.

Threads and what they own:

* the caller's thread runs its write right away when no other write is running (it "leads" a group
  of one): no thread hand-off at all when writes do not overlap;
* the `store-writer` thread runs the writes queued while another one was running, many callers'
  writes in one transaction (a group), each in its own savepoint, so one commit makes them all
  durable and a failing one is rolled back alone;
* an event loop may commit the lazy writes queued on its own thread (`lazy_writes_on`), from a timer,
  so that the delivery loop's results do not wake the writer thread at all;
* the checkpointer thread (checkpointer.py) copies the log into the database and, when the log has
  grown, takes the write lock for one round; every writer lets it have the lock first.

Rules that keep this free of deadlocks:

* `_write_lock` is held only while a group runs. Nothing outside this module runs under it: the
  follow-ups of a group (`then` callbacks of `transact_soon` and of `submit`) run after it is
  released, on the thread that ran the group.
* A thread that holds the write lock and asks for another write raises `WriteUnderLock` instead of
  waiting for itself. A write's function gets the connection and does all its work on it.
* The writer thread never waits for the writer thread: a follow-up running there that writes again
  takes the lock itself.

SQLite failures that a retry can cure (the disk is full, an I/O error) raise `StoreUnavailable`, so
that the HTTP layer can answer 503 with Retry-After instead of 500.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .checkpointer import KEEP_BYTES, Checkpointer

log = logging.getLogger("broker.store")

MAX_GROUP = 1000  # jobs in one group commit
# How long a write nobody waits for may stay queued (`submit(lazy=True)`). Meanwhile any group the
# writer thread runs takes it along, and the writer wakes for it once per interval, not once per job.
# Delivery results are written this way: at a thousand single-event deliveries a second, a commit and
# a writer-thread wake-up per delivery cost more CPU than the delivery itself.
LAZY_WRITE_SECONDS = 0.01

# SQLite's primary result codes that mean "not now" rather than "never": the write may succeed once
# the operator frees disk space (or the device recovers).
_UNAVAILABLE_CODES = {13: "SQLITE_FULL", 10: "SQLITE_IOERR", 14: "SQLITE_CANTOPEN"}
RETRY_AFTER_SECONDS = 5

Then = Callable[[Any, BaseException | None], None]


class StoreClosed(RuntimeError):
    pass


class WriteUnderLock(RuntimeError):
    """A write was asked for by the thread that holds the write lock (it would wait for itself)."""


class StoreUnavailable(RuntimeError):
    """The store cannot take writes for now (disk full, I/O error); `retry_after` in seconds."""

    retry_after = RETRY_AFTER_SECONDS


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable that `exc` (raised by a write) amounts to, or None for any other error."""
    if isinstance(exc, StoreUnavailable):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE_CODES:
        found = StoreUnavailable(f"the store cannot take writes: {exc}")
        found.__cause__ = exc
        return found
    return None


class _GroupLost(Exception):
    """A job's failure took the whole transaction with it (SQLite rolls back on SQLITE_FULL)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Job:
    __slots__ = ("fn", "result", "error", "done", "waited", "due", "then", "rerunnable")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], waited: bool = True, queued: bool = True,
                 due: float = 0.0, then: Then | None = None, rerunnable: bool = False) -> None:
        self.fn = fn
        self.rerunnable = rerunnable  # fn changes nothing but the database: it may run twice (see _run_group)
        self.result: Any = None
        self.error: BaseException | None = None
        self.waited = waited  # its caller reads the result or the error
        # What a queued caller waits on. A job with `then` is not waited for: then(result, error) runs
        # once it is committed (or failed), after the write lock is released.
        self.done = threading.Event() if waited and queued and then is None else None
        self.due = due  # monotonic time the writer thread commits it by (0: at once)
        self.then = then


class GroupCommit:
    def __init__(self, path: Path, sync: str) -> None:
        self.path = Path(path)
        self.sync = sync
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._jobs: deque[_Job] = deque()  # appended by anyone, taken only under _write_lock
        self._queued = threading.Event()  # wakes the writer thread
        self._write_lock = threading.Lock()  # held while a group runs: one transaction at a time
        self._leader: int | None = None  # the thread running the current group
        self._stopping = False
        self._lazy_timer = False  # the writer sleeps until the oldest queued lazy job is due
        # An event loop that commits the lazy writes queued from its own thread (lazy_writes_on):
        # (on_loop(), call_later(delay, fn)), and whether its timer is set.
        self._lazy_loop: tuple[Callable[[], bool], Callable[[float, Callable[[], None]], object]] | None = None
        self._loop_timer = False
        # Called (under the write lock) after a write was rolled back: caches of what the database
        # holds, such as the next sequence numbers, are read again.
        self.on_rollback: list[Callable[[], None]] = []
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self.checkpointer = Checkpointer(self.path, self.sync, self._write_lock)

    def start(self) -> None:
        self._writer.start()
        self.checkpointer.start()

    # -- connections -------------------------------------------------------------------------

    def db(self) -> sqlite3.Connection:
        """This thread's connection (readers never block the writer: WAL)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.sync}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it (see there)
            db.execute(f"PRAGMA journal_size_limit={KEEP_BYTES}")
            db.execute("PRAGMA foreign_keys=OFF")
            db.row_factory = sqlite3.Row
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    # -- writing -----------------------------------------------------------------------------

    def transact(self, fn: Callable[[sqlite3.Connection], Any], with_queued: bool = False) -> Any:
        """Run `fn(db)` in a write transaction (shared with concurrent callers); return its result.

        A caller that leads a group commits only its own write, unless `with_queued`: what is
        queued is the writer thread's, whose SQLite work then runs beside the caller (SQLite lets
        go of the GIL) rather than in front of the caller's answer."""
        self._check_open()
        me = threading.get_ident()
        if self._leader == me:
            raise WriteUnderLock("a write was asked for while this thread holds the store's write lock")
        job = _Job(fn, queued=False)  # run right here if it can: nothing to wait for
        if me == self._writer.ident:  # a follow-up on the writer thread: nobody else would run it
            with self._write_lock:
                follow = self._run_group(self.db(), [job])
            self._follow_up(follow)
        elif not self._lead([job], with_queued):
            job = _Job(fn)
            self._jobs.append(job)
            self._queued.set()
            while not job.done.wait(1.0):
                if not self._writer.is_alive():
                    raise StoreClosed("the store was closed before this write ran")
        if job.error is not None:
            raise unavailable(job.error) or job.error
        return job.result

    def submit(self, fn: Callable[[sqlite3.Connection], Any], lazy: bool = False, then: Then | None = None) -> None:
        """Queue a write without waiting for its commit; `then(result, error)` runs once it is
        committed or failed (without it, a failure is logged). A `lazy` one may wait up to
        LAZY_WRITE_SECONDS for other writes to share its commit."""
        self._check_open()
        self._jobs.append(_Job(fn, waited=False, due=time.monotonic() + LAZY_WRITE_SECONDS if lazy else 0.0, then=then))
        if lazy and self._lazy_loop is not None and self._lazy_loop[0]():
            if not self._loop_timer:  # the loop commits it once due: no other thread wakes
                self._loop_timer = True
                self._lazy_loop[1](LAZY_WRITE_SECONDS, self._commit_lazy)
        elif not lazy or not self._lazy_timer:  # a lazy one wakes the writer only to set its timer
            self._queued.set()

    def transact_soon(self, jobs: Sequence[tuple[Callable[[sqlite3.Connection], Any], Then]]) -> None:
        """Run writes `(fn, then)` in one transaction, each all-or-nothing, and call `then(result,
        error)` for each once committed. Never waits: when no other write is running they run and
        commit right here, and each `then` is called before this returns; otherwise the writer thread
        takes them into its next group and calls them from there. A `fn` may run twice (when another
        job of its group fails): it must change nothing but the database."""
        self._check_open()
        queued = [_Job(fn, queued=False, then=then, rerunnable=True) for fn, then in jobs]
        if not self._lead(queued):
            self._jobs.extend(queued)
            self._queued.set()

    def lazy_writes_on(self, on_loop: Callable[[], bool], call_later: Callable[[float, Callable[[], None]], object]) -> None:
        """Lazy writes queued on an event loop's thread are committed there, from a timer
        (`call_later(delay, fn)` on that loop; `on_loop()` tells its thread), not by the writer
        thread: no wake-ups of a second thread and no GIL tug-of-war on one CPU (measurements in
        docs/performance.md). The commit holds the loop for a fraction of a millisecond."""
        self._lazy_loop = (on_loop, call_later)

    def flush(self) -> None:
        """Wait until every write queued so far is committed (jobs are only taken from the queue
        under the write lock, so once this one's group ran, every earlier job's had)."""
        self.transact(lambda db: None, with_queued=True)

    def settle(self) -> None:
        """Commit the queued writes now, so a request that reads next sees them (no-op when none are).
        A failed commit is their writers' to handle: the read goes on and shows what is stored."""
        if self._jobs and not self._stopping and self._leader != threading.get_ident():
            try:
                self.flush()
            except StoreUnavailable:
                log.debug("settling the queued writes failed", exc_info=True)

    def _check_open(self) -> None:
        if self._stopping or not self._writer.is_alive():
            raise StoreClosed("the store is closed")

    def _commit_lazy(self) -> None:
        """The loop's timer: commit what is queued, here, unless another write is running or
        something not lazy is queued too (a prune, a management write: the writer thread's, so that
        no long job runs on the loop); the writer thread then takes it all."""
        self._loop_timer = False
        if self._stopping or not self._jobs:
            return
        if not self._queued_lazy() or not self._lead([], with_queued=True) or self._jobs:
            self._queued.set()

    def _lead(self, jobs: list[_Job], with_queued: bool = False) -> bool:
        """Run `jobs` as a group on this thread if no other write is running and the checkpointer is
        not waiting for its round (then, False: the caller queues them for the writer thread)."""
        if self.checkpointer.waiting or not self._write_lock.acquire(blocking=False):
            return False
        try:
            follow = self._run_group(self.db(), [*jobs, *self._take(MAX_GROUP - len(jobs))] if with_queued else jobs)
        finally:
            self._write_lock.release()
        self._follow_up(follow)
        return True

    def _take(self, limit: int) -> list[_Job]:
        jobs = []
        while self._jobs and len(jobs) < limit:
            jobs.append(self._jobs.popleft())
        return jobs

    def _write_loop(self) -> None:
        db = self.db()
        timeout = None
        while True:
            self._queued.wait(timeout)
            while self.checkpointer.waiting:  # its reset round first: every writer lets it have the lock
                time.sleep(0.0005)
            follow: list[_Job] = []
            with self._write_lock:
                self._queued.clear()
                # Cleared before looking, set after: a lazy job queued in between wakes us itself.
                self._lazy_timer = False
                timeout = self._lazy_for()
                if timeout:
                    self._lazy_timer = True
                    continue
                jobs = self._take(MAX_GROUP)
                if jobs:
                    follow = self._run_group(db, jobs)
                if self._jobs:
                    self._queued.set()  # more than one group's worth
                stop = self._stopping and not self._jobs
            self._follow_up(follow)
            if stop:
                return

    def _lazy_for(self) -> float | None:
        """How long the writer may still sleep: every queued job is lazy and none is due yet."""
        if self._stopping:
            return None
        jobs = self._queued_lazy()
        if not jobs:
            return None
        return max(0.0, jobs[0].due - time.monotonic()) or None  # the oldest is due first

    def _queued_lazy(self) -> list[_Job]:
        """The queued jobs if every one of them is lazy, else none."""
        jobs = list(self._jobs)  # one C call: appends by other threads cannot interleave
        return jobs if all(job.due for job in jobs) else []

    def _run_group(self, db: sqlite3.Connection, jobs: list[_Job]) -> list[_Job]:
        """Run jobs in one transaction (the caller holds the write lock); return those whose
        follow-up the caller runs once it has released the lock (`_follow_up`)."""
        if not jobs:
            return []
        self._leader = threading.get_ident()
        try:
            db.execute("BEGIN IMMEDIATE")
            alone = len(jobs) == 1  # no savepoint needed: its failure rolls back the transaction
            guarded = jobs
            if not alone and all(job.rerunnable for job in jobs):
                # Publishes: all of them without savepoints (two statements a job less), and only
                # if one fails, all of them again, each in its own.
                if self._ran_unguarded(db, jobs):
                    guarded = []
                else:
                    db.execute("BEGIN IMMEDIATE")
            for job in guarded:
                if not alone:
                    db.execute("SAVEPOINT job")
                try:
                    job.result = job.fn(db)
                    if not alone:
                        db.execute("RELEASE job")
                except Exception as exc:  # this job only: undo it, tell its caller
                    if not db.in_transaction:  # SQLite undid the whole transaction itself (a full disk, I/O)
                        raise _GroupLost(exc) from exc
                    if alone:
                        db.execute("ROLLBACK")
                    else:
                        db.execute("ROLLBACK TO job")
                        db.execute("RELEASE job")
                    self._rolled_back()
                    job.result, job.error = None, exc
                    # A caller that waits gets the error; one that did not is told by the log.
                    log.log(logging.DEBUG if job.waited or job.then else logging.ERROR, "write rolled back", exc_info=True)
            if db.in_transaction:
                db.execute("COMMIT")
        except (sqlite3.Error, _GroupLost) as exc:  # the commit failed, or the transaction is gone: nothing is stored
            exc = exc.cause if isinstance(exc, _GroupLost) else exc
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._rolled_back()
            for job in jobs:  # (a result is kept: a job's follow-up may need what it held)
                job.error = job.error or exc
            if not all(job.waited or job.then for job in jobs):
                log.error("a commit failed; writes nobody waited for are lost", exc_info=True)
        finally:
            self._leader = None
        follow = []
        for job in jobs:
            if job.done is not None:
                job.done.set()
            elif job.then is not None:
                follow.append(job)
        return follow

    @staticmethod
    def _follow_up(jobs: list[_Job]) -> None:
        """The `then` of committed (or failed) jobs, outside the write lock."""
        for job in jobs:
            try:
                job.then(job.result, job.error)
            except Exception:
                log.exception("a commit's follow-up failed")

    def _ran_unguarded(self, db: sqlite3.Connection, jobs: list[_Job]) -> bool:
        """Run the jobs in the open transaction; on the first failure roll it all back (False)."""
        try:
            for job in jobs:
                job.result = job.fn(db)
        except Exception:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._rolled_back()
            return False
        return True

    def _rolled_back(self) -> None:
        for hook in self.on_rollback:
            hook()

    def close(self) -> None:
        self.checkpointer.stop()
        if self._writer.is_alive():
            self._stopping = True  # the writer commits what is queued, then ends
            self._queued.set()
            self._writer.join(10)
        self._stopping = True
        with self._write_lock, self._connections_lock:  # not under a leader's running group
            for db in self._connections:
                try:
                    db.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()
