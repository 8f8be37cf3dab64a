"""Live-process helpers for the SDK conformance tests.

* `start_broker` starts the real broker (`python -m broker`) through the integration tier's
  `processes.Processes` (free port, clean environment, /healthz with a deadline, process group
  killed at teardown) with a public URL, optionally HTTPS, and wraps the management calls.
* `RecordingSubscriber` is a webhook (waitress in a thread on 127.0.0.1:0) that records every
  request byte for byte and answers both validation handshakes Azure uses: the Event Grid
  SubscriptionValidationEvent (echo `data.validationCode`) and the CloudEvents OPTIONS
  abuse-protection request (answer `WebHook-Allowed-Origin`). Per path it can instead refuse,
  answer a wrong code, or answer 200 with no body (manual validation).
* `SentRequests` captures what an Azure SDK client actually put on the wire (via azure-core's
  `raw_request_hook`), so tests compare deliveries with the SDK's own serialisation rather than
  with a guess of it.

Each test uses its own topic and webhook path, so one broker and one subscriber serve a module.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from waitress import create_server

from tests.integration.processes import Processes, ServiceProcess, free_port

HOST = "127.0.0.1"
STOP_TIMEOUT = 5.0
DELIVERY_TIMEOUT = 10.0  # how long a test waits for the broker to deliver
MGMT_TIMEOUT = 15.0  # a subscription PUT includes the validation handshake

# The ARM path Azure writes into `topic` (and a converted CloudEvent's `source`); the broker's
# defaults for BROKER_AZURE_SUBSCRIPTION_ID / BROKER_RESOURCE_GROUP.
ARM_TOPIC_PREFIX = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/eventgrid-emulator"
    "/providers/Microsoft.EventGrid/topics/"
)

VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"

# Handshake behaviours of the recording subscriber (per webhook path).
ECHO = "echo"  # answer the handshake correctly
MANUAL = "manual"  # 200 with an empty body: Azure then waits for a GET on the validationUrl
WRONG_CODE = "wrong-code"  # 200 {"validationResponse": "<not the code>"}
REFUSE = "refuse"  # 403


def topic_path(topic: str) -> str:
    return ARM_TOPIC_PREFIX + topic


def new_key() -> str:
    """An access key shaped like Azure's (base64 of 32 bytes; generate_sas base64-decodes it)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


# --------------------------------------------------------------------------------------------------
# The broker process


@dataclass
class LiveBroker:
    """A `python -m broker` child process (started through processes.Processes) and the ARM-shaped
    management calls these tests make to it."""

    service: ServiceProcess
    https_port: int | None
    http: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def https_url(self) -> str:
        assert self.https_port is not None, "start the broker with https=True"
        return f"https://{HOST}:{self.https_port}"

    @property
    def cert(self) -> Path:
        """The self-signed certificate the broker generates for its HTTPS port."""
        return Path(self.service.env["BROKER_DATA_DIR"]) / "tls" / "cert.pem"

    def endpoint(self, topic: str, https: bool = False) -> str:
        """The topic endpoint an Azure SDK client is given (Azure: https://<topic>.<region>-1.eventgrid.azure.net/api/events)."""
        return f"{self.https_url if https else self.url}/topics/{topic}/api/events"

    def put_topic(self, name: str, input_schema: str, keys: list[str] | None = None) -> dict:
        """Create or update a topic; without `keys` the broker generates two, as Azure does."""
        props: dict[str, Any] = {"inputSchema": input_schema}
        if keys is None:
            props["generateKeys"] = True
        else:
            props["keys"] = keys
        resp = self.http.put(f"{self.url}/topics/{name}", json={"properties": props}, timeout=MGMT_TIMEOUT)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def list_keys(self, name: str) -> tuple[str, str]:
        resp = self.http.post(f"{self.url}/topics/{name}/listKeys", timeout=MGMT_TIMEOUT)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return body["key1"], body["key2"]

    def put_subscription(
        self,
        topic: str,
        name: str,
        endpoint: str,
        *,
        max_events_per_batch: int = 1,
        delivery_schema: str | None = None,
        filter: dict | None = None,
        attributes: list[dict] | None = None,
    ) -> requests.Response:
        """PUT an event subscription with the handshake (skipValidation is never set here)."""
        destination: dict[str, Any] = {"endpointUrl": endpoint, "maxEventsPerBatch": max_events_per_batch}
        if attributes:
            destination["deliveryAttributeMappings"] = attributes
        props: dict[str, Any] = {
            "destination": {"endpointType": "WebHook", "properties": destination},
            "retryPolicy": {"maxDeliveryAttempts": 3, "eventTimeToLiveInMinutes": 5},
        }
        if delivery_schema:
            props["eventDeliverySchema"] = delivery_schema
        if filter:
            props["filter"] = filter
        return self.http.put(
            f"{self.url}/topics/{topic}/eventSubscriptions/{name}", json={"properties": props}, timeout=MGMT_TIMEOUT
        )

    def subscribe(self, topic: str, name: str, endpoint: str, **options) -> dict:
        resp = self.put_subscription(topic, name, endpoint, **options)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def get_subscription(self, topic: str, name: str) -> dict:
        resp = self.http.get(f"{self.url}/topics/{topic}/eventSubscriptions/{name}", timeout=MGMT_TIMEOUT)
        assert resp.status_code == 200, resp.text
        return resp.json()


