"""The order processor's settings, read from the environment.

| variable                     | default                | meaning                                          |
|------------------------------|------------------------|--------------------------------------------------|
| `ORDER_PROCESSOR_HOST`       | `0.0.0.0`              | interface to listen on                           |
| `ORDER_PROCESSOR_PORT`       | `5001`                 | port to listen on                                |
| `ORDER_PROCESSOR_DATA_DIR`   | `./data/order_processor` | where `orders.sqlite3` and `processed_events.sqlite3` live |
| `LOG_LEVEL`                  | `INFO`                 | DEBUG, INFO, WARNING, ERROR                      |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servicekit.settings import env_int, env_text


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data/order_processor")
    host: str = "0.0.0.0"
    port: int = 5001
    # The types this subscriber acts on; anything else the broker sends is acknowledged and ignored.
    event_types: tuple[str, ...] = ("NewOrder",)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        environ = os.environ if environ is None else environ
        return cls(
            data_dir=Path(env_text(environ, "ORDER_PROCESSOR_DATA_DIR", str(cls.data_dir))),
            host=env_text(environ, "ORDER_PROCESSOR_HOST", cls.host),
            port=env_int(environ, "ORDER_PROCESSOR_PORT", cls.port),
        )
