"""Dead-letter records in Azure's shape, and the blobs written for subscriptions that have a
dead-letter destination, named as Azure names them in the storage container:

    {topic}/{SUBSCRIPTION-NAME-UPPERCASE}/{yyyy}/{M}/{d}/{H}/{guid}.json

With a storage account (BROKER_STORAGE_CONNECTION_STRING) and a `blobContainerName`, that is a blob
in the container; otherwise, or when the storage service refuses or cannot be reached, a file of
the same name under {data_dir}/deadletter/ (the record is in the store either way: nothing is lost).
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from .storage import StorageAccount, StorageError

log = logging.getLogger("broker.deadletters")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record(event: dict[str, Any], delivery: dict[str, Any]) -> dict[str, Any]:
    """The event as delivered, plus the fields Azure adds to a dead-lettered event."""
    return {
        **event,
        "deadLetterReason": delivery["dead_letter_reason"],
        "deliveryAttempts": delivery["attempts"],
        "lastDeliveryOutcome": delivery["last_outcome"],
        "lastHttpStatusCode": delivery["last_status"] or 0,
        "publishTime": iso(delivery["created_at"]),
        "lastDeliveryAttemptTime": iso(delivery["last_attempt_at"]),
    }


def blob_name(topic: str, subscription: str, at: float) -> str:
    t = datetime.fromtimestamp(at, timezone.utc)
    # Azure's blob names use unpadded month/day/hour.
    return f"{topic}/{subscription.upper()}/{t.year}/{t.month}/{t.day}/{t.hour}/{uuid.uuid4()}.json"


class BlobWriter:
    """Writes dead-letter blobs; runs on the caller's thread (the dispatcher's dead-letter thread)."""

    def __init__(self, data_dir: Path, storage: StorageAccount | None = None) -> None:
        self.root = Path(data_dir) / "deadletter"
        self.storage = storage

    def write(self, topic: str, subscription: str, at: float, records: list[dict[str, Any]], container: str | None = None) -> str:
        """Write one blob; return where it went (a URL, or a file's path)."""
        name = blob_name(topic, subscription, at)
        data = orjson.dumps(records)
        if container and self.storage is not None:
            try:
                return self.storage.write_blob(container, name, data)
            except StorageError as exc:
                log.warning("dead letter kept as a file: the storage account refused the blob",
                            extra={"container": container, "blob": name, "error": str(exc)})
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file
        return str(path)
