"""Real servers for the integration tier, all on 127.0.0.1.

- `ServiceProcess`: `python -m broker | order_processor | email_service` as a child process on a free
  port, in a clean environment, in its own session so that teardown kills the whole process tree;
  its output goes to a log file whose tail is shown when a test fails.
- `Webhook`: a recording HTTP subscriber in a thread that answers each delivery per a script
  (fail N times, always 400, hang...), for retry and dead-letter tests.
- `SmtpSink`: a real SMTP server (aiosmtpd) in a thread that keeps every message in memory.
- `Broker`: the HTTP calls the tests make to a broker, plus read-only queries on its SQLite store.

Every wait in here has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
HTTP_TIMEOUT = 10.0  # one test request; the broker answers in milliseconds unless something is wrong


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it), for a server started just after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeldPort:
    """A port bound but not listening: connecting to it is refused (a server that is down), and no
    other process can take it before our server starts there (`release()` just before binding)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# -- child processes --------------------------------------------------------------------------------


def clean_env(**values: str | float | int) -> dict[str, str]:
    """Only what a service needs: inherited BROKER_*/SMTP_* variables must not leak into a test."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    env.update({k: str(v) for k, v in values.items()})
    return env


@dataclass
class ServiceProcess:
    name: str
    module: str
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
        with open(self.log_path, "ab") as log:
            log.write(f"----- starting {self.name} on port {self.port}\n".encode())
            log.flush()
            # A new session makes the child a process-group leader, so killpg reaches anything it spawns.
            self.proc = subprocess.Popen(
                [str(python), "-m", self.module], cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(self._healthy, timeout, f"{self.name} to answer GET /healthz\n{self.tail()}")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with code {self.proc.returncode}:\n{self.tail()}")
        try:
            return requests.get(self.url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL the whole process tree: no shutdown handler runs, as in a crash."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL whatever is left after `grace` seconds."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        self._signal(signal.SIGKILL)  # also reaches children that outlived the leader
        self.proc.wait(10)

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"({self.name}: no log at {self.log_path})"
        return "\n".join(text[-lines:])


class Processes:
    """Starts services for one test (or module) and ends every one of them on `close()`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[ServiceProcess] = []

    def _spawn(self, name: str, module: str, port: int, env: dict[str, str], start: bool) -> ServiceProcess:
        service = ServiceProcess(name, module, port, env, self.workdir / f"{name}.log")
        self.started.append(service)
        return service.start() if start else service

    def broker(self, name: str = "broker", *, port: int | None = None, data_dir: Path | None = None,
               time_scale: float = 1.0, start: bool = True, **env: Any) -> ServiceProcess:
        port = port or free_port()
        data_dir = data_dir or self.workdir / name
        values = {"BROKER_HOST": "127.0.0.1", "BROKER_PORT": port, "BROKER_DATA_DIR": data_dir,
                  "BROKER_TIME_SCALE": time_scale, **env}
        return self._spawn(name, "broker", port, clean_env(**values), start)

    def order_processor(self, name: str = "order_processor", *, port: int | None = None, start: bool = True) -> ServiceProcess:
        port = port or free_port()
        env = clean_env(ORDER_PROCESSOR_HOST="127.0.0.1", ORDER_PROCESSOR_PORT=port,
                        ORDER_PROCESSOR_DATA_DIR=self.workdir / name)
        return self._spawn(name, "order_processor", port, env, start)

    def email_service(self, smtp_port: int, name: str = "email_service", *, port: int | None = None,
                      start: bool = True, smtp_timeout: float = 2.0) -> ServiceProcess:
        port = port or free_port()
        env = clean_env(EMAIL_SERVICE_HOST="127.0.0.1", EMAIL_SERVICE_PORT=port,
                        EMAIL_SERVICE_DATA_DIR=self.workdir / name, SMTP_HOST="127.0.0.1",
                        SMTP_PORT=smtp_port, SMTP_TIMEOUT=smtp_timeout)
        return self._spawn(name, "email_service", port, env, start)

    def tails(self) -> list[tuple[str, str]]:
        return [(s.name, s.tail()) for s in self.started]

    def close(self) -> None:
        for service in self.started:
            try:
                service.stop(grace=3.0)
            except Exception as exc:  # keep ending the others
                print(f"could not stop {service.name}: {exc}", file=sys.stderr)


