"""An Azure Storage account (Azurite, or a real one) reached by its connection string
(BROKER_STORAGE_CONNECTION_STRING): where `StorageQueue` subscriptions deliver, and where dead
letters of a `StorageBlob` dead-letter destination go.

Event Grid puts each event into the queue as one message: the event alone (never an array), in the
subscription's delivery schema, Base64-encoded (what `BinaryBase64DecodePolicy` reads back). A
Storage error becomes the HTTP status it carries, and an unreachable service no status at all, so
the dispatcher applies the same retry and dead-letter rules as to a webhook's answer. The SDK's
own retries are off: Event Grid's schedule is the only one.

Threads: the storage SDKs block, so `enqueue` runs each send on this account's own pool of
SEND_THREADS threads, awaited by the delivery loop (at most that many sends at once; the rest wait
their turn, each already counted against the dispatcher's worker bound). `write_blob` runs on the
caller's thread: the dispatcher's dead-letter thread. SDK clients are safe to share between threads.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .webhook import Response

log = logging.getLogger("broker.storage")

SEND_THREADS = 4
MAX_CLIENTS_KEPT = 256  # queue and container clients, by name
DEVELOPMENT = "UseDevelopmentStorage=true"


class StorageError(Exception):
    """A blob could not be written (the service said no, or could not be reached)."""


class StorageAccount:
    def __init__(self, connection_string: str, timeout: float) -> None:
        # Imported here: only a broker with a storage account pays for azure-core at start-up.
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        options = {"retry_total": 0, "connection_timeout": timeout, "read_timeout": timeout}
        self.queues = QueueServiceClient.from_connection_string(connection_string, **options)
        self.blobs = BlobServiceClient.from_connection_string(connection_string, **options)
        self._pool = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="storage-send")
        self._lock = threading.Lock()  # guards the two client caches; held for dict operations only
        self._queue_clients: dict[str, object] = {}
        self._container_clients: dict[str, object] = {}

    @classmethod
    def from_config(cls, config) -> StorageAccount | None:
        if not config.storage_connection_string:
            return None
        return cls(config.storage_connection_string, config.delivery_timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)  # a send in flight ends at its timeout
        self.queues.close()
        self.blobs.close()

    # -- queues ------------------------------------------------------------------------------------

    async def enqueue(self, queue: str, body: bytes, ttl_seconds: int | None) -> Response:
        """Put one event into `queue`; never raises."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self._enqueue, queue, body, ttl_seconds))

    def _enqueue(self, queue: str, body: bytes, ttl_seconds: int | None) -> Response:
        from azure.core.exceptions import (
            AzureError,
            HttpResponseError,
            ServiceRequestTimeoutError,
            ServiceResponseTimeoutError,
        )

        started = time.perf_counter()
        try:
            client = self._client(self._queue_clients, queue, self.queues.get_queue_client)
            client.send_message(base64.b64encode(body).decode("ascii"), time_to_live=ttl_seconds)
        except HttpResponseError as exc:
            return Response(exc.status_code, _ms(started), error=_reason(exc))
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as exc:
            return Response(None, _ms(started), error=f"storage timed out: {_first_line(exc)}", timed_out=True)
        except AzureError as exc:
            return Response(None, _ms(started), error=f"storage unreachable: {_first_line(exc)}")
        return Response(201, _ms(started))

    # -- blobs -------------------------------------------------------------------------------------

    def write_blob(self, container: str, name: str, data: bytes) -> str:
        """Write one blob; return its URL. Raises StorageError."""
        from azure.core.exceptions import AzureError, HttpResponseError

        try:
            client = self._client(self._container_clients, container, self.blobs.get_container_client)
            blob = client.upload_blob(name, data, overwrite=False, content_type="application/json")
        except HttpResponseError as exc:
            raise StorageError(_reason(exc)) from None
        except AzureError as exc:
            raise StorageError(f"storage unreachable: {_first_line(exc)}") from None
        return blob.url

    def _client(self, kept: dict, name: str, make):
        with self._lock:
            client = kept.get(name)
        if client is None:
            client = make(name)  # builds an object, no I/O; outside the lock all the same
            with self._lock:
                if len(kept) >= MAX_CLIENTS_KEPT:
                    kept.clear()
                client = kept.setdefault(name, client)
        return client


def _reason(exc) -> str:
    code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or "Error"
    return f"{code}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
