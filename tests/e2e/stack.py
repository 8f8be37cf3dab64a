"""The compose stack under test: its URLs, its compose commands, and waiting on it with deadlines."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests
from testcontainers.compose import DockerCompose

from tests import waiting
from tests.mailbox import Mailbox

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Compose service -> (host port variable in docker-compose.yml, container port).
PUBLISHED = {
    "broker": ("BROKER_HOST_PORT", 5000),
    "order_processor": ("ORDER_PROCESSOR_HOST_PORT", 5001),
    "email_service": ("EMAIL_SERVICE_HOST_PORT", 5002),
    "mailhog": ("MAILHOG_HOST_PORT", 8025),
}


def docker_unavailable_reason() -> str | None:
    """Why the e2e tier cannot run here, or None when a Docker engine and compose answer."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
        if info.returncode != 0:
            return f"no Docker engine is reachable: {info.stderr.strip()[:300]}"
        compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        return f"docker did not answer within {exc.timeout:.0f} s"
    if compose.returncode != 0:
        return "the docker compose v2 plugin is missing"
    return None


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out on loopback, all held at once so they are distinct.

    The stack publishes on these instead of 5000-5002/8025, so a developer's `make up` or
    `make run` can keep running while the tests do.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5,
               diagnostics: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy; a service restarting answers nothing for a moment."""
    return waiting.wait_until(check, timeout, what, interval, tolerate=(requests.RequestException,), diagnostics=diagnostics)


@dataclass
class Stack:
    compose: DockerCompose
    ports: dict[str, int]
    http: requests.Session = field(default_factory=requests.Session)

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    @property
    def mailbox(self) -> Mailbox:
        return Mailbox(self.url("mailhog"), session=self.http)

    def get_json(self, service: str, path: str) -> tuple[int, dict]:
        response = self.http.get(self.url(service, path), timeout=10)
        return response.status_code, (response.json() if response.content else {})

    def compose_run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`docker compose <args>` for this stack's project (the environment names the project)."""
        return subprocess.run(
            [*self.compose.compose_command_property, *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
        )

    def publish(self, *args: str) -> str:
        """Run the real publisher (Azure SDK) in its container against the broker service."""
        result = self.compose_run("run", "--rm", "--no-deps", "publisher", *args)
        assert result.returncode == 0, f"publisher failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def down_and_up(self) -> None:
        """`docker compose down` (volumes kept, containers and network gone), then up again."""
        result = self.compose_run("down")
        assert result.returncode == 0, result.stderr
        self.compose.start()
        # Pooled keep-alive connections went to the old containers; a reused one would fail the
        # next request with "connection aborted" instead of reaching the new ones.
        self.http.close()

    def logs(self, tail: int = 40) -> str:
        result = self.compose_run("logs", "--no-color", "--tail", str(tail), timeout=60)
        return result.stdout + result.stderr