# -- a scriptable webhook -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    hang: float = 0.0  # seconds to hold the request before answering (released early on stop)


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request body had been read
    wall: float  # time.time() at the same moment, to compare with the broker's timestamps
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the webhook answered; 0 while a hanging request is unanswered (or if never)

    @property
    def events(self) -> list[dict]:
        payload = json.loads(self.body)
        return payload if isinstance(payload, list) else [payload]

    @property
    def event_ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    @property
    def delivery_count(self) -> int:
        return int(self.headers["aeg-delivery-count"])


class _Server(ThreadingHTTPServer):
    # socketserver's default accept queue is 5: a broker opening a connection per delivery (this
    # webhook closes each) overflows it while the test process is busy, and the dropped SYNs come
    # back only after TCP's retransmission delays (1 s, 3 s, 7 s...), which looks like lost events.
    request_queue_size = 128


Script = Callable[[Received, int], Reply]  # (request, how many requests for its first event id so far) -> reply


def always(status: int) -> Script:
    return lambda _request, _n: Reply(status)


def fail_first(times: int, status: int = 500) -> Script:
    """Answer `status` to the first `times` deliveries of each event, then 200."""
    return lambda _request, n: Reply(status if n <= times else 200)


def hang(seconds: float) -> Script:
    return lambda _request, _n: Reply(200, hang=seconds)


