"""The endpoint validation handshake Azure performs before a webhook subscription gets events.

EventGridSchema subscriptions get a `Microsoft.EventGrid.SubscriptionValidationEvent` and must echo
its `validationCode` as `{"validationResponse": code}`, or later GET the `validationUrl`
(manual validation). CloudEvents subscriptions get the CloudEvents webhook abuse-protection
handshake: `OPTIONS` with `WebHook-Request-Origin`, answered with a matching `WebHook-Allowed-Origin`.

Subscriptions created through the API are validated inside the PUT, as Azure does. Subscriptions
declared in BROKER_CONFIG are validated in the background and retried until their endpoint answers,
because at start-up the subscriber containers may not be up yet; events published meanwhile wait.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from urllib.parse import urlencode

import orjson

from .deadletters import iso
from .events import CLOUDEVENT_SCHEMA
from .subscriptions import STATE_AWAITING, STATE_FAILED, STATE_MANUAL, STATE_SUCCEEDED, Subscription

log = logging.getLogger("broker.validation")

VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
REQUEST_ORIGIN = "eventgrid.azure.net"
RETRY_MAX_SECONDS = 30.0


class Validator:
    def __init__(self, registry, client, clock, config) -> None:
        self.registry = registry
        self.client = client
        self.clock = clock
        self.config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def validation_url(self, sub: Subscription) -> str:
        # The code finds the subscription (it is random and unique): the URL works before the
        # subscription is saved, as it is during the handshake of its PUT.
        query = urlencode({"subscription": sub.name, "code": sub.validation_code})
        return f"{self.config.base_url}/validate?{query}"

    def handshake(self, sub: Subscription) -> tuple[str, str | None]:
        """Run the handshake once; return the subscription's new (state, detail).

        CloudEvents deliveries (the subscription's delivery schema, or its topic's input schema when
        it has none) get the CloudEvents OPTIONS handshake; Event Grid deliveries the validation event.
        """
        if sub.skip_validation:
            return STATE_SUCCEEDED, None
        if not sub.validation_code:
            sub.validation_code = secrets.token_hex(16).upper()
        timeout = self.config.validation_timeout
        if sub.schema_for(sub.scope.input_schema) == CLOUDEVENT_SCHEMA:
            resp = self.client.request("OPTIONS", sub.endpoint, None, {"WebHook-Request-Origin": REQUEST_ORIGIN, "WebHook-Request-Rate": "120"}, timeout)
            if resp.status is None:
                return STATE_AWAITING, f"Webhook validation handshake failed for {sub.endpoint}: {resp.error}"
            allowed = {k.lower(): v for k, v in (resp.headers or {}).items()}.get("webhook-allowed-origin", "")
            if resp.status == 200 and allowed.strip() in (REQUEST_ORIGIN, "*"):
                return STATE_SUCCEEDED, None
            return STATE_FAILED, (
                f"Webhook validation handshake failed for {sub.endpoint}: OPTIONS answered {resp.status} "
                f"with WebHook-Allowed-Origin '{allowed}', expected '{REQUEST_ORIGIN}' or '*'."
            )

        event = {
            "id": str(uuid.uuid4()),
            "topic": sub.scope.path,
            "subject": "",
            "data": {"validationCode": sub.validation_code, "validationUrl": self.validation_url(sub)},
            "eventType": VALIDATION_EVENT_TYPE,
            "eventTime": iso(self.clock.now()),
            "metadataVersion": "1",
            "dataVersion": "2",
        }
        headers = {
            "Content-Type": "application/json",
            "aeg-event-type": "SubscriptionValidation",
            "aeg-subscription-name": sub.name.upper(),
            "aeg-delivery-count": "0",
            "aeg-data-version": "2",
            "aeg-metadata-version": "1",
        }
        resp = self.client.post(sub.endpoint, orjson.dumps([event]), headers, timeout)
        if resp.status is None:
            return STATE_AWAITING, f"Webhook validation handshake failed for {sub.endpoint}: {resp.error}"
        if resp.status != 200:
            return STATE_FAILED, f"Webhook validation handshake failed for {sub.endpoint}: it answered HTTP {resp.status}."
        try:
            answer = orjson.loads(resp.body) if resp.body.strip() else {}
        except orjson.JSONDecodeError:
            answer = {}
        echoed = answer.get("validationResponse") if isinstance(answer, dict) else None
        if echoed is None:
            return STATE_MANUAL, f"Waiting for a GET on the validationUrl: {self.validation_url(sub)}"
        if str(echoed).upper() != sub.validation_code.upper():
            return STATE_FAILED, f"Webhook validation handshake failed for {sub.endpoint}: validationResponse '{echoed}' does not match the validationCode."
        return STATE_SUCCEEDED, None

    def confirm(self, name: str, code: str) -> bool:
        """A GET on the validationUrl (manual validation)."""
        code = (code or "").upper()
        found = [s for s in self.registry.subscriptions() if code and (s.validation_code or "").upper() == code
                 and s.name.lower() == (name or "").lower()]
        if not found:
            return False
        sub = found[0]
        self.registry.set_state(sub, STATE_SUCCEEDED)
        return True

    # -- background validation of declared subscriptions ------------------------------------------

    def start(self, on_validated) -> None:
        self._on_validated = on_validated
        self._thread = threading.Thread(target=self._loop, name="validator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        delay = 0.25
        while not self._stop.is_set():
            waiting = [s for s in self.registry.subscriptions() if s.state == STATE_AWAITING]
            for sub in waiting:
                state, detail = self.handshake(sub)
                if state != sub.state or detail != sub.state_detail:
                    self.registry.set_state(sub, state, detail)
                    log.info("subscription validation", extra={"topic": sub.scope.label, "subscription": sub.name, "state": state, "detail": detail})
                if state == STATE_SUCCEEDED:
                    self._on_validated()
            delay = min(delay * 2, RETRY_MAX_SECONDS) if waiting else 0.25
            self._wake.wait(delay if waiting else RETRY_MAX_SECONDS)
            self._wake.clear()
