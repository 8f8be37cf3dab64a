"""The durable store: SQLite in WAL mode holding resources, events and deliveries.

Its parts, each a module of this package:

* `commits.GroupCommit` -- the one way to write: group commits on a writer thread, each caller's
  write all-or-nothing, and the threading rules that keep it free of deadlocks (read them there);
* `deliveries.Deliveries` -- events, deliveries, attempts, dead letters and retention;
* `resources.ResourceRows` -- the rows of topics, domains, namespaces and event subscriptions;
* `queues.Queues` -- the events of namespace queue subscriptions and their receivers' locks;
* `migrate` -- upgrades a store made by an earlier version;
* `checkpointer.Checkpointer` -- copies the write-ahead log into the database on its own thread.

WAL + synchronous=NORMAL: a commit is in the WAL file before the broker answers 2xx, so a killed
process (kill -9) loses nothing; only an OS crash or power cut can lose the last commits.
synchronous=FULL (BROKER_SYNC=full) fsyncs every commit and survives those too, slower.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import migrate
from .commits import GroupCommit, StoreClosed, StoreUnavailable, WriteUnderLock, unavailable
from .deliveries import FINAL_STATES, Claimed, Deliveries, Outcome
from .queues import QueueRules, Queues
from .resources import ResourceRow, ResourceRows

SCHEMA = (Path(__file__).parent / "schema.sql").read_text()
# Room a ready store keeps on its volume: a publish of up to 1 MB, written to the log and then
# copied into the database.
MIN_FREE_BYTES = 2 << 20

__all__ = ["FINAL_STATES", "Claimed", "Outcome", "QueueRules", "ResourceRow", "Store", "StoreClosed", "StoreUnavailable", "WriteUnderLock",
           "unavailable"]


class Store:
    def __init__(self, path: Path, sync: str = "normal", arm_subscription: str = "00000000-0000-0000-0000-000000000000",
                 resource_group: str = "eventgrid-emulator") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.commits = GroupCommit(self.path, sync.upper())
        migrate.upgrade(self.commits.db(), SCHEMA, arm_subscription, resource_group)
        self.deliveries = Deliveries(self.commits)
        self.resources = ResourceRows(self.commits)
        self.queues = Queues(self.commits)
        self.commits.start()

    @property
    def checkpointer(self):
        return self.commits.checkpointer

    def settle(self) -> None:
        """Commit the queued writes now, so a request that reads next sees them."""
        self.commits.settle()

    def flush(self) -> None:
        self.commits.flush()

    def read(self, sql: str, args=()) -> list[dict]:
        """A read-only query on this thread's connection (views such as the dashboard)."""
        return [dict(r) for r in self.commits.db().execute(sql, args)]

    def check_writable(self) -> None:
        """Raises unless the store takes a write to the database itself (/readyz), and its volume has
        room for the largest publish: a tiny write may still fit on a disk that refuses every event."""
        now = repr(time.time())
        self.commits.transact(lambda db: db.execute(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', ?) ON CONFLICT (key) DO UPDATE SET value=excluded.value", (now,)))
        stat = os.statvfs(self.path.parent)
        free = stat.f_bavail * stat.f_frsize
        if free < MIN_FREE_BYTES:
            raise StoreUnavailable(f"only {free} bytes are free on the store's volume; a publish may need {MIN_FREE_BYTES}")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())

    def close(self) -> None:
        self.commits.close()
