"""BROKER_MANAGEMENT_KEY on a live broker: the management SDK passes with the key as its bearer
token (over the HTTPS port, as azure-core sends tokens), anything without it is refused, and
publishing, health and the dashboard opened with `?key=` keep working."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from azure.eventgrid import EventGridEvent, EventGridPublisherClient
from azure.mgmt.eventgrid import EventGridManagementClient
from azure.mgmt.eventgrid import models as m

from tests.integration.arm_support import LOCATION, RESOURCE_GROUP, SUBSCRIPTION_ID, NoCredential
from tests.integration.sdk_support import start_broker

pytestmark = pytest.mark.integration

KEY = "local-management-key-7f3a"


class KeyAsToken:
    """A token credential whose token is the management key."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(KEY, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def broker(module_processes):
    return start_broker(module_processes, https=True, BROKER_MANAGEMENT_KEY=KEY)


def arm(broker, credential) -> EventGridManagementClient:
    return EventGridManagementClient(credential, SUBSCRIPTION_ID, base_url=broker.https_url, connection_verify=str(broker.cert))


def test_the_management_sdk_with_the_key_manages_and_publishing_keeps_its_own_keys(broker):
    with arm(broker, KeyAsToken()) as client:
        topic = client.topics.begin_create_or_update(RESOURCE_GROUP, "guarded", m.Topic(location=LOCATION)).result()
        assert topic.provisioning_state == "Succeeded"
        keys = client.topics.list_shared_access_keys(RESOURCE_GROUP, "guarded")
    event = EventGridEvent(subject="orders/1", event_type="NewOrder", data={"orderId": "1"}, data_version="1.0")
    EventGridPublisherClient(f"{broker.url}/topics/guarded/api/events", AzureKeyCredential(keys.key1)).send([event])
    assert requests.post(f"{broker.url}/topics/guarded/api/events", json=[], timeout=5).status_code == 401  # its own key still needed


def test_without_the_key_management_and_the_dashboard_are_refused(broker):
    with arm(broker, NoCredential()) as client, pytest.raises(HttpResponseError) as refused:
        client.topics.get(RESOURCE_GROUP, "guarded")
    assert refused.value.status_code == 401
    assert requests.get(f"{broker.url}/dashboard/api/topics", timeout=5).status_code == 401
    assert requests.post(f"{broker.url}/topics/default/listKeys", json={}, timeout=5).status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(broker.url + open_path, timeout=5).status_code == 200, open_path


def test_the_dashboard_opened_with_its_key_keeps_it_in_a_strict_cookie(broker):
    browser = requests.Session()
    assert browser.get(f"{broker.url}/?key=wrong", timeout=5).status_code == 401
    first = browser.get(f"{broker.url}/?key={KEY}", timeout=5)
    assert first.status_code == 200
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get(f"{broker.url}/dashboard/api/topics", timeout=5).status_code == 200
