"""azure-mgmt-eventgrid against a live broker: the Azure Resource Manager routes (issues 16 and 17).

Infrastructure code manages Event Grid through `EventGridManagementClient`; here it is pointed at the
broker's HTTPS port (`base_url`, the generated self-signed certificate as `connection_verify`) with a
do-nothing token credential, and once at plain http with the SDK's https enforcement switched off.
Every create must finish without polling (ARM's 201 with provisioningState Succeeded), and what ARM
reports -- the endpoint, the keys -- must work for publishing: events published to
`properties.endpoint` with `listKeys`' key reach the subscription created through ARM.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError, ServiceRequestError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridConsumerClient, EventGridEvent, EventGridPublisherClient
from azure.mgmt.eventgrid import EventGridManagementClient
from azure.mgmt.eventgrid import models as m
from azure.mgmt.eventgrid.aio import EventGridManagementClient as AsyncEventGridManagementClient

from tests.integration.arm_support import (
    LOCATION,
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    AsyncNoCredential,
    NoCredential,
    domain_id,
    domain_topic_id,
    namespace_id,
    topic_id,
)
from tests.integration.sdk_support import (
    MGMT_TIMEOUT,
    RecordingSubscriber,
    SentRequests,
)

pytestmark = pytest.mark.integration

RG = RESOURCE_GROUP


@pytest.fixture(scope="module")
def broker(sdk_broker):
    return sdk_broker


@pytest.fixture(scope="module")
def client(broker) -> Iterator[EventGridManagementClient]:
    # Exactly what an application writes, but for base_url and the certificate to trust.
    with EventGridManagementClient(NoCredential(), SUBSCRIPTION_ID, base_url=broker.https_url,
                                   connection_verify=str(broker.cert)) as client:
        yield client


def finished(poller):
    """The poller's result; the broker answers each create/update/delete at once, so nothing polls."""
    result = poller.result(timeout=MGMT_TIMEOUT)
    assert poller.done(), "the operation was still running: the broker did not answer it as finished"
    return result


def webhook(subscriber: RecordingSubscriber, path: str, **options) -> m.EventSubscription:
    return m.EventSubscription(destination=m.WebHookEventSubscriptionDestination(endpoint_url=subscriber.url(path)), **options)


def send(broker, endpoint: str, key: str, events) -> None:
    EventGridPublisherClient(endpoint, AzureKeyCredential(key)).send(events, connection_verify=str(broker.cert))


def order_event(event_type: str = "Contoso.Orders.Created", **fields) -> EventGridEvent:
    # A str id (the SDK's default is a uuid.UUID object), so it compares with the delivered JSON.
    return EventGridEvent(subject="/orders/1", event_type=event_type, data={"orderId": "1"}, data_version="1.0",
                          id=str(uuid.uuid4()), **fields)


# -- topics ---------------------------------------------------------------------------------------


def test_topic_is_created_read_listed_updated_and_deleted(client, broker):
    sent = SentRequests()

    created = finished(client.topics.begin_create_or_update(
        RG, "mgmt-topic", m.Topic(location=LOCATION, tags={"team": "orders"}, input_schema="CloudEventSchemaV1_0"),
        raw_request_hook=sent.hook))

    assert len(sent.requests) == 1  # the 201 finished the operation: no status polling
    assert (created.id, created.name, created.type) == (topic_id("mgmt-topic"), "mgmt-topic", "Microsoft.EventGrid/topics")
    assert (created.location, created.tags, created.provisioning_state) == (LOCATION, {"team": "orders"}, "Succeeded")
    assert created.input_schema == "CloudEventSchemaV1_0"
    assert created.endpoint.endswith("/topics/mgmt-topic/api/events")
    read = client.topics.get(RG, "mgmt-topic")
    assert (read.id, read.tags, read.endpoint, read.input_schema) == (created.id, created.tags, created.endpoint, created.input_schema)
    assert "mgmt-topic" in {t.name for t in client.topics.list_by_resource_group(RG)}
    assert "mgmt-topic" in {t.name for t in client.topics.list_by_subscription()}

    updated = finished(client.topics.begin_update(RG, "mgmt-topic", m.TopicUpdateParameters(tags={"team": "billing"})))

    assert updated.tags == {"team": "billing"}
    assert client.topics.get(RG, "mgmt-topic").tags == {"team": "billing"}
    assert client.topics.get(RG, "mgmt-topic").input_schema == "CloudEventSchemaV1_0"  # PATCH keeps what it does not name

    finished(client.topics.begin_delete(RG, "mgmt-topic"))

    with pytest.raises(ResourceNotFoundError) as missing:
        client.topics.get(RG, "mgmt-topic")
    assert missing.value.error.code
    assert "mgmt-topic" not in {t.name for t in client.topics.list_by_resource_group(RG)}


