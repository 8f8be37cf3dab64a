"""Storage queue destinations and dead-letter blobs against a real Azurite (tests/azurite/, npm ci at
test time), read back with the Azure Storage SDKs as an application reads them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridConsumerClient, EventGridPublisherClient
from azure.mgmt.eventgrid import EventGridManagementClient
from azure.mgmt.eventgrid import models as m
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import BinaryBase64DecodePolicy, QueueServiceClient

from tests.integration.arm_support import (
    LOCATION,
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    Arm,
    NoCredential,
    namespace_id,
    namespace_topic_id,
    queue_subscription,
    topic_id,
)
from tests.integration.azurite_support import PACKAGE, Azurite
from tests.integration.npm_support import npm_ci
from tests.integration.processes import Broker, always, event, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ACCOUNT_ID = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
TIMEOUT = 20.0
# {topic}/{SUBSCRIPTION}/{yyyy}/{M}/{d}/{H}/{guid}.json, as Azure names dead-letter blobs
BLOB_NAME = re.compile(r"(?P<topic>[^/]+)/(?P<sub>[^/]+)/\d{4}/\d{1,2}/\d{1,2}/\d{1,2}/[0-9a-f-]{36}\.json")


@pytest.fixture(scope="module")
def azurite(request, tmp_path_factory) -> Iterator[Azurite]:
    node_modules = npm_ci(request.config, PACKAGE, ".bin/azurite")
    server = Azurite(node_modules, tmp_path_factory.mktemp("azurite") / "azurite.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(azurite, module_processes) -> Broker:
    process = module_processes.broker(BROKER_STORAGE_CONNECTION_STRING=azurite.connection_string, time_scale=0.001)
    return Broker.of(process)


@pytest.fixture(scope="module")
def queues(azurite) -> QueueServiceClient:
    return QueueServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture(scope="module")
def blobs(azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


def to_queue(queue: str, schema: str = "EventGridSchema", ttl: int | None = None, **props) -> dict:
    dest = {"resourceId": ACCOUNT_ID, "queueName": queue}
    if ttl is not None:
        dest["queueMessageTimeToLiveInSeconds"] = ttl
    return {"properties": {"destination": {"endpointType": "StorageQueue", "properties": dest}, "eventDeliverySchema": schema, **props}}


def dead_letter_to(container: str) -> dict:
    return {"endpointType": "StorageBlob", "properties": {"resourceId": ACCOUNT_ID, "blobContainerName": container}}


def messages(queues: QueueServiceClient, queue: str, count: int) -> list:
    client = queues.get_queue_client(queue, message_decode_policy=BinaryBase64DecodePolicy())
    wait_until(lambda: len(client.peek_messages(max_messages=32)) >= count, TIMEOUT, f"{count} messages in {queue}",
               tolerate=(Exception,))
    got = client.peek_messages(max_messages=32)
    assert len(got) == count
    return got


def dead_letter_blobs(blobs: BlobServiceClient, container: str, count: int) -> dict[str, list]:
    client = blobs.get_container_client(container)
    wait_until(lambda: len(list(client.list_blobs())) >= count, TIMEOUT, f"{count} blobs in {container}")
    return {b.name: orjson.loads(client.download_blob(b.name).readall()) for b in client.list_blobs()}


def test_each_event_becomes_one_base64_message_in_the_queue(broker, queues):
    queues.create_queue("orders-eg")
    broker.subscribe("default", "to-queue", to_queue("orders-eg", ttl=120))
    ids = broker.publish_ok([event("NewOrder", event_id=f"q-{i}", data={"orderId": i}) for i in range(3)])
    got = messages(queues, "orders-eg", 3)
    bodies = [orjson.loads(m.content) for m in got]
    assert sorted(b["id"] for b in bodies) == sorted(ids)  # one event per message, never an array
    assert all(b["topic"].endswith("/topics/default") and b["eventType"] == "NewOrder" for b in bodies)
    lifetime = (got[0].expires_on - got[0].inserted_on).total_seconds()
    assert 100 <= lifetime <= 140  # queueMessageTimeToLiveInSeconds


def test_cloud_events_in_the_queue_read_back_as_the_sdk_sample_reads_them(broker, queues):
    # consume_cloud_events_from_storage_queue.py in azure-eventgrid's samples, minus its Entra ID login
    queues.create_queue("orders-ce")
    broker.subscribe("default", "to-queue-ce", to_queue("orders-ce", schema="CloudEventSchemaV1_0"))
    broker.publish_ok([event("NewOrder", event_id="ce-1", subject="orders/1")])
    [message] = messages(queues, "orders-ce", 1)
    cloud_event = CloudEvent.from_json(message)
    assert (cloud_event.id, cloud_event.type, cloud_event.subject) == ("ce-1", "NewOrder", "orders/1")
    assert cloud_event.source.endswith("/topics/default")


def test_a_missing_queue_is_retried_until_it_exists(broker, queues):
    broker.subscribe("default", "late-queue", to_queue("late-queue"))
    broker.publish_ok([event("NewOrder", event_id="late-1")])

    def refused() -> bool:
        rows = broker.query("SELECT d.status, d.attempts, d.last_status FROM named_deliveries d "
                            "WHERE subscription_name='late-queue'")
        return bool(rows) and rows[0]["status"] == "pending" and rows[0]["attempts"] >= 1 and rows[0]["last_status"] == 404

    wait_until(refused, TIMEOUT, "a first attempt refused with 404 QueueNotFound")
    queues.create_queue("late-queue")
    [message] = messages(queues, "late-queue", 1)
    assert orjson.loads(message.content)["id"] == "late-1"
    wait_until(lambda: broker.statuses("default", "late-queue") == {"delivered": 1}, TIMEOUT, "delivered")


def test_infrastructure_code_wires_a_topic_to_a_queue_through_the_management_sdk(broker, queues):
    queues.create_queue("mgmt-orders")
    off = {"enforce_https": False}  # plain http: azure-core sends bearer tokens over TLS only otherwise
    with EventGridManagementClient(NoCredential(), SUBSCRIPTION_ID, base_url=broker.url) as arm:
        arm.topics.begin_create_or_update(RESOURCE_GROUP, "mgmt-to-queue", m.Topic(location=LOCATION), **off).result()
        destination = m.StorageQueueEventSubscriptionDestination(resource_id=ACCOUNT_ID, queue_name="mgmt-orders",
                                                                 queue_message_time_to_live_in_seconds=-1)
        sub = arm.event_subscriptions.begin_create_or_update(
            topic_id("mgmt-to-queue"), "to-queue", m.EventSubscription(destination=destination), **off).result()
        assert sub.provisioning_state == "Succeeded"
        assert isinstance(sub.destination, m.StorageQueueEventSubscriptionDestination)
        assert (sub.destination.queue_name, sub.destination.queue_message_time_to_live_in_seconds) == ("mgmt-orders", -1)
        key = arm.topics.list_shared_access_keys(RESOURCE_GROUP, "mgmt-to-queue", **off).key1
    resp = broker.request("POST", "/topics/mgmt-to-queue/api/events", json=[event("NewOrder", event_id="mgmt-1")],
                          headers={"aeg-sas-key": key})
    assert resp.status_code == 200, resp.text
    [message] = messages(queues, "mgmt-orders", 1)
    assert orjson.loads(message.content)["id"] == "mgmt-1"
    assert message.expires_on.year == 9999  # -1: never expires


def test_a_rejected_webhook_event_is_dead_lettered_into_the_container(broker, blobs, webhook):
    blobs.create_container("deadletters")
    hook = webhook(always(400))
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": hook.url}},
                           "deadLetterDestination": dead_letter_to("deadletters")}}
    broker.subscribe("default", "strict-hook", body)
    broker.publish_ok([event("NewOrder", event_id="dl-1")])
    [(name, records)] = dead_letter_blobs(blobs, "deadletters", 1).items()
    match = BLOB_NAME.fullmatch(name)
    assert match and (match["topic"], match["sub"]) == ("default", "STRICT-HOOK"), name
    assert name.split("/")[2] == str(datetime.now(UTC).year)
    [record] = records
    assert (record["id"], record["deadLetterReason"], record["lastHttpStatusCode"]) == ("dl-1", "BadRequest", 400)
    assert not (broker.data_dir / "deadletter").exists()  # into storage, not into the fallback files


def test_a_queue_that_never_appears_runs_out_into_a_dead_letter_blob(broker, blobs):
    blobs.create_container("queue-dead")
    retry = {"maxDeliveryAttempts": 2, "eventTimeToLiveInMinutes": 1440}
    broker.subscribe("default", "no-queue", to_queue("never-created", retryPolicy=retry, deadLetterDestination=dead_letter_to("queue-dead")))
    broker.publish_ok([event("NewOrder", event_id="gone-1")])
    [(name, [record])] = dead_letter_blobs(blobs, "queue-dead", 1).items()
    assert BLOB_NAME.fullmatch(name) and "/NO-QUEUE/" in name
    assert (record["id"], record["deadLetterReason"], record["lastHttpStatusCode"], record["deliveryAttempts"]) == (
        "gone-1", "MaxDeliveryAttemptsExceeded", 404, 2)


def test_a_rejected_namespace_queue_event_is_dead_lettered_into_the_container(broker, blobs):
    blobs.create_container("queue-rejects")
    arm = Arm(broker.url)
    arm.create_namespace("orders-ns")
    arm.create_namespace_topic("orders-ns", "orders")
    dead_letter = {"identity": {"type": "SystemAssigned"}, "deadLetterDestination": dead_letter_to("queue-rejects")}
    body = queue_subscription()
    body["properties"]["deliveryConfiguration"]["queue"]["deadLetterDestinationWithResourceIdentity"] = dead_letter
    arm.put(f"{namespace_topic_id('orders-ns', 'orders')}/eventSubscriptions/worker", body)
    key, _ = arm.list_keys(namespace_id("orders-ns"))
    endpoint = f"{broker.url}/namespaces/orders-ns"
    EventGridPublisherClient(endpoint, AzureKeyCredential(key), namespace_topic="orders").send(
        [CloudEvent(source="/orders", type="Contoso.Orders.Created", data={"n": 1}, id="reject-1")])
    consumer = EventGridConsumerClient(endpoint, AzureKeyCredential(key), namespace_topic="orders", subscription="worker")
    [detail] = consumer.receive(max_events=1, max_wait_time=10)
    assert consumer.reject(lock_tokens=[detail.broker_properties.lock_token]).succeeded_lock_tokens
    [(name, [record])] = dead_letter_blobs(blobs, "queue-rejects", 1).items()
    assert "/WORKER/" in name and name.endswith(".json")
    assert (record["id"], record["deadLetterReason"], record["specversion"]) == ("reject-1", "Rejected", "1.0")


def test_an_unreachable_storage_account_loses_nothing(processes):
    # Nothing listens on the account's ports: sends fail, retries run out, and the dead letter
    # (its blob unreachable too) is kept as a file under the data dir.
    closed = free_port()
    unreachable = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                   f"BlobEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;QueueEndpoint=http://127.0.0.1:{closed}/devstoreaccount1;")
    broker = Broker.of(processes.broker("offline", BROKER_STORAGE_CONNECTION_STRING=unreachable, time_scale=0.001,
                                        BROKER_DELIVERY_TIMEOUT=2))
    retry = {"maxDeliveryAttempts": 3, "eventTimeToLiveInMinutes": 1440}
    broker.subscribe("default", "offline-queue", to_queue("orders", retryPolicy=retry, deadLetterDestination=dead_letter_to("deadletters")))
    broker.publish_ok([event("NewOrder", event_id="kept-1")])
    page = broker.wait_dead_letters("default", "offline-queue", 1, timeout=TIMEOUT)
    [dead] = page["value"]
    assert (dead["id"], dead["deadLetterReason"], dead["deliveryAttempts"]) == ("kept-1", "MaxDeliveryAttemptsExceeded", 3)
    files = wait_until(lambda: list((broker.data_dir / "deadletter" / "default" / "OFFLINE-QUEUE").rglob("*.json")), TIMEOUT,
                       "the dead letter kept as a file")
    assert orjson.loads(files[0].read_bytes())[0]["id"] == "kept-1"
