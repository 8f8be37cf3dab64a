"""Sending events in batches through a publisher client, counting what the broker accepted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, TextIO

from azure.core.exceptions import AzureError, HttpResponseError, ServiceRequestError

log = logging.getLogger(__name__)


class EventSender(Protocol):
    """What `publish` needs of `azure.eventgrid.EventGridPublisherClient` (and what tests fake)."""

    def send(self, events: list[Any], **kwargs: Any) -> None: ...


@dataclass
class PublishResult:
    accepted: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The one line a run ends with, key=value so scripts and people can both read it."""
        return (
            f"summary: accepted={self.accepted} failed={self.failed}"
            f" seconds={self.seconds:.2f} events/s={self.events_per_second:.1f}"
        )


class Progress:
    """A line on stderr each time another tenth of the events has been sent (accepted or failed)."""

    def __init__(self, total: int, stream: TextIO, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.next_tenth = 1

    def update(self, result: PublishResult) -> None:
        done = result.accepted + result.failed
        if done * 10 < self.next_tenth * self.total:
            return
        # One line even when a big batch jumps several tenths at once.
        self.next_tenth = done * 10 // self.total + 1
        print(
            f"progress: {done}/{self.total} events ({done * 100 // self.total}%),"
            f" {result.failed} failed, {self.clock() - self.started:.1f} s",
            file=self.stream,
            flush=True,
        )


def _reason(error: AzureError) -> str:
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        return f"HTTP {error.status_code}: {error.message}"
    return f"{type(error).__name__}: {error.message}"


def publish(
    client: EventSender,
    events: Iterable[Any],
    *,
    total: int,
    batch_size: int,
    send_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PublishResult:
    """Send `total` `events` `batch_size` at a time; a batch counts as accepted only when the call returned.

    A batch the broker refused (an HTTP error after the SDK's own retries) is counted failed and the
    next batch is still tried; an endpoint that cannot be reached at all fails the rest unsent,
    rather than making every remaining batch wait out its retries too.
    """
    result = PublishResult()
    started = clock()
    remaining = iter(events)
    while batch := list(islice(remaining, batch_size)):
        try:
            client.send(batch, **(send_options or {}))
        except ServiceRequestError as error:
            unsent = total - result.accepted - result.failed
            result.failed += unsent
            result.errors.append(_reason(error))
            log.error("endpoint unreachable, giving up: %s", _reason(error), extra={"unsent": unsent})
            break
        except AzureError as error:
            result.failed += len(batch)
            result.errors.append(_reason(error))
            log.error("batch refused: %s", _reason(error), extra={"batch_size": len(batch)})
        else:
            result.accepted += len(batch)
        finally:
            result.seconds = clock() - started
        if progress is not None:
            progress.update(result)
    return result