def test_topic_keys_are_listed_and_regenerated_and_only_current_keys_publish(client, broker, subscriber):
    topic = finished(client.topics.begin_create_or_update(RG, "mgmt-keys", m.Topic(location=LOCATION)))
    finished(client.event_subscriptions.begin_create_or_update(topic.id, "recorder", webhook(subscriber, "/mgmt-keys")))
    keys = client.topics.list_shared_access_keys(RG, "mgmt-keys")
    assert keys.key1
    assert keys.key2
    assert keys.key1 != keys.key2

    regenerated = finished(client.topics.begin_regenerate_key(RG, "mgmt-keys", m.TopicRegenerateKeyRequest(key_name="key1")))

    assert regenerated.key1 not in (keys.key1, keys.key2)
    assert regenerated.key2 == keys.key2
    assert client.topics.list_shared_access_keys(RG, "mgmt-keys").key1 == regenerated.key1
    with pytest.raises(ClientAuthenticationError):
        send(broker, topic.endpoint, keys.key1, order_event())
    event = order_event()
    send(broker, topic.endpoint, regenerated.key1, event)
    subscriber.wait_for_events("/mgmt-keys", {event.id})


def test_event_published_to_the_endpoint_arm_reports_reaches_the_subscription_made_through_arm(client, broker, subscriber):
    topic = finished(client.topics.begin_create_or_update(RG, "mgmt-publish", m.Topic(location=LOCATION)))
    key = client.topics.list_shared_access_keys(RG, "mgmt-publish").key1
    subscription = finished(client.event_subscriptions.begin_create_or_update(
        topic.id, "recorder", webhook(subscriber, "/mgmt-publish", event_delivery_schema="EventGridSchema")))
    assert subscription.provisioning_state == "Succeeded"
    assert subscription.id == f"{topic.id}/providers/Microsoft.EventGrid/eventSubscriptions/recorder"
    event = order_event()

    send(broker, topic.endpoint, key, event)

    [request] = subscriber.wait_for_events("/mgmt-publish", {event.id})
    [delivered] = request.json()
    assert delivered["topic"] == topic.id
    assert (delivered["eventType"], delivered["data"]) == ("Contoso.Orders.Created", {"orderId": "1"})


def test_topic_subscription_is_read_listed_patched_and_deleted_and_reveals_its_full_url(client, broker, subscriber):
    topic = finished(client.topics.begin_create_or_update(RG, "mgmt-subs", m.Topic(location=LOCATION)))
    key = client.topics.list_shared_access_keys(RG, "mgmt-subs").key1
    url = subscriber.url("/mgmt-subs?code=s3cr3t")
    finished(client.event_subscriptions.begin_create_or_update(
        topic.id, "filtered", m.EventSubscription(destination=m.WebHookEventSubscriptionDestination(endpoint_url=url))))

    got = client.event_subscriptions.get(topic.id, "filtered")
    assert (got.name, got.type, got.topic) == ("filtered", "Microsoft.EventGrid/eventSubscriptions", topic.id)
    assert "filtered" in {s.name for s in client.event_subscriptions.list_by_resource(RG, "Microsoft.EventGrid", "topics", "mgmt-subs")}
    assert "filtered" in {s.name for s in client.event_subscriptions.list_global_by_resource_group(RG)}
    assert "filtered" in {s.name for s in client.event_subscriptions.list_global_by_subscription()}
    assert client.event_subscriptions.get_full_url(topic.id, "filtered").endpoint_url == url

    patched = finished(client.event_subscriptions.begin_update(
        topic.id, "filtered", m.EventSubscriptionUpdateParameters(filter=m.EventSubscriptionFilter(included_event_types=["Wanted"]))))

    assert patched.filter.included_event_types == ["Wanted"]
    assert client.event_subscriptions.get_full_url(topic.id, "filtered").endpoint_url == url  # PATCH kept the destination
    unwanted, wanted = order_event("Unwanted"), order_event("Wanted")
    send(broker, topic.endpoint, key, [unwanted, wanted])
    subscriber.wait_for_events("/mgmt-subs", {wanted.id})
    assert [e["id"] for r in subscriber.received("/mgmt-subs", lambda r: r.is_notification) for e in r.events()] == [wanted.id]

    finished(client.event_subscriptions.begin_delete(topic.id, "filtered"))

    with pytest.raises(ResourceNotFoundError):
        client.event_subscriptions.get(topic.id, "filtered")


