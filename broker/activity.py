"""The live activity feed: accepted events and delivery attempts, fanned out to dashboard streams.

Each listener gets a bounded queue; a listener that does not keep up loses its oldest items
rather than slowing the publish or delivery path. Items are bounded in bytes too: a string value
(an event's subject, an error text: up to a megabyte from a publisher) is cut to MAX_TEXT
characters, so a queue holds at most about queue_size x a few KB.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

MAX_TEXT = 512


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    if isinstance(value, list) and len(value) > 64:  # an event's subscriptions
        return [_short(v) for v in value[:64]]
    return value


class ActivityFeed:
    def __init__(self, queue_size: int = 1000) -> None:
        self._listeners: set[queue.Queue] = set()
        self._lock = threading.Lock()
        self._queue_size = queue_size

    def listen(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(self._queue_size)
        with self._lock:
            self._listeners.add(q)
        return q

    def unlisten(self, q: queue.Queue) -> None:
        with self._lock:
            self._listeners.discard(q)

    @property
    def has_listeners(self) -> bool:
        return bool(self._listeners)

    def publish(self, kind: str, payload: dict[str, Any]) -> None:
        if not self._listeners:
            return
        item = {"kind": kind, **{k: _short(v) for k, v in payload.items()}}
        with self._lock:
            listeners = list(self._listeners)
        for q in listeners:
            try:
                q.put_nowait(item)
            except queue.Full:
                try:
                    q.get_nowait()
                    q.put_nowait(item)
                except (queue.Empty, queue.Full):
                    pass
