"""Azure Resource Manager calls to a live broker, shaped as azure-mgmt-eventgrid 10.x sends them.

The SDK tests (samples, namespaces, JS) set up their topics, domains and namespaces through these
raw calls, so that a test of a client is not also a test of the management SDK; test_mgmt_sdk.py
drives the same routes through the SDK itself. Ids use the broker's default subscription id and
resource group, so the ARM id of a resource is also the `topic` the broker stamps on its events.

Also here: the do-nothing token credentials the management SDK needs (it sends bearer tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken

from tests.integration.sdk_support import MGMT_TIMEOUT

API_VERSION = "2025-02-15"
SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"  # the broker's BROKER_AZURE_SUBSCRIPTION_ID default
RESOURCE_GROUP = "eventgrid-emulator"  # the broker's BROKER_RESOURCE_GROUP default
PROVIDER = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.EventGrid"
LOCATION = "westus"


def topic_id(name: str) -> str:
    return f"{PROVIDER}/topics/{name}"


def domain_id(name: str) -> str:
    return f"{PROVIDER}/domains/{name}"


def domain_topic_id(domain: str, topic: str) -> str:
    return f"{domain_id(domain)}/topics/{topic}"


def namespace_id(name: str) -> str:
    return f"{PROVIDER}/namespaces/{name}"


def namespace_topic_id(namespace: str, topic: str) -> str:
    return f"{namespace_id(namespace)}/topics/{topic}"


def event_subscription_id(scope: str, name: str) -> str:
    """An event subscription on any scope (topic, domain, domain topic), as ARM names it."""
    return f"{scope}/providers/Microsoft.EventGrid/eventSubscriptions/{name}"


def webhook_subscription(endpoint: str, *, delivery_schema: str | None = None, max_events_per_batch: int = 1,
                         **properties: Any) -> dict:
    """An event subscription body with a WebHook destination (what the SDK's models serialise to)."""
    props: dict[str, Any] = {
        "destination": {"endpointType": "WebHook",
                        "properties": {"endpointUrl": endpoint, "maxEventsPerBatch": max_events_per_batch}},
        **properties,
    }
    if delivery_schema:
        props["eventDeliverySchema"] = delivery_schema
    return {"properties": props}


def queue_subscription(*, lock_seconds: int = 60, max_delivery_count: int = 10, time_to_live: str = "P1D",
                       **properties: Any) -> dict:
    """A namespace topic subscription the application pulls from (deliveryMode Queue)."""
    queue = {"receiveLockDurationInSeconds": lock_seconds, "maxDeliveryCount": max_delivery_count,
             "eventTimeToLive": time_to_live}
    return {"properties": {"deliveryConfiguration": {"deliveryMode": "Queue", "queue": queue},
                           "eventDeliverySchema": "CloudEventSchemaV1_0", **properties}}


@dataclass
class Arm:
    """Raw ARM requests to the broker at `base_url` (plain http; the broker does not check tokens)."""

    base_url: str
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        return self.session.request(method, self.base_url + path, params={"api-version": API_VERSION},
                                    json=body, timeout=MGMT_TIMEOUT)

    def put(self, path: str, body: dict | None = None) -> dict:
        """Create or update; ARM answers 201 with provisioningState Succeeded (what the SDK's poller needs)."""
        resp = self.request("PUT", path, body if body is not None else {})
        assert resp.status_code in (200, 201), f"PUT {path}: {resp.status_code} {resp.text}"
        resource = resp.json()
        assert resource["properties"]["provisioningState"] == "Succeeded", resp.text
        return resource

    def get(self, path: str) -> dict:
        resp = self.request("GET", path)
        assert resp.status_code == 200, f"GET {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def list_keys(self, resource_id: str) -> tuple[str, str]:
        resp = self.request("POST", resource_id + "/listKeys")
        assert resp.status_code == 200, f"listKeys {resource_id}: {resp.status_code} {resp.text}"
        keys = resp.json()
        return keys["key1"], keys["key2"]

    # -- topics and domains ---------------------------------------------------------------------

    def create_topic(self, name: str, input_schema: str = "EventGridSchema", mapping: dict | None = None) -> dict:
        props: dict[str, Any] = {"inputSchema": input_schema}
        if mapping is not None:
            props["inputSchemaMapping"] = {"inputSchemaMappingType": "Json", "properties": mapping}
        return self.put(topic_id(name), {"location": LOCATION, "properties": props})

    def create_domain(self, name: str, input_schema: str = "EventGridSchema") -> dict:
        props = {"inputSchema": input_schema, "autoCreateTopicWithFirstSubscription": True,
                 "autoDeleteTopicWithLastSubscription": True}
        return self.put(domain_id(name), {"location": LOCATION, "properties": props})

    def subscribe(self, scope: str, name: str, endpoint: str, **options: Any) -> dict:
        """An event subscription on `scope` (the PUT runs the validation handshake)."""
        return self.put(event_subscription_id(scope, name), webhook_subscription(endpoint, **options))

    # -- namespaces -----------------------------------------------------------------------------

    def create_namespace(self, name: str) -> dict:
        return self.put(namespace_id(name), {"location": LOCATION, "sku": {"name": "Standard", "capacity": 1}})

    def create_namespace_topic(self, namespace: str, topic: str) -> dict:
        body = {"properties": {"publisherType": "Custom", "inputSchema": "CloudEventSchemaV1_0", "eventRetentionInDays": 1}}
        return self.put(namespace_topic_id(namespace, topic), body)

    def create_queue_subscription(self, namespace: str, topic: str, name: str, **queue: Any) -> dict:
        return self.put(f"{namespace_topic_id(namespace, topic)}/eventSubscriptions/{name}", queue_subscription(**queue))


# --------------------------------------------------------------------------------------------------
# Token credentials for the management SDK: the emulator accepts any bearer token.


class NoCredential:
    """The smallest azure.core TokenCredential: a token that is never checked, valid for an hour."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator", int(time.time()) + 3600)


class AsyncNoCredential:
    """The same for the aio clients (AsyncTokenCredential)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("emulator", int(time.time()) + 3600)