def test_missing_resources_raise_resource_not_found_with_an_arm_error(client):
    with pytest.raises(ResourceNotFoundError) as topic:
        client.topics.get(RG, "mgmt-never-created")
    with pytest.raises(ResourceNotFoundError) as subscription:
        client.event_subscriptions.get(topic_id("mgmt-never-created"), "nobody")
    with pytest.raises(ResourceNotFoundError):
        client.domains.get(RG, "mgmt-never-created")

    for caught in (topic, subscription):
        assert caught.value.status_code == 404
        assert caught.value.error.code
        assert caught.value.error.message


def test_any_subscription_id_and_resource_group_are_accepted(broker):
    other_sub, other_rg = "11111111-2222-3333-4444-555555555555", "team-rg"
    with EventGridManagementClient(NoCredential(), other_sub, base_url=broker.https_url, connection_verify=str(broker.cert)) as other:
        created = finished(other.topics.begin_create_or_update(other_rg, "mgmt-other-rg", m.Topic(location=LOCATION)))
        assert created.id == f"/subscriptions/{other_sub}/resourceGroups/{other_rg}/providers/Microsoft.EventGrid/topics/mgmt-other-rg"
        assert other.topics.get(other_rg, "mgmt-other-rg").name == "mgmt-other-rg"
        assert "mgmt-other-rg" in {t.name for t in other.topics.list_by_resource_group(other_rg)}


# -- domains and domain topics --------------------------------------------------------------------


def test_domain_is_created_read_listed_updated_keyed_and_deleted(client):
    created = finished(client.domains.begin_create_or_update(RG, "mgmt-domain", m.Domain(location=LOCATION, tags={"a": "1"})))

    assert (created.id, created.type, created.provisioning_state) == (domain_id("mgmt-domain"), "Microsoft.EventGrid/domains", "Succeeded")
    assert created.endpoint.endswith("/domains/mgmt-domain/api/events")
    assert client.domains.get(RG, "mgmt-domain").endpoint == created.endpoint
    assert "mgmt-domain" in {d.name for d in client.domains.list_by_resource_group(RG)}
    assert "mgmt-domain" in {d.name for d in client.domains.list_by_subscription()}
    assert finished(client.domains.begin_update(RG, "mgmt-domain", m.DomainUpdateParameters(tags={"a": "2"}))).tags == {"a": "2"}
    keys = client.domains.list_shared_access_keys(RG, "mgmt-domain")
    regenerated = client.domains.regenerate_key(RG, "mgmt-domain", m.DomainRegenerateKeyRequest(key_name="key2"))
    assert regenerated.key1 == keys.key1
    assert regenerated.key2 not in (keys.key1, keys.key2)

    finished(client.domains.begin_delete(RG, "mgmt-domain"))

    with pytest.raises(ResourceNotFoundError):
        client.domains.get(RG, "mgmt-domain")


def test_domain_topics_are_created_read_listed_and_deleted(client):
    finished(client.domains.begin_create_or_update(RG, "mgmt-dt", m.Domain(location=LOCATION)))

    created = finished(client.domain_topics.begin_create_or_update(RG, "mgmt-dt", "invoices"))

    assert (created.id, created.name, created.type) == (domain_topic_id("mgmt-dt", "invoices"), "invoices", "Microsoft.EventGrid/domains/topics")
    assert created.provisioning_state == "Succeeded"
    assert client.domain_topics.get(RG, "mgmt-dt", "invoices").id == created.id
    assert [t.name for t in client.domain_topics.list_by_domain(RG, "mgmt-dt")] == ["invoices"]

    finished(client.domain_topics.begin_delete(RG, "mgmt-dt", "invoices"))

    with pytest.raises(ResourceNotFoundError):
        client.domain_topics.get(RG, "mgmt-dt", "invoices")


