"""Broker configuration: every setting comes from an environment variable with a default.

The README's configuration table mirrors `ENV` below; keep the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

# Environment variable -> (Config field, default, one-line description).
ENV: dict[str, tuple[str, str, str]] = {
    "BROKER_HOST": ("host", "127.0.0.1", "Interface the HTTP listener binds to (the images set 0.0.0.0: inside a container loopback is out of the host's reach)."),
    "BROKER_PORT": ("port", "5000", "HTTP port (publish API, management API, dashboard, metrics)."),
    "BROKER_DATA_DIR": ("data_dir", "./data/broker", "Directory for the SQLite store, dead-letter files and TLS certificate."),
    "BROKER_CONFIG": ("config_file", "", "Optional JSON file declaring topics and subscriptions, applied at start-up."),
    "BROKER_PUBLIC_URL": ("public_url", "", "Base URL subscribers use to reach the broker (validationUrl); default http://localhost:PORT."),
    "BROKER_DEFAULT_TOPIC": ("default_topic", "default", "Topic behind /api/events and the prototype's /publish and /subscribe."),
    "BROKER_AUTO_CREATE_TOPICS": ("auto_create_topics", "true", "Create an anonymous topic on first publish to /topics/{name}/api/events."),
    "BROKER_TIME_SCALE": ("time_scale", "1", "Compresses every wait (retry schedule, TTL): each is multiplied by it, so 0.001 runs Azure's schedule in seconds."),
    "BROKER_DELIVERY_TIMEOUT": ("delivery_timeout", "30", "Seconds a delivery waits for the subscriber's response."),
    "BROKER_DELIVERY_WORKERS": ("delivery_workers", "128", "Concurrent deliveries across all subscriptions."),
    "BROKER_SUBSCRIPTION_CONCURRENCY": ("subscription_concurrency", "16", "Concurrent deliveries to one healthy subscription (one while it fails), so a slow one cannot take every worker."),
    "BROKER_VALIDATION_TIMEOUT": ("validation_timeout", "10", "Seconds the subscription validation handshake waits."),
    "BROKER_RETENTION_HOURS": ("retention_hours", "24", "Delivered events older than this are pruned from the store."),
    "BROKER_SYNC": ("sync", "normal", "SQLite synchronous level: normal (survives process crash) or full (also power loss)."),
    "BROKER_THREADS": ("threads", "8", "waitress worker threads."),
    "BROKER_CPU": ("cpu", "auto", "The CPU the broker's threads run on: auto (one of those it may use), all (the OS moves them), or a CPU number."),
    "BROKER_HTTPS_PORT": ("https_port", "", "Optional TLS port served next to plain HTTP (e.g. 5443)."),
    "BROKER_TLS_CERT": ("tls_cert", "", "PEM certificate for HTTPS; a self-signed one is generated into the data dir if unset."),
    "BROKER_TLS_KEY": ("tls_key", "", "PEM private key for HTTPS."),
    "BROKER_AZURE_SUBSCRIPTION_ID": ("azure_subscription_id", "00000000-0000-0000-0000-000000000000", "Subscription id in the ARM topic path Azure puts in `topic`."),
    "BROKER_RESOURCE_GROUP": ("resource_group", "eventgrid-emulator", "Resource group in the ARM topic path."),
    "BROKER_ALLOWED_HOSTS": ("allowed_hosts", "", "More host names the broker answers to, comma-separated (`*`: any); loopback names, IP addresses and its own names always work (docs/security.md)."),
    "BROKER_MANAGEMENT_KEY": ("management_key", "", "When set, the management API and the dashboard need it (`Authorization: Bearer <key>`, or open /?key=<key>); publishing keeps its own keys."),
    "BROKER_STORAGE_CONNECTION_STRING": ("storage_connection_string", "", "Azure Storage account for StorageQueue destinations and StorageBlob dead letters (`UseDevelopmentStorage=true`: Azurite on 127.0.0.1); without it dead letters are files under the data dir."),
    "LOG_LEVEL": ("log_level", "INFO", "Log level of the JSON logs (DEBUG, INFO, WARNING, ...)."),
}


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5000
    data_dir: Path = Path("./data/broker")
    config_file: Path | None = None
    public_url: str = ""
    default_topic: str = "default"
    auto_create_topics: bool = True
    time_scale: float = 1.0
    delivery_timeout: float = 30.0
    delivery_workers: int = 128
    subscription_concurrency: int = 16
    validation_timeout: float = 10.0
    retention_hours: float = 24.0
    sync: str = "normal"
    threads: int = 8
    cpu: str = "auto"
    https_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    azure_subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "eventgrid-emulator"
    allowed_hosts: str = ""
    management_key: str = ""
    storage_connection_string: str = ""
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> Config:
        env = os.environ if env is None else env
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for var, (name, default, _doc) in ENV.items():
            raw = env.get(var, default).strip()
            values[name] = _convert(types[name], raw, var)
        values.update(overrides)
        config = cls(**values)
        if config.time_scale <= 0:
            raise ValueError("BROKER_TIME_SCALE must be > 0")
        if config.sync not in ("normal", "full"):
            raise ValueError("BROKER_SYNC must be 'normal' or 'full'")
        if config.cpu not in ("auto", "all") and not config.cpu.isdigit():
            raise ValueError("BROKER_CPU must be 'auto', 'all' or a CPU number")
        return config

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.port}").rstrip("/")


def _convert(kind: str, raw: str, var: str):
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes", "on")
        if kind == "Path":
            return Path(raw)
        if kind in ("Path | None", "int | None"):
            if not raw:
                return None
            return Path(raw) if kind.startswith("Path") else int(raw)
        return raw
    except ValueError:
        raise ValueError(f"{var}={raw!r} is not a valid {kind}") from None
