"""Dead-letter records in Azure's shape, and the blob files written for subscriptions that have a
dead-letter destination, laid out as Azure lays out the blobs in the storage container:

    {data_dir}/deadletter/{topic}/{SUBSCRIPTION-NAME-UPPERCASE}/{yyyy}/{M}/{d}/{H}/{guid}.json
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

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


class BlobWriter:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "deadletter"

    def path_for(self, topic: str, subscription: str, at: float) -> Path:
        t = datetime.fromtimestamp(at, timezone.utc)
        # Azure's blob names use unpadded month/day/hour.
        return self.root / topic / subscription.upper() / str(t.year) / str(t.month) / str(t.day) / str(t.hour) / f"{uuid.uuid4()}.json"

    def write(self, topic: str, subscription: str, at: float, records: list[dict[str, Any]]) -> Path:
        path = self.path_for(topic, subscription, at)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(records))
        os.replace(tmp, path)  # readers never see half a file
        return path
