"""StorageQueue destinations and StorageBlob dead letters, with a stand-in storage account: what the
dispatcher hands to the account, and what it does with the account's answers. (The real SDKs
against a real Azurite: tests/integration/test_azurite.py.)"""

from __future__ import annotations

import json

import orjson
import pytest

from broker.storage import StorageAccount, StorageError
from broker.webhook import Response
from tests.unit.test_dispatcher import FakeClient, dispatch, publish, statuses

ACCOUNT = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
SUB = "/topics/default/eventSubscriptions"


class FakeStorage:
    """Answers each enqueue from a script of statuses (None: unreachable); keeps what it was given."""

    def __init__(self) -> None:
        self.statuses: list[int | None] = [201]
        self.messages: list[tuple[str, dict, int | None]] = []
        self.blobs: dict[tuple[str, str], list] = {}
        self.refuse_blobs = False

    async def enqueue(self, queue: str, body: bytes, ttl: int | None) -> Response:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        self.messages.append((queue, orjson.loads(body), ttl))
        if status is None:
            return Response(None, 1.0, error="storage unreachable")
        return Response(status, 1.0, error=None if status == 201 else "QueueNotFound: The specified queue does not exist.")

    def write_blob(self, container: str, name: str, data: bytes) -> str:
        if self.refuse_blobs:
            raise StorageError("ContainerNotFound: The specified container does not exist.")
        self.blobs[(container, name)] = orjson.loads(data)
        return f"http://127.0.0.1:10000/devstoreaccount1/{container}/{name}"

    def close(self) -> None:
        pass


@pytest.fixture
def storage(engine):
    fake = FakeStorage()
    engine.dispatcher.storage = engine.dispatcher.blobs.storage = fake
    engine.dispatcher.client = FakeClient()  # no webhook may be called
    return fake


def queue_body(queue="orders", ttl=None, **props):
    dest = {"resourceId": ACCOUNT, "queueName": queue}
    if ttl is not None:
        dest["queueMessageTimeToLiveInSeconds"] = ttl
    return {"properties": {"destination": {"endpointType": "StorageQueue", "properties": dest}, **props}}


def test_each_event_is_one_message_in_the_delivery_schema(engine, client, storage):
    resp = client.put(f"{SUB}/to-queue", json=queue_body(ttl=300, eventDeliverySchema="CloudEventSchemaV1_0"))
    assert resp.status_code == 201 and resp.json["properties"]["provisioningState"] == "Succeeded"  # no handshake
    assert resp.json["properties"]["destination"]["endpointType"] == "StorageQueue"
    publish(client, n=3)
    dispatch(engine)
    assert [(q, m["id"], m["specversion"], ttl) for q, m, ttl in storage.messages] == [
        ("orders", f"e{i}", "1.0", 300) for i in range(3)]
    assert statuses(engine) == {"delivered": 3}
    assert engine.dispatcher.client.requests == []


def test_a_missing_queue_is_retried_on_azures_schedule_then_delivered(engine, client, storage, clock):
    storage.statuses = [404, 201]
    assert client.put(f"{SUB}/to-queue", json=queue_body()).status_code == 201
    publish(client)
    dispatch(engine)
    (row,) = engine.store.read("SELECT status, attempts, last_status, last_outcome FROM deliveries")
    assert (row["status"], row["attempts"], row["last_status"], row["last_outcome"]) == ("pending", 1, 404, "NotFound")
    clock.advance(11)
    dispatch(engine)
    assert statuses(engine) == {"delivered": 1} and len(storage.messages) == 2
    assert storage.messages[0][1] == storage.messages[1][1]  # the same event, as an Event Grid event
    assert storage.messages[0][1]["eventType"] == "NewOrder"


def test_an_unreachable_storage_account_runs_out_into_a_dead_letter_blob(engine, client, storage, clock):
    storage.statuses = [None]
    body = queue_body(retryPolicy={"maxDeliveryAttempts": 2, "eventTimeToLiveInMinutes": 1440},
                      deadLetterDestination={"endpointType": "StorageBlob",
                                             "properties": {"resourceId": ACCOUNT, "blobContainerName": "deadletters"}})
    assert client.put(f"{SUB}/to-queue", json=body).status_code == 201
    publish(client)
    for _ in range(3):
        dispatch(engine)
        clock.advance(60)
    assert statuses(engine) == {"deadlettered": 1}
    [((container, name), records)] = storage.blobs.items()
    assert container == "deadletters"
    assert name.startswith("default/TO-QUEUE/") and name.endswith(".json") and len(name.split("/")) == 7
    assert records[0]["deadLetterReason"] == "MaxDeliveryAttemptsExceeded" and records[0]["deliveryAttempts"] == 2
    assert not (engine.config.data_dir / "deadletter").exists()  # the blob went to storage, not to a file