def test_domain_topic_and_domain_scope_subscriptions_get_their_events_from_the_domain_endpoint(client, broker, subscriber):
    domain = finished(client.domains.begin_create_or_update(RG, "mgmt-route", m.Domain(location=LOCATION)))
    key = client.domains.list_shared_access_keys(RG, "mgmt-route").key1
    orders = domain_topic_id("mgmt-route", "orders")
    finished(client.event_subscriptions.begin_create_or_update(orders, "orders-only", webhook(subscriber, "/mgmt-route/orders")))
    finished(client.event_subscriptions.begin_create_or_update(domain.id, "everything", webhook(subscriber, "/mgmt-route/all")))
    assert client.event_subscriptions.get(orders, "orders-only").topic == orders
    assert [s.name for s in client.event_subscriptions.list_by_domain_topic(RG, "mgmt-route", "orders")] == ["orders-only"]
    assert "everything" in {s.name for s in client.event_subscriptions.list_by_resource(RG, "Microsoft.EventGrid", "domains", "mgmt-route")}
    assert client.event_subscriptions.get_full_url(orders, "orders-only").endpoint_url == subscriber.url("/mgmt-route/orders")
    for_orders, for_refunds = order_event(topic="orders"), order_event(topic="refunds")

    send(broker, domain.endpoint, key, [for_orders, for_refunds])

    [request] = subscriber.wait_for_events("/mgmt-route/orders", {for_orders.id})
    assert request.json()[0]["topic"] == orders
    both = subscriber.wait_for_events("/mgmt-route/all", {for_orders.id, for_refunds.id})
    assert {e["id"]: e["topic"] for r in both for e in r.json()} == {
        for_orders.id: orders, for_refunds.id: domain_topic_id("mgmt-route", "refunds")}
    assert [e["id"] for r in subscriber.received("/mgmt-route/orders", lambda r: r.is_notification) for e in r.events()] == [for_orders.id]


def test_domain_topic_comes_with_its_first_subscription_and_goes_with_its_last(client, subscriber):
    finished(client.domains.begin_create_or_update(RG, "mgmt-auto", m.Domain(
        location=LOCATION, auto_create_topic_with_first_subscription=True, auto_delete_topic_with_last_subscription=True)))
    scope = domain_topic_id("mgmt-auto", "tenant-1")

    finished(client.event_subscriptions.begin_create_or_update(scope, "first", webhook(subscriber, "/mgmt-auto/1")))
    finished(client.event_subscriptions.begin_create_or_update(scope, "second", webhook(subscriber, "/mgmt-auto/2")))

    assert client.domain_topics.get(RG, "mgmt-auto", "tenant-1").id == scope
    finished(client.event_subscriptions.begin_delete(scope, "first"))
    assert client.domain_topics.get(RG, "mgmt-auto", "tenant-1").id == scope  # one subscription left
    finished(client.event_subscriptions.begin_delete(scope, "second"))
    with pytest.raises(ResourceNotFoundError):
        client.domain_topics.get(RG, "mgmt-auto", "tenant-1")


# -- transports: plain http, aio ------------------------------------------------------------------


def test_plain_http_works_with_https_enforcement_switched_off_per_call(broker):
    off = {"enforce_https": False}  # azure-core refuses to send a bearer token over http otherwise
    with EventGridManagementClient(NoCredential(), SUBSCRIPTION_ID, base_url=broker.url) as plain:
        with pytest.raises(ServiceRequestError, match="non-TLS"):
            plain.topics.get(RG, "mgmt-plain")  # refused by the SDK before anything is sent

        created = finished(plain.topics.begin_create_or_update(RG, "mgmt-plain", m.Topic(location=LOCATION), **off))
        assert created.id == topic_id("mgmt-plain")
        assert plain.topics.get(RG, "mgmt-plain", **off).provisioning_state == "Succeeded"
        assert "mgmt-plain" in {t.name for t in plain.topics.list_by_resource_group(RG, **off)}
        assert plain.topics.list_shared_access_keys(RG, "mgmt-plain", **off).key1
        finished(plain.topics.begin_delete(RG, "mgmt-plain", **off))
        with pytest.raises(ResourceNotFoundError):
            plain.topics.get(RG, "mgmt-plain", **off)