def start_broker(processes: Processes, *, https: bool = False, **more_env: Any) -> LiveBroker:
    """Start the broker through `processes` (which kills its process group at teardown and shows
    its log tail when a test fails), with the settings these tests rely on."""
    port = free_port()
    https_port = free_port() if https else None
    env: dict[str, Any] = {
        # The validationUrl in the handshake is built from this; the default says localhost.
        "BROKER_PUBLIC_URL": f"http://{HOST}:{port}",
        "BROKER_VALIDATION_TIMEOUT": 5,
        "BROKER_DELIVERY_TIMEOUT": 5,
        "LOG_LEVEL": "WARNING",
        **more_env,
    }
    if https_port:
        env["BROKER_HTTPS_PORT"] = https_port
    return LiveBroker(processes.broker("broker", port=port, **env), https_port)


# --------------------------------------------------------------------------------------------------
# The recording webhook subscriber


@dataclass(frozen=True)
class Recorded:
    method: str
    uri: str  # path and query exactly as the request line had them
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_type(self) -> str | None:
        return self.headers.get("aeg-event-type")

    @property
    def is_notification(self) -> bool:
        return self.method == "POST" and self.event_type == "Notification"

    @property
    def is_eventgrid_handshake(self) -> bool:
        return self.method == "POST" and self.event_type == "SubscriptionValidation"

    @property
    def is_cloudevents_handshake(self) -> bool:
        return self.method == "OPTIONS"

    def events(self) -> list[dict]:
        """The delivered events: a JSON array, or one structured CloudEvent object."""
        payload = self.json()
        return payload if isinstance(payload, list) else [payload]


