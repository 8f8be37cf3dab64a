"""The one polling loop of the test suite: wait for a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
    diagnostics: Callable[[], str] | None = None,
) -> Any:
    """Poll `condition` until it returns something truthy (returned) or `timeout` seconds pass
    (AssertionError naming `what`). Exceptions in `tolerate` count as "not yet" -- e.g. a service
    that is restarting answers nothing for a moment."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its wait() is the bounded pause between two polls
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
        except tolerate as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            logs = f"\n{diagnostics()}" if diagnostics else ""
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}{detail}{logs}")
        pause.wait(interval)
