"""The email service's settings, read from the environment.

| variable                   | default                | meaning                                             |
|----------------------------|------------------------|-----------------------------------------------------|
| `EMAIL_SERVICE_HOST`       | `0.0.0.0`              | interface to listen on                              |
| `EMAIL_SERVICE_PORT`       | `5002`                 | port to listen on                                   |
| `EMAIL_SERVICE_DATA_DIR`   | `./data/email_service` | where `sent_mails.sqlite3` and `processed_events.sqlite3` live |
| `SMTP_HOST`                | `localhost`            | SMTP server (the mail catcher in compose)           |
| `SMTP_PORT`                | `1025`                 | its port (plain SMTP, no TLS, no auth)              |
| `SMTP_FROM`                | `orders@shop.example`  | From address; its domain also names the Message-IDs |
| `SMTP_TIMEOUT`             | `10`                   | seconds for connecting and each SMTP command        |
| `LOG_LEVEL`                | `INFO`                 | DEBUG, INFO, WARNING, ERROR                         |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from email_service.mailer import Mailer
from servicekit.settings import env_float, env_int, env_text


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data/email_service")
    host: str = "0.0.0.0"
    port: int = 5002
    smtp_host: str = "localhost"
    smtp_port: int = 1025
    smtp_from: str = "orders@shop.example"
    smtp_timeout: float = 10.0
    event_types: tuple[str, ...] = ("NewOrder",)
    # None means SMTP with the settings above; tests put a fake here so no socket is opened.
    mailer: Mailer | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        environ = os.environ if environ is None else environ
        return cls(
            data_dir=Path(env_text(environ, "EMAIL_SERVICE_DATA_DIR", str(cls.data_dir))),
            host=env_text(environ, "EMAIL_SERVICE_HOST", cls.host),
            port=env_int(environ, "EMAIL_SERVICE_PORT", cls.port),
            smtp_host=env_text(environ, "SMTP_HOST", cls.smtp_host),
            smtp_port=env_int(environ, "SMTP_PORT", cls.smtp_port),
            smtp_from=env_text(environ, "SMTP_FROM", cls.smtp_from),
            smtp_timeout=env_float(environ, "SMTP_TIMEOUT", cls.smtp_timeout),
        )