class RecordingSubscriber:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._received: list[Recorded] = []
        self._handshake: dict[str, str] = {}
        self._server = create_server(self._app, host=HOST, port=0, threads=8, ident="recording-subscriber")
        self.port = self._server.effective_port
        self._thread = threading.Thread(target=self._server.run, name="recording-subscriber", daemon=True)

    def start(self) -> RecordingSubscriber:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown()
        self._thread.join(STOP_TIMEOUT)

    def url(self, path_and_query: str, handshake: str = ECHO) -> str:
        """The webhook URL for `path_and_query`, answering the handshake as `handshake` says."""
        self._handshake[path_and_query.split("?", 1)[0]] = handshake
        return f"http://{HOST}:{self.port}{path_and_query}"

    def received(self, path: str, predicate: Callable[[Recorded], bool] = lambda r: True) -> list[Recorded]:
        with self._changed:
            return [r for r in self._received if r.path == path and predicate(r)]

    def wait_for_events(self, path: str, ids: set[str], timeout: float = DELIVERY_TIMEOUT) -> list[Recorded]:
        """The notification requests to `path` that carry the events `ids`, once all have arrived."""

        def carried() -> set[str]:
            return {e.get("id") for r in self.received(path, lambda r: r.is_notification) for e in r.events()}

        deadline = time.monotonic() + timeout
        with self._changed:
            while not ids <= carried() and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
        missing = ids - carried()
        assert not missing, f"{path}: events {sorted(missing)} not delivered within {timeout} s"
        return [r for r in self.received(path, lambda r: r.is_notification) if {e.get("id") for e in r.events()} & ids]

    # -- the WSGI app ----------------------------------------------------------------------------

    def _app(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        received = Recorded(
            method=environ["REQUEST_METHOD"],
            uri=environ.get("REQUEST_URI", ""),
            path=environ.get("PATH_INFO", ""),
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            body=body,
        )
        status, reply_headers, reply = self._answer(received)
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()
        start_response(status, [("Content-Length", str(len(reply))), *reply_headers])
        return [reply]

    def _answer(self, r: Recorded) -> tuple[str, list[tuple[str, str]], bytes]:
        mode = self._handshake.get(r.path, ECHO)
        if r.is_cloudevents_handshake:
            if mode == REFUSE:
                return "403 Forbidden", [], b""
            origin = r.headers.get("webhook-request-origin", "")
            return "200 OK", [("WebHook-Allowed-Origin", origin), ("WebHook-Allowed-Rate", "*")], b""
        if r.is_eventgrid_handshake:
            if mode == REFUSE:
                return "403 Forbidden", [], b""
            if mode == MANUAL:
                return "200 OK", [], b""
            code = r.events()[0]["data"]["validationCode"]
            answer = "not-the-code" if mode == WRONG_CODE else code
            return "200 OK", [("Content-Type", "application/json")], json.dumps({"validationResponse": answer}).encode()
        return "200 OK", [], b""


@contextmanager
def recording_subscriber() -> Iterator[RecordingSubscriber]:
    subscriber = RecordingSubscriber().start()
    try:
        yield subscriber
    finally:
        subscriber.stop()


# --------------------------------------------------------------------------------------------------
# A topic wired to the recording subscriber


@dataclass(frozen=True)
class Wired:
    topic: str
    subscription: str
    key: str  # key1 of the topic
    path: str  # the webhook path on the recording subscriber


def wire(
    broker: LiveBroker,
    subscriber: RecordingSubscriber,
    topic: str,
    input_schema: str = "EventGridSchema",
    *,
    path: str | None = None,
    **subscription_options,
) -> Wired:
    """A keyed topic with one validated subscription delivering to `path` (default "/<topic>")."""
    key = new_key()
    broker.put_topic(topic, input_schema, [key, new_key()])
    path = path or f"/{topic}"
    broker.subscribe(topic, "recorder", subscriber.url(path), **subscription_options)
    return Wired(topic, "recorder", key, path)


# --------------------------------------------------------------------------------------------------
# What an Azure SDK client sent


class SentRequests:
    """Pass `raw_request_hook=sent.hook` to an SDK `send` call; `sent.last` is then its request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    def hook(self, pipeline_request) -> None:
        req = pipeline_request.http_request
        body = req.body if req.body is not None else b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.requests.append((req.url, {k.lower(): v for k, v in req.headers.items()}, body))

    @property
    def last(self) -> tuple[str, dict[str, str], bytes]:
        assert self.requests, "the SDK sent no request"
        return self.requests[-1]

    def events(self) -> list[dict]:
        """The events of the last request, as the SDK serialised them (keyed by id)."""
        return json.loads(self.last[2])