def test_started_without_its_storage_account_a_queue_subscription_waits_for_it(engine, client, storage, clock):
    assert client.put(f"{SUB}/to-queue", json=queue_body()).status_code == 201
    engine.dispatcher.storage = None  # as after a restart without BROKER_STORAGE_CONNECTION_STRING
    publish(client)
    dispatch(engine)
    (row,) = engine.store.read("SELECT d.status, d.attempts, a.error FROM deliveries d JOIN attempts a ON a.delivery_id = d.id")
    assert (row["status"], row["attempts"]) == ("pending", 1) and "BROKER_STORAGE_CONNECTION_STRING" in row["error"]
    engine.dispatcher.storage = storage  # the account is back
    clock.advance(11)
    dispatch(engine)
    assert statuses(engine) == {"delivered": 1} and len(storage.messages) == 1


def test_a_refused_dead_letter_blob_is_kept_as_a_file(engine, client, storage):
    storage.refuse_blobs = True
    engine.dispatcher.client.statuses = [400]
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": "http://sub.test/e", "skipValidation": True}},
                           "deadLetterDestination": {"endpointType": "StorageBlob", "properties": {"blobContainerName": "missing"}}}}
    assert client.put(f"{SUB}/hook", json=body).status_code == 201
    publish(client)
    dispatch(engine)
    files = list((engine.config.data_dir / "deadletter" / "default" / "HOOK").rglob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())[0]["deadLetterReason"] == "BadRequest"


def test_without_a_storage_account_a_storage_queue_subscription_is_refused(client):
    resp = client.put(f"{SUB}/to-queue", json=queue_body())
    assert resp.status_code == 400 and "BROKER_STORAGE_CONNECTION_STRING" in resp.json["error"]["message"]
    assert client.get(f"{SUB}/to-queue").status_code == 404


@pytest.mark.parametrize("dest, field", [
    ({"queueName": "orders"}, "resourceId"),
    ({"resourceId": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Web/sites/x", "queueName": "orders"}, "resourceId"),
    ({"resourceId": ACCOUNT, "queueName": "Orders"}, "queueName"),
    ({"resourceId": ACCOUNT, "queueName": "a--b"}, "queueName"),
    ({"resourceId": ACCOUNT, "queueName": "ab"}, "queueName"),
    ({"resourceId": ACCOUNT, "queueName": "orders", "queueMessageTimeToLiveInSeconds": 0}, "queueMessageTimeToLiveInSeconds"),
    ({"resourceId": ACCOUNT, "queueName": "orders", "queueMessageTimeToLiveInSeconds": "60"}, "queueMessageTimeToLiveInSeconds"),
])
def test_a_bad_storage_queue_destination_names_its_field(client, storage, dest, field):
    body = {"properties": {"destination": {"endpointType": "StorageQueue", "properties": dest}}}
    resp = client.put(f"{SUB}/to-queue", json=body)
    assert resp.status_code == 400 and field in resp.json["error"]["message"], resp.json


def test_get_full_url_is_for_webhooks_only(client, storage):
    assert client.put(f"{SUB}/to-queue", json=queue_body()).status_code == 201
    resp = client.post(f"{SUB}/to-queue/getFullUrl")
    assert resp.status_code == 400 and "StorageQueue" in resp.json["error"]["message"]


def test_development_storage_means_azurite_and_the_sdk_does_not_retry_on_its_own():
    account = StorageAccount("UseDevelopmentStorage=true", timeout=2.0)
    try:
        assert account.queues.url == "http://127.0.0.1:10001/devstoreaccount1/"
        assert account.blobs.url == "http://127.0.0.1:10000/devstoreaccount1/"
        assert account.queues._config.retry_policy.total_retries == 0  # Event Grid's schedule is the only one
    finally:
        account.close()