class Webhook:
    """A subscriber endpoint that records every request and answers per `script`.

    The Event Grid validation handshake is answered automatically (and not recorded as a delivery)
    unless `validate` is False. HTTP/1.0 replies close each connection, so a stopped webhook really
    refuses the broker's next request instead of serving it on a kept-alive socket.
    """

    def __init__(self, script: Script | None = None, validate: bool = True) -> None:
        self.script = script or always(200)
        self._held = HeldPort()  # refused until start(), and the same port after every restart
        self.port = self._held.port
        self.validate = validate
        self.requests: list[Received] = []
        self.handshakes: list[Received] = []
        self._per_event: Counter[str] = Counter()
        self._cond = threading.Condition()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> Webhook:
        self._release.clear()
        self._held.release()
        self._server = _Server(("127.0.0.1", self.port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"webhook-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._held.release()
        self._release.set()  # hanging replies return now
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)

    def respond(self, script: Script) -> None:
        with self._cond:
            self.script = script

    def release(self) -> None:
        """Drop every hanging request unanswered (a subscriber that died mid-request)."""
        self._release.set()

    # -- reading what arrived --

    def deliveries(self, status: int | None = None) -> list[Received]:
        with self._cond:
            return [r for r in self.requests if status is None or r.status == status]

    def ids(self, status: int | None = 200) -> list[str]:
        """Event ids in the order they arrived (repeats kept), by default only those answered 200."""
        return [i for r in self.deliveries(status) for i in r.event_ids]

    def for_event(self, event_id: str) -> list[Received]:
        return [r for r in self.deliveries() if event_id in r.event_ids]

    def wait_for(self, condition: Callable[[list[Received]], Any], timeout: float, what: str) -> Any:
        """Wait (on a condition variable, no polling) until `condition(requests)` is truthy."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = condition(list(self.requests))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; "
                                         f"the webhook got {len(self.requests)} requests")
                self._cond.wait(left)

    def wait_for_ids(self, ids: set[str] | list[str], timeout: float) -> None:
        wanted = set(ids)
        self.wait_for(lambda _r: wanted <= set(self.ids()), timeout, f"{len(wanted)} events answered 200")

    def quiet_for(self, seconds: float, count: int) -> bool:
        """True if no request beyond the first `count` arrives within `seconds` (a bounded negative check)."""
        try:
            self.wait_for(lambda r: len(r) > count, seconds, "an unexpected request")
        except AssertionError:
            return True
        return False

    # -- serving --

    def _handler_class(self):
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hook._answer(self, "POST", body)

            def do_OPTIONS(self):
                self.send_response(200)
                origin = self.headers.get("WebHook-Request-Origin")
                if origin:
                    self.send_header("WebHook-Allowed-Origin", origin)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):  # keep pytest's output for failures
                pass

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        now, wall = time.monotonic(), time.time()
        if self.validate and headers.get("aeg-event-type") == "SubscriptionValidation":
            code = json.loads(body)[0]["data"]["validationCode"]
            with self._cond:
                self.handshakes.append(Received(now, wall, method, handler.path, headers, body, 200))
            _send(handler, 200, json.dumps({"validationResponse": code}).encode())
            return
        arrived = Received(now, wall, method, handler.path, headers, body, 0)
        try:
            first_id = arrived.event_ids[0]
        except (ValueError, LookupError, TypeError):  # not a body of events: the script still answers
            first_id = ""
        with self._cond:
            self._per_event[first_id] += 1
            reply = self.script(arrived, self._per_event[first_id])
            # A hanging request stays recorded as unanswered (status 0) until it is answered.
            record = arrived if reply.hang else replace(arrived, status=reply.status)
            index = len(self.requests)
            self.requests.append(record)
            self._cond.notify_all()
        if reply.hang and self._release.wait(reply.hang):
            return  # released (stop() or release()): drop the connection without an answer
        try:
            _send(handler, reply.status, reply.body)
        except OSError:  # the broker gave up on us (timeout or killed): nothing was answered
            return
        if reply.hang:
            with self._cond:
                self.requests[index] = replace(record, status=reply.status)
                self._cond.notify_all()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# -- an SMTP server ----------------------------------------------------------------------------------------


class SmtpSink:
    """aiosmtpd on 127.0.0.1:`port`, keeping every accepted message; can stop and start again on the
    same port (a mail catcher outage)."""

    def __init__(self) -> None:
        self._held = HeldPort()  # refused until start()
        self.port = self._held.port
        self.messages: list[EmailMessage] = []
        self._cond = threading.Condition()
        self._controller = None

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._held.release()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._held.release()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def handle_DATA(self, _server, _session, envelope) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[EmailMessage]:
        with self._cond:
            return list(self.messages)

    def wait_for_count(self, count: int, timeout: float) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {count} mails; got {len(self.messages)}")
                self._cond.wait(left)
            return list(self.messages)


# -- the broker's API and store --------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event(event_type: str = "NewOrder", data: Any = None, *, event_id: str | None = None,
          subject: str = "orders", data_version: str = "1.0") -> dict:
    """One EventGridSchema event as a publisher sends it."""
    return {"id": event_id or str(uuid.uuid4()), "eventType": event_type, "subject": subject,
            "eventTime": now_iso(), "data": {"n": 1} if data is None else data, "dataVersion": data_version}


def order(order_id: str, *, name: str = "Ada Lovelace", email: str = "ada@example.com") -> dict:
    """A NewOrder payload both example subscribers accept: 2 x 4.50 + 1 x 24.00 = 33.00 EUR."""
    return {
        "orderId": order_id, "customerName": name, "customerEmail": email,
        "items": [{"sku": "BK-1001", "name": "Paperback notebook A5", "quantity": 2, "unitPrice": 4.5},
                  {"sku": "PN-2001", "name": "Fountain pen", "quantity": 1, "unitPrice": 24.0}],
        "total": 33.0, "currency": "EUR", "createdAt": "2026-01-01T12:00:00Z",
    }


def subscription(endpoint: str, *, dead_letter: bool = False, skip_validation: bool = False,
                 max_attempts: int | None = None, ttl_minutes: int | None = None,
                 event_types: list[str] | None = None, **destination: Any) -> dict:
    """An Azure ARM-shaped event subscription body for a WebHook."""
    props: dict[str, Any] = {
        "destination": {"endpointType": "WebHook",
                        "properties": {"endpointUrl": endpoint, "skipValidation": skip_validation, **destination}},
        "eventDeliverySchema": "EventGridSchema",
    }
    retry = {}
    if max_attempts is not None:
        retry["maxDeliveryAttempts"] = max_attempts
    if ttl_minutes is not None:
        retry["eventTimeToLiveInMinutes"] = ttl_minutes
    if retry:
        props["retryPolicy"] = retry
    if event_types is not None:
        props["filter"] = {"includedEventTypes": event_types}
    if dead_letter:
        props["deadLetterDestination"] = {"endpointType": "StorageBlob",
                                          "properties": {"blobContainerName": "deadletter"}}
    return {"properties": props}


@dataclass(frozen=True)
class Broker:
    """Test-side view of one broker: its URL and data directory."""

    url: str
    data_dir: Path

    @classmethod
    def of(cls, process: ServiceProcess) -> Broker:
        return cls(process.url, Path(process.env["BROKER_DATA_DIR"]))

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        # A connection per call: nothing stays open to a broker that a test kills.
        return requests.request(method, self.url + path, **kwargs)

    def publish(self, events: list[dict], topic: str | None = None) -> requests.Response:
        path = f"/topics/{topic}/api/events" if topic else "/api/events"
        return self.request("POST", path, json=events)

    def publish_ok(self, events: list[dict], topic: str | None = None) -> list[str]:
        resp = self.publish(events, topic)
        assert resp.status_code == 200, resp.text
        return [e["id"] for e in events]

    def subscribe(self, topic: str, name: str, body: dict) -> dict:
        resp = self.request("PUT", f"/topics/{topic}/eventSubscriptions/{name}", json=body)
        assert resp.status_code in (200, 201), resp.text
        assert resp.json()["properties"]["provisioningState"] == "Succeeded", resp.text
        return resp.json()

    def dead_letters(self, topic: str, name: str, **query: Any) -> dict:
        resp = self.request("GET", f"/topics/{topic}/eventSubscriptions/{name}/deadLetters", params=query)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_dead_letters(self, topic: str, name: str, count: int, timeout: float = 15.0) -> dict:
        return wait_until(lambda: (page := self.dead_letters(topic, name, top=1000))["count"] >= count and page,
                          timeout, f"{count} dead letters on {topic}/{name}")

    # -- the store, read-only --

    def query(self, sql: str, args: tuple = ()) -> list[dict]:
        """Read the broker's SQLite store directly (WAL lets us read while it writes; ro: we never write)."""
        db = sqlite3.connect(f"file:{self.data_dir / 'broker.db'}?mode=ro", uri=True, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, args)]
        finally:
            db.close()

    def statuses(self, topic: str, name: str) -> Counter[str]:
        rows = self.query("SELECT status, COUNT(*) AS n FROM named_deliveries WHERE topic_name=? AND subscription_name=? GROUP BY status",
                          (topic, name))
        return Counter({r["status"]: r["n"] for r in rows})

    def wait_settled(self, topic: str, name: str, total: int, timeout: float = 20.0) -> Counter[str]:
        """Wait until all `total` deliveries of a subscription reached a final state."""
        def settled():
            counts = self.statuses(topic, name)
            final = counts["delivered"] + counts["deadlettered"] + counts["dropped"]
            return counts if final >= total and not counts["pending"] and not counts["inflight"] else None
        return wait_until(settled, timeout, f"{total} deliveries of {topic}/{name} to settle")
