"""The rows of the `resources` table: topics, domains, domain topics, namespaces, namespace topics
and event subscriptions, as the registry (broker/registry.py) keeps them in memory.

Writes wait for their commit: the registry changes its in-memory view only after the store has the
change, so a failed write leaves both as they were.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .commits import GroupCommit
from .deliveries import Deliveries


@dataclass(slots=True)
class ResourceRow:
    kind: str
    name: str
    parent: int | None
    arm_subscription: str
    resource_group: str
    properties: dict[str, Any]
    location: str = ""
    tags: dict[str, str] | None = None
    state: str | None = None
    state_detail: str | None = None
    validation_code: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    id: int | None = None


_COLUMNS = ("kind", "name", "parent", "arm_subscription", "resource_group", "location", "tags", "properties", "state",
            "state_detail", "validation_code", "created_at", "updated_at")


def _values(row: ResourceRow) -> tuple:
    return (row.kind, row.name, row.parent, row.arm_subscription, row.resource_group, row.location,
            orjson.dumps(row.tags).decode() if row.tags is not None else None, orjson.dumps(row.properties).decode(),
            row.state, row.state_detail, row.validation_code, row.created_at, row.updated_at)


class ResourceRows:
    def __init__(self, commits: GroupCommit) -> None:
        self.commits = commits

    def all(self) -> list[ResourceRow]:
        """Every live resource, parents before children."""
        rows = self.commits.db().execute(
            f"SELECT id, {', '.join(_COLUMNS)} FROM resources WHERE deleted_at IS NULL ORDER BY id").fetchall()
        out = []
        for r in rows:
            out.append(ResourceRow(
                id=r["id"], kind=r["kind"], name=r["name"], parent=r["parent"], arm_subscription=r["arm_subscription"],
                resource_group=r["resource_group"], location=r["location"], tags=orjson.loads(r["tags"]) if r["tags"] else None,
                properties=orjson.loads(r["properties"]), state=r["state"], state_detail=r["state_detail"],
                validation_code=r["validation_code"], created_at=r["created_at"], updated_at=r["updated_at"],
            ))
        return sorted(out, key=lambda row: _depth(row, {r.id: r for r in out}))

    def names(self, ids: Sequence[int]) -> dict[int, tuple[str, str, int | None, bool]]:
        """(kind, name, parent, deleted) of these resources, deleted ones included (the dashboard
        names old deliveries with them)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {r[0]: (r[1], r[2], r[3], r[4] is not None) for r in self.commits.db().execute(
            f"SELECT id, kind, name, parent, deleted_at FROM resources WHERE id IN ({marks})", list(ids))}

    def save(self, row: ResourceRow) -> int:
        """Insert a new row (row.id None) or replace one; return its id."""
        def tx(db: sqlite3.Connection) -> int:
            if row.id is None:
                cur = db.execute(f"INSERT INTO resources ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", _values(row))
                return cur.lastrowid
            db.execute(f"UPDATE resources SET {', '.join(c + '=?' for c in _COLUMNS)} WHERE id=?", (*_values(row), row.id))
            return row.id
        return self.commits.transact(tx)

    def set_state(self, resource_id: int, state: str, detail: str | None, now: float) -> None:
        self.commits.transact(lambda db: db.execute(
            "UPDATE resources SET state=?, state_detail=?, updated_at=? WHERE id=?", (state, detail, now, resource_id)))

    def delete(self, ids: Sequence[int], subscriptions: Sequence[int], reason: str, now: float) -> None:
        """Mark resources deleted and drop every delivery of the deleted subscriptions that is still
        to be made (dead letters included: nothing can reach them through the API any more), in one
        write."""
        def tx(db: sqlite3.Connection) -> None:
            Deliveries.drop_subscriptions(db, subscriptions, reason, now)
            db.executemany("UPDATE deliveries SET status='dropped', dead_letter_reason=? WHERE subscription=? AND status='deadlettered'",
                           [(reason, s) for s in subscriptions])
            db.executemany("UPDATE resources SET deleted_at=? WHERE id=?", [(now, i) for i in ids])
        self.commits.transact(tx)


def _depth(row: ResourceRow, by_id: dict[int, ResourceRow]) -> tuple[int, int]:
    depth, parent = 0, row.parent
    while parent is not None and parent in by_id and depth < 10:
        depth, parent = depth + 1, by_id[parent].parent
    return depth, row.id
