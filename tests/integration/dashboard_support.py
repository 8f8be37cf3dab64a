"""Helpers for the dashboard tests: a broker and a subscriber webhook served by waitress on
127.0.0.1 in background threads, a bounded server-sent-events reader and wait-for-condition.
"""

from __future__ import annotations

import http.client
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
from flask import Flask, Response, request
from waitress import create_server, wasyncore

from broker import create_app
from broker.config import Config
from tests.waiting import wait_until

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy and return it; fail after `timeout` seconds."""
    return wait_until(condition, timeout, what, interval)


@contextmanager
def serve(build: Callable[[int], Any], threads: int = 8) -> Iterator[tuple[str, Any]]:
    """Serve the WSGI app `build(port)` returns on 127.0.0.1 with an ephemeral port.

    The server binds before the app exists (a late-bound WSGI callable), so the app can be built
    knowing its real port -- the broker's config needs it for the URLs it hands out."""
    holder: dict[str, Any] = {}
    server = create_server(lambda environ, start: holder["app"](environ, start), host="127.0.0.1", port=0,
                           threads=threads, channel_timeout=30)
    port = server.effective_port
    holder["app"] = build(port)
    thread = threading.Thread(target=server.run, name=f"waitress-{port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", holder["app"]
    finally:
        server.task_dispatcher.shutdown(timeout=5)
        # Close every socket (listener, keep-alive connections) from the server's own loop thread,
        # which then finds its map empty and returns; closing them from here would race its select().
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            # The trigger is already closed, so the loop is past select(): close the rest from here.
            wasyncore.close_all(server._map)
        thread.join(5)
        assert not thread.is_alive(), "waitress did not stop"


# -- the broker ------------------------------------------------------------------------------------


@dataclass
class Broker:
    url: str
    app: Any

    @property
    def engine(self):
        return self.app.extensions["broker"]

    def put_subscription(self, topic: str, name: str, endpoint: str, **properties) -> requests.Response:
        body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": endpoint}}, **properties}}
        return requests.put(f"{self.url}/topics/{topic}/eventSubscriptions/{name}", json=body, timeout=15)

    def publish(self, topic: str, *events: dict) -> requests.Response:
        resp = requests.post(f"{self.url}/topics/{topic}/api/events", json=list(events), timeout=10)
        assert resp.status_code == 200, resp.text
        return resp

    def get(self, path: str, **params) -> Any:
        resp = requests.get(f"{self.url}{path}", params=params, timeout=10)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text}"
        return resp.json()


@contextmanager
def running_broker(data_dir, before_start: Callable[[Any], None] | None = None, **overrides) -> Iterator[Broker]:
    """A started broker with Azure's retry schedule compressed a thousandfold."""
    settings = {"time_scale": 0.001, **overrides}

    def build(port: int):
        app = create_app(Config.from_env({}, data_dir=data_dir, port=port, **settings))
        if before_start:
            before_start(app)
        return app

    with serve(build) as (url, app):
        try:
            yield Broker(url, app)
        finally:
            app.extensions["broker"].stop()  # also ends open dashboard streams within a poll interval


def eg_event(event_id: str, event_type: str = "Contoso.Orders.OrderPlaced", subject: str = "orders/1", data: Any = None) -> dict:
    return {
        "id": event_id, "eventType": event_type, "subject": subject, "eventTime": "2025-01-01T10:00:00Z",
        "data": data if data is not None else {"orderId": event_id}, "dataVersion": "1.0",
    }


# -- a subscriber ----------------------------------------------------------------------------------


@dataclass
class Webhook:
    """A subscriber that answers the validation handshakes and then `status` to every delivery."""

    url: str = ""
    status: int = 200
    validation_status: int = 200
    received: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"{self.url}/events"

    def deliveries(self) -> list[dict]:
        with self.lock:
            return list(self.received)

    def app(self) -> Flask:
        app = Flask("webhook")

        @app.route("/events", methods=["OPTIONS"])
        def abuse_protection():  # the CloudEvents handshake
            resp = Response(status=self.validation_status)
            resp.headers["WebHook-Allowed-Origin"] = request.headers.get("WebHook-Request-Origin", "*")
            return resp

        @app.post("/events")
        def events():
            body = orjson.loads(request.get_data())
            if isinstance(body, list) and body and body[0].get("eventType") == VALIDATION_EVENT:
                if self.validation_status != 200:
                    return Response(status=self.validation_status)
                return {"validationResponse": body[0]["data"]["validationCode"]}
            with self.lock:
                status = self.status
                self.received.append({"headers": dict(request.headers), "body": body, "answered": status})
            return Response(status=status)

        return app


@contextmanager
def running_webhook() -> Iterator[Webhook]:
    hook = Webhook()
    with serve(lambda _port: hook.app(), threads=4) as (url, _app):
        hook.url = url
        yield hook


# -- reading the stream ------------------------------------------------------------------------------


class EventStream:
    """A reader of a text/event-stream response. A daemon thread parses frames into a queue, so
    every wait in a test is bounded by a `queue.get` timeout (a socket read that times out would
    leave the buffered reader in an undefined state); closing the socket ends the thread."""

    def __init__(self, base_url: str, path: str = "/dashboard/stream", connect_timeout: float = 5.0) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=connect_timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.sock = self.conn.sock  # getresponse() may drop the connection's reference to it
        self.response = self.conn.getresponse()
        self.sock.settimeout(None)  # the reader thread blocks; close() unblocks it
        self.frames: list[dict] = []  # {"event": ..., "data": ...} or {"comment": ...}
        self.ended = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, name="sse-reader", daemon=True)
        if self.response.status == 200:
            self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while True:
                raw = self.response.readline()
                if raw == b"":
                    return
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self._queue.put({"comment": line[1:].strip()})
                elif line == "":
                    if fields:
                        data = orjson.loads(fields["data"]) if "data" in fields else None
                        self._queue.put({"event": fields.get("event", "message"), "data": data})
                        fields = {}
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except (OSError, ValueError, http.client.HTTPException):
            return  # the connection was shut down under the read: the stream is over
        finally:
            self.ended.set()
            self._queue.put(None)

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0, what: str = "frame") -> dict:
        """The first frame (seen before or arriving within `timeout`) that satisfies `predicate`."""
        for frame in self.frames:
            if predicate(frame):
                return frame
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if frame is None:
                self._queue.put(None)  # keep reporting the end to later waits
                break
            self.frames.append(frame)
            if predicate(frame):
                return frame
        raise AssertionError(f"no {what} on the stream within {timeout}s (ended={self.ended.is_set()}); last frames: {self.frames[-8:]}")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread with EOF
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(5)
        self.response.close()
        self.conn.close()
