"""Structured JSON logs: one object per line on stderr, level from the environment.

Fields passed with ``logger.info("msg", extra={"event_id": ...})`` become top-level keys, so a line
per accepted batch or delivery attempt can be grepped or shipped without parsing prose.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str | None = None) -> None:
    """Route the root logger to stderr as JSON; level from LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
    # waitress logs its INFO chatter and, under load, "Task queue depth" at WARNING for every queued
    # request: expected with more clients than threads, and costly at thousands of lines a second.
    logging.getLogger("waitress").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