def test_async_management_client_with_an_async_token_credential(broker):
    async def scenario() -> tuple[str, str, list[str]]:
        async with AsyncEventGridManagementClient(AsyncNoCredential(), SUBSCRIPTION_ID, base_url=broker.https_url,
                                                  connection_verify=str(broker.cert)) as aio:
            created = await (await aio.topics.begin_create_or_update(RG, "mgmt-aio", m.Topic(location=LOCATION))).result()
            read = await aio.topics.get(RG, "mgmt-aio")
            names = [t.name async for t in aio.topics.list_by_resource_group(RG)]
            await (await aio.topics.begin_delete(RG, "mgmt-aio")).result()
            return created.provisioning_state, read.id, names

    state, read_id, names = asyncio.run(asyncio.wait_for(scenario(), MGMT_TIMEOUT))

    assert (state, read_id) == ("Succeeded", topic_id("mgmt-aio"))
    assert "mgmt-aio" in names


# -- namespaces (issue 17) ------------------------------------------------------------------------


def test_namespace_is_managed_and_its_hostname_is_the_data_plane_endpoint(client, broker):
    created = finished(client.namespaces.begin_create_or_update(
        RG, "mgmt-ns", m.Namespace(location=LOCATION, sku=m.NamespaceSku(name="Standard", capacity=1))))

    assert (created.id, created.type, created.provisioning_state) == (namespace_id("mgmt-ns"), "Microsoft.EventGrid/namespaces", "Succeeded")
    hostname = client.namespaces.get(RG, "mgmt-ns").topics_configuration.hostname
    assert hostname == f"{broker.url.removeprefix('http://')}/namespaces/mgmt-ns"  # no scheme, as in Azure
    assert "mgmt-ns" in {n.name for n in client.namespaces.list_by_resource_group(RG)}
    assert "mgmt-ns" in {n.name for n in client.namespaces.list_by_subscription()}
    assert finished(client.namespaces.begin_update(RG, "mgmt-ns", m.NamespaceUpdateParameters(tags={"k": "v"}))).tags == {"k": "v"}
    keys = client.namespaces.list_shared_access_keys(RG, "mgmt-ns")
    regenerated = finished(client.namespaces.begin_regenerate_key(RG, "mgmt-ns", m.NamespaceRegenerateKeyRequest(key_name="key1")))
    assert regenerated.key1 not in (keys.key1, keys.key2)
    assert regenerated.key2 == keys.key2

    # The hostname ARM reports, with a scheme, is what the data-plane clients are given.
    finished(client.namespace_topics.begin_create_or_update(RG, "mgmt-ns", "orders", m.NamespaceTopic(input_schema="CloudEventSchemaV1_0")))
    finished(client.namespace_topic_event_subscriptions.begin_create_or_update(RG, "mgmt-ns", "orders", "worker", m.Subscription(
        delivery_configuration=m.DeliveryConfiguration(delivery_mode="Queue", queue=m.QueueInfo(receive_lock_duration_in_seconds=60)))))
    endpoint, credential = f"http://{hostname}", AzureKeyCredential(regenerated.key1)
    event = CloudEvent(source="/mgmt", type="Contoso.Orders.Created", data={"orderId": "1"})
    EventGridPublisherClient(endpoint, credential, namespace_topic="orders").send(event)
    consumer = EventGridConsumerClient(endpoint, credential, namespace_topic="orders", subscription="worker")
    [received] = consumer.receive(max_events=10, max_wait_time=10)
    assert received.event.id == event.id
    assert consumer.acknowledge(lock_tokens=[received.broker_properties.lock_token]).succeeded_lock_tokens == [
        received.broker_properties.lock_token]

    finished(client.namespaces.begin_delete(RG, "mgmt-ns"))

    with pytest.raises(ResourceNotFoundError):
        client.namespaces.get(RG, "mgmt-ns")


