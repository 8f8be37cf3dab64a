"""The emulator in a user's own tests: a broker in a child process, helpers that create topics and
subscriptions, and a recording webhook to assert on what was delivered.

Only the standard library is imported here (the pytest plugin loads this module in every test run
of whoever installed the package); the broker runs as `python -m broker` in its own process.

Threads: the webhook's server runs on a thread of its own (`RecordingWebhook.start`) and hands
each request to a short-lived thread of socketserver's; `_cond` guards what it recorded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
START_TIMEOUT = 30.0
MAX_RECORDED = 10_000  # requests a webhook keeps (a test that floods it keeps the newest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Delivery:
    """One request the webhook received."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        payload = json.loads(self.body)
        return payload if isinstance(payload, list) else [payload]


class RecordingWebhook:
    """An HTTP endpoint on 127.0.0.1 that answers both of Event Grid's validation handshakes and
    records every delivery."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the webhook first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def start(self) -> RecordingWebhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_OPTIONS(self):  # the CloudEvents webhook handshake
                self.send_response(200)
                self.send_header("WebHook-Allowed-Origin", self.headers.get("WebHook-Request-Origin", "*"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    code = json.loads(body)[0]["data"]["validationCode"]
                    answer = json.dumps({"validationResponse": code}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                with hook._cond:
                    hook.deliveries.append(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    del hook.deliveries[:-MAX_RECORDED]
                    hook._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                         name="eventgrid-webhook").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [e for d in self.deliveries for e in d.events]

    def clear(self) -> None:
        with self._cond:
            self.deliveries.clear()

    def wait_for(self, count: int = 1, timeout: float = 10.0, **match: Any) -> list[dict[str, Any]]:
        """The delivered events once at least `count` of them match `match` (field=value, e.g.
        eventType="NewOrder"), waiting at most `timeout` seconds (AssertionError after that)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for d in self.deliveries for e in d.events if all(e.get(k) == v for k, v in match.items())]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} of {count} events matching {match} arrived in {timeout} s")
                self._cond.wait(left)


@dataclass
class Emulator:
    """A broker in a child process (`python -m broker`) on a free port, with its own data dir."""

    url: str
    data_dir: Path
    process: subprocess.Popen
    webhook: RecordingWebhook = field(default_factory=RecordingWebhook)

    @classmethod
    def start(cls, data_dir: Path | None = None, time_scale: float = 1.0, **env: str) -> Emulator:
        port = free_port()
        data_dir = Path(data_dir or tempfile.mkdtemp(prefix="eventgrid-emulator-"))
        environ = {**os.environ, "BROKER_HOST": "127.0.0.1", "BROKER_PORT": str(port), "BROKER_DATA_DIR": str(data_dir),
                   "BROKER_TIME_SCALE": str(time_scale), "BROKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
                   "LOG_LEVEL": env.pop("LOG_LEVEL", "WARNING"), **env}
        log = open(data_dir / "emulator.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "broker"], env=environ, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        emulator = cls(f"http://127.0.0.1:{port}", data_dir, process)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the emulator exited ({process.returncode}); see {data_dir / 'emulator.log'}")
            try:
                if emulator.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                emulator.stop()
                raise RuntimeError(f"the emulator was not ready in {START_TIMEOUT} s; see {data_dir / 'emulator.log'}")
            time.sleep(0.05)
        emulator.webhook.start()
        return emulator

    def stop(self) -> None:
        self.webhook.stop()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    # -- HTTP --------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise AssertionError(f"{method} {path} answered {status}: {answer}")
        return answer

    # -- resources ---------------------------------------------------------------------------

    def create_topic(self, name: str, *, keys: bool | list[str] = False, input_schema: str | None = None,
                     mapping: dict | None = None) -> dict[str, Any]:
        """Create (or update) a topic; `keys=True` generates two. Returns its ARM body plus
        `endpoint`, `key1` and `key2`."""
        props: dict[str, Any] = {}
        if input_schema:
            props["inputSchema"] = input_schema
        if mapping:
            props["inputSchemaMapping"] = mapping
        if keys is True:
            props["generateKeys"] = True
        elif keys:
            props["keys"] = list(keys)
        topic = self._ok("PUT", f"/topics/{name}", {"properties": props})
        found = self._ok("POST", f"/topics/{name}/listKeys")
        return {**topic, "endpoint": topic["properties"]["endpoint"], **found}

    def subscribe(self, topic: str, name: str, endpoint: str | None = None, **properties: Any) -> dict[str, Any]:
        """Subscribe `endpoint` (by default the recording webhook) to a topic; `properties` are the
        subscription's ARM properties (filter, eventDeliverySchema, retryPolicy, ...)."""
        destination = {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint or self.webhook.url}}
        return self._ok("PUT", f"/topics/{topic}/eventSubscriptions/{name}", {"properties": {"destination": destination, **properties}})

    def publish(self, topic: str, events: list[dict[str, Any]], key: str | None = None) -> None:
        status, answer = self.request("POST", f"/topics/{topic}/api/events", events, {"aeg-sas-key": key} if key else None)
        if status != 200:
            raise AssertionError(f"publishing to {topic} answered {status}: {answer}")