def test_namespace_topics_and_their_queue_and_push_subscriptions_are_managed(client, broker, subscriber):
    finished(client.namespaces.begin_create_or_update(RG, "mgmt-nst", m.Namespace(location=LOCATION)))
    topic = finished(client.namespace_topics.begin_create_or_update(
        RG, "mgmt-nst", "events", m.NamespaceTopic(publisher_type="Custom", input_schema="CloudEventSchemaV1_0", event_retention_in_days=1)))
    assert (topic.type, topic.provisioning_state) == ("Microsoft.EventGrid/namespaces/topics", "Succeeded")
    assert [t.name for t in client.namespace_topics.list_by_namespace(RG, "mgmt-nst")] == ["events"]
    assert finished(client.namespace_topics.begin_update(
        RG, "mgmt-nst", "events", m.NamespaceTopicUpdateParameters(event_retention_in_days=2))).event_retention_in_days == 2
    assert client.namespace_topics.list_shared_access_keys(RG, "mgmt-nst", "events").key1

    queue = finished(client.namespace_topic_event_subscriptions.begin_create_or_update(RG, "mgmt-nst", "events", "pull", m.Subscription(
        delivery_configuration=m.DeliveryConfiguration(delivery_mode="Queue", queue=m.QueueInfo(
            receive_lock_duration_in_seconds=120, max_delivery_count=5, event_time_to_live="P1D")),
        event_delivery_schema="CloudEventSchemaV1_0")))
    push_to = m.WebHookEventSubscriptionDestination(endpoint_url=subscriber.url("/mgmt-nst/push"))
    push = finished(client.namespace_topic_event_subscriptions.begin_create_or_update(RG, "mgmt-nst", "events", "push", m.Subscription(
        delivery_configuration=m.DeliveryConfiguration(delivery_mode="Push", push=m.PushInfo(max_delivery_count=3, destination=push_to)),
        event_delivery_schema="CloudEventSchemaV1_0")))

    assert queue.provisioning_state == push.provisioning_state == "Succeeded"
    got = client.namespace_topic_event_subscriptions.get(RG, "mgmt-nst", "events", "pull")
    assert (got.delivery_configuration.delivery_mode, got.delivery_configuration.queue.receive_lock_duration_in_seconds) == ("Queue", 120)
    assert got.delivery_configuration.queue.max_delivery_count == 5
    assert sorted(s.name for s in client.namespace_topic_event_subscriptions.list_by_namespace_topic(RG, "mgmt-nst", "events")) == ["pull", "push"]
    assert client.namespace_topic_event_subscriptions.get_full_url(RG, "mgmt-nst", "events", "push").endpoint_url == \
        subscriber.url("/mgmt-nst/push")
    patched = finished(client.namespace_topic_event_subscriptions.begin_update(RG, "mgmt-nst", "events", "pull", m.SubscriptionUpdateParameters(
        delivery_configuration=m.DeliveryConfiguration(delivery_mode="Queue", queue=m.QueueInfo(
            receive_lock_duration_in_seconds=120, max_delivery_count=7, event_time_to_live="P1D")))))
    assert patched.delivery_configuration.queue.max_delivery_count == 7

    # One CloudEvent reaches both: pushed to the webhook, held in the queue.
    key = client.namespaces.list_shared_access_keys(RG, "mgmt-nst").key1
    endpoint = f"{broker.url}/namespaces/mgmt-nst"
    event = CloudEvent(source="/mgmt", type="Contoso.Orders.Created", data={"orderId": "7"})
    EventGridPublisherClient(endpoint, AzureKeyCredential(key), namespace_topic="events").send(event)
    [request] = subscriber.wait_for_events("/mgmt-nst/push", {event.id})
    [pushed] = request.events()
    assert (pushed["type"], pushed["source"], pushed["data"]) == ("Contoso.Orders.Created", "/mgmt", {"orderId": "7"})
    consumer = EventGridConsumerClient(endpoint, AzureKeyCredential(key), namespace_topic="events", subscription="pull")
    assert [d.event.id for d in consumer.receive(max_events=10, max_wait_time=10)] == [event.id]

    finished(client.namespace_topic_event_subscriptions.begin_delete(RG, "mgmt-nst", "events", "pull"))
    with pytest.raises(ResourceNotFoundError):
        client.namespace_topic_event_subscriptions.get(RG, "mgmt-nst", "events", "pull")
    finished(client.namespace_topics.begin_delete(RG, "mgmt-nst", "events"))
    with pytest.raises(ResourceNotFoundError):
        client.namespace_topics.get(RG, "mgmt-nst", "events")
