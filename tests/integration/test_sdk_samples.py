"""The official azure-eventgrid sample programs, run unchanged against a live broker.

The samples come from the source distribution of the pinned azure-eventgrid on PyPI (fetched once
into the pytest cache, see sample_support.py). Each case creates what its sample needs -- a custom
topic, a custom-schema topic, a domain, a namespace topic with a queue subscription -- sets the
environment variables the sample reads to the broker's endpoint and keys, runs the sample as a child
process, and checks that it exited 0 and that its events reached a subscription (a recording webhook,
or a queue read back with EventGridConsumerClient).

All selected samples start together when the module's broker is up (several of them sleep between
batches), so the module takes about as long as its slowest sample.
"""

from __future__ import annotations

import ast
import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridConsumerClient, generate_sas

from tests.integration.arm_support import Arm, domain_id, domain_topic_id, namespace_id, topic_id
from tests.integration.sample_support import SampleRun, cloudevents_v1, fetch_samples
from tests.integration.sdk_support import (
    DELIVERY_TIMEOUT,
    HOST,
    RecordingSubscriber,
    wire,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

EVENTGRID = "EventGridSchema"
CLOUDEVENTS = "CloudEventSchemaV1_0"
RECEIVE_WAIT = 10  # seconds; the smallest maxWaitTime Azure accepts

# Samples that need services the emulator does not emulate (each file is checked to exist below).
NOT_EMULATED = {
    "basic/sync_samples/sample_publish_to_channel.py": "publishes to a partner namespace channel",
    "basic/async_samples/sample_publish_to_channel_async.py": "publishes to a partner namespace channel",
    "basic/consume_samples/consume_cloud_events_from_eventhub.py": "reads events from Azure Event Hubs",
    "basic/consume_samples/consume_eventgrid_events_from_service_bus_queue.py": "reads events from Azure Service Bus",
    "basic/consume_samples/functionsapp/EventGridTrigger1/__init__.py": "an Azure Functions app, not a program",
    # What it does after its login -- peek Base64 messages and CloudEvent.from_json each -- runs
    # against a StorageQueue subscription on Azurite in test_azurite.py.
    "basic/consume_samples/consume_cloud_events_from_storage_queue.py":
        "logs in to Storage with DefaultAzureCredential (Microsoft Entra ID), which nothing offline can issue",
}


# --------------------------------------------------------------------------------------------------
# What a case has to work with, and what it hands back


@dataclass
class Ctx:
    broker: object  # sdk_support.LiveBroker
    arm: Arm
    subscriber: RecordingSubscriber
    cncf_path: Path
    name: str  # unique per case: resource names and webhook paths derive from it


@dataclass
class Prepared:
    env: dict[str, str]
    check: Callable[[SampleRun], None]
    python_path: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    sample: str  # path under samples/
    prepare: Callable[[Ctx], Prepared]

    @property
    def name(self) -> str:
        """Unique, and a valid resource name (3-50 letters, digits, hyphens): "ns-" marks namespace samples."""
        stem = Path(self.sample).stem.replace("sample_", "").replace("_sample", "").replace("publish_", "")
        name = ("ns-" if self.sample.startswith("namespace/") else "") + stem.replace("_", "-").replace(".", "-")
        return name if len(name) <= 48 else name[:36] + "-" + name[-11:]


# -- delivery checks ---------------------------------------------------------------------------------


def delivered(subscriber: RecordingSubscriber, path: str, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[dict]:
    """The events delivered to `path` once there are at least `count` of them (exactly `count` checked)."""

    def events() -> list[dict]:
        return [e for r in subscriber.received(path, lambda r: r.is_notification) for e in r.events()]

    wait_until(lambda: len(events()) >= count, timeout, f"{count} events delivered to {path}",
               diagnostics=lambda: f"got {len(events())}: {events()}")
    got = events()
    assert len(got) == count, f"expected {count} events at {path}, got {len(got)}: {got}"
    return got


# -- custom topics (the short routes: these work today) ----------------------------------------------


def eventgrid_topic(ctx: Ctx) -> tuple[dict[str, str], str]:
    wired = wire(ctx.broker, ctx.subscriber, ctx.name, EVENTGRID)
    endpoint = ctx.broker.endpoint(wired.topic)
    sas = generate_sas(endpoint, wired.key, datetime.now(UTC) + timedelta(hours=1))
    return {"EVENTGRID_TOPIC_ENDPOINT": endpoint, "EVENTGRID_TOPIC_KEY": wired.key, "EVENTGRID_SAS": sas}, wired.path


def cloudevents_topic(ctx: Ctx) -> tuple[dict[str, str], str]:
    wired = wire(ctx.broker, ctx.subscriber, ctx.name, CLOUDEVENTS)
    return {"EVENTGRID_CLOUD_EVENT_TOPIC_ENDPOINT": ctx.broker.endpoint(wired.topic),
            "EVENTGRID_CLOUD_EVENT_TOPIC_KEY": wired.key}, wired.path


def item_received(ctx: Ctx, topic: Callable, count: int = 1, ids: set[str] | None = None) -> Prepared:
    """Samples that send `count` "Contoso.Items.ItemReceived" events about "Door1"."""
    env, path = topic(ctx)

    def check(run: SampleRun) -> None:
        events = delivered(ctx.subscriber, path, count)
        assert {e.get("eventType", e.get("type")) for e in events} == {"Contoso.Items.ItemReceived"}
        assert {e["subject"] for e in events} == {"Door1"}
        assert all(e["data"]["itemSku"].startswith("Contoso Item SKU #") for e in events)
        if ids is not None:
            assert {e["id"] for e in events} == ids

    return Prepared(env, check)


def eg_item_received(count: int = 1, ids: set[str] | None = None) -> Callable[[Ctx], Prepared]:
    return lambda ctx: item_received(ctx, eventgrid_topic, count, ids)


def ce_item_received(count: int = 1, ids: set[str] | None = None) -> Callable[[Ctx], Prepared]:
    return lambda ctx: item_received(ctx, cloudevents_topic, count, ids)


def cncf_event(ctx: Ctx) -> Prepared:
    env, path = cloudevents_topic(ctx)

    def check(run: SampleRun) -> None:
        [event] = delivered(ctx.subscriber, path, 1)
        assert (event["type"], event["source"], event["subject"]) == ("cloudevent", "/cncf/cloud/event/1.0", "testing-cncf-event")
        assert base64.b64decode(event["data_base64"]) == b"This is a cncf cloud event."

    return Prepared(env, check, [ctx.cncf_path])


def batches(ctx: Ctx, topic: Callable, event_type: str, source: str | None = None) -> Prepared:
    """The publish_samples: a random number of events in three batches, printed per batch."""
    env, path = topic(ctx)

    def check(run: SampleRun) -> None:
        sizes = run.batch_sizes()
        assert len(sizes) == 3, run.output
        events = delivered(ctx.subscriber, path, sum(sizes))
        assert {e.get("eventType", e.get("type")) for e in events} == {event_type}
        assert all(set(e["data"]["team"]) <= {"EventGrid", "ServiceBus", "EventHubs", "Storage"} for e in events)
        if source is not None:
            assert {e["source"] for e in events} == {source}

    return Prepared(env, check)


def sas_sample_token(ctx: Ctx) -> Prepared:
    """sample_generate_sas.py prints a SAS token: the broker must accept it for the topic."""
    env, path = eventgrid_topic(ctx)

    def check(run: SampleRun) -> None:
        token = run.output.strip().splitlines()[-1]
        body = [{"id": f"{ctx.name}-1", "subject": "/sas", "eventType": "T", "eventTime": "2026-01-01T00:00:00Z",
                 "data": {}, "dataVersion": "1"}]
        resp = requests.post(env["EVENTGRID_TOPIC_ENDPOINT"], json=body, headers={"aeg-sas-token": token}, timeout=10)
        assert resp.status_code == 200, resp.text
        ctx.subscriber.wait_for_events(path, {f"{ctx.name}-1"})

    return Prepared(env, check)


def constructs_clients_only(topic: Callable) -> Callable[[Ctx], Prepared]:
    """The authentication samples build clients (key, SAS, DefaultAzureCredential) and send nothing."""

    def prepare(ctx: Ctx) -> Prepared:
        env, _path = topic(ctx)
        return Prepared(env, lambda run: None)

    return prepare


def custom_payload(ctx: Ctx) -> Prepared:
    def check(run: SampleRun) -> None:
        assert "{'team': 'event grid squad'}" in run.output

    return Prepared({}, check)


# -- custom input schema and domains (ARM; issue 16) -----------------------------------------------

# The mapping the samples' fields call for: their custom* names onto the Event Grid schema.
CUSTOM_MAPPING = {
    "id": {"sourceField": "customId"},
    "eventTime": {"sourceField": "customEventTime"},
    "eventType": {"sourceField": "customEventType", "defaultValue": "sample.default"},
    "subject": {"sourceField": "customSubject", "defaultValue": "default"},
    "dataVersion": {"sourceField": "customDataVersion", "defaultValue": "1.0"},
}
CUSTOM_FIELDS = {"customSubject", "customEventType", "customDataVersion", "customId", "customEventTime", "customData"}


def custom_schema(batched: bool) -> Callable[[Ctx], Prepared]:
    def prepare(ctx: Ctx) -> Prepared:
        topic = ctx.arm.create_topic(ctx.name, "CustomEventSchema", CUSTOM_MAPPING)
        key, _ = ctx.arm.list_keys(topic_id(ctx.name))
        mapped, raw = f"/{ctx.name}/mapped", f"/{ctx.name}/raw"
        ctx.arm.subscribe(topic_id(ctx.name), "mapped", ctx.subscriber.url(mapped), delivery_schema=EVENTGRID)
        ctx.arm.subscribe(topic_id(ctx.name), "raw", ctx.subscriber.url(raw), delivery_schema="CustomInputSchema")
        env = {"EVENTGRID_CUSTOM_EVENT_TOPIC_ENDPOINT": topic["properties"]["endpoint"], "EVENTGRID_CUSTOM_EVENT_TOPIC_KEY": key}

        def check(run: SampleRun) -> None:
            count = sum(run.batch_sizes()) if batched else 1
            for event in delivered(ctx.subscriber, raw, count):
                assert set(event) == CUSTOM_FIELDS  # delivered exactly as published
                assert event["customData"] == "sample data"
            for event in delivered(ctx.subscriber, mapped, count):
                original = event["data"]  # Azure: data holds the original event
                assert set(original) == CUSTOM_FIELDS
                assert event["id"] == original["customId"]
                assert event["eventTime"] == original["customEventTime"]
                assert (event["eventType"], event["subject"], event["dataVersion"]) == ("sample.event", "sample", "2.0")
                assert event["topic"] == topic_id(ctx.name)
                assert event["metadataVersion"] == "1"

        return Prepared(env, check)

    return prepare


def eventgrid_domain(ctx: Ctx) -> Prepared:
    """Events naming domain topics MyCustomDomainTopic1 and 2 (created with their first subscription)."""
    domain = ctx.arm.create_domain(ctx.name)
    key, _ = ctx.arm.list_keys(domain_id(ctx.name))
    paths = {}
    for n in (1, 2):
        dt = f"MyCustomDomainTopic{n}"
        paths[dt] = f"/{ctx.name}/{dt}"
        ctx.arm.subscribe(domain_topic_id(ctx.name, dt), "recorder", ctx.subscriber.url(paths[dt]))
    everything = f"/{ctx.name}/domain-scope"
    ctx.arm.subscribe(domain_id(ctx.name), "everything", ctx.subscriber.url(everything))
    env = {"EVENTGRID_DOMAIN_ENDPOINT": domain["properties"]["endpoint"], "EVENTGRID_DOMAIN_KEY": key}

    def check(run: SampleRun) -> None:
        for n, (dt, path) in enumerate(paths.items(), start=1):
            [event] = delivered(ctx.subscriber, path, 1)
            assert event["topic"] == domain_topic_id(ctx.name, dt)
            assert event["data"] == {"itemSku": f"Contoso Item SKU #{n}"}
            assert (event["eventType"], event["subject"], event["dataVersion"]) == ("Contoso.Items.ItemReceived", "Door1", "2.0")
        both = delivered(ctx.subscriber, everything, 2)
        assert sorted(e["topic"] for e in both) == sorted(domain_topic_id(ctx.name, dt) for dt in paths)

    return Prepared(env, check)


def cloudevents_domain(ctx: Ctx) -> Prepared:
    """CloudEvents whose `source` ("domainname") names the domain topic."""
    domain = ctx.arm.create_domain(ctx.name, CLOUDEVENTS)
    key, _ = ctx.arm.list_keys(domain_id(ctx.name))
    path = f"/{ctx.name}/domainname"
    ctx.arm.subscribe(domain_topic_id(ctx.name, "domainname"), "recorder", ctx.subscriber.url(path), delivery_schema=CLOUDEVENTS)
    env = {"EVENTGRID_CLOUD_EVENT_DOMAIN_ENDPOINT": domain["properties"]["endpoint"], "EVENTGRID_CLOUD_EVENT_DOMAIN_KEY": key}

    def check(run: SampleRun) -> None:
        events = delivered(ctx.subscriber, path, sum(run.batch_sizes()))
        assert {e["type"] for e in events} == {"Azure.Sdk.Demo"}
        assert all(e["specversion"] == "1.0" for e in events)

    return Prepared(env, check)


# -- namespaces (issue 17) -------------------------------------------------------------------------


def namespace_queue(ctx: Ctx) -> tuple[dict[str, str], EventGridConsumerClient]:
    """A namespace with one topic and one queue subscription; the env the namespace samples read."""
    ctx.arm.create_namespace(ctx.name)
    ctx.arm.create_namespace_topic(ctx.name, "orders")
    ctx.arm.create_queue_subscription(ctx.name, "orders", "worker")
    key, _ = ctx.arm.list_keys(namespace_id(ctx.name))
    endpoint = f"http://{HOST}:{ctx.broker.service.port}/namespaces/{ctx.name}"
    env = {"EVENTGRID_ENDPOINT": endpoint, "EVENTGRID_KEY": key, "EVENTGRID_TOPIC_NAME": "orders",
           "EVENTGRID_EVENT_SUBSCRIPTION_NAME": "worker", "EVENTGRID_TOPIC_ENDPOINT": endpoint}
    consumer = EventGridConsumerClient(endpoint, AzureKeyCredential(key), namespace_topic="orders", subscription="worker")
    return env, consumer


def receive_all(consumer: EventGridConsumerClient, count: int, timeout: float = 30.0) -> list:
    """Receive until `count` events came (bounded by `timeout`), acknowledging none."""
    got: list = []

    def enough() -> bool:
        got.extend(consumer.receive(max_events=100, max_wait_time=RECEIVE_WAIT))
        return len(got) >= count

    wait_until(enough, timeout, f"{count} events received", interval=0)
    return got


def namespace_published(expect: Callable[[list], None], cncf: bool = False) -> Callable[[Ctx], Prepared]:
    def prepare(ctx: Ctx) -> Prepared:
        env, consumer = namespace_queue(ctx)

        def check(run: SampleRun) -> None:
            [detail] = receive_all(consumer, 1)
            assert detail.broker_properties.delivery_count == 1
            expect([detail.event])

        return Prepared(env, check, [ctx.cncf_path] if cncf else [])

    return prepare


def dict_cloud_event(events: list) -> None:
    [event] = events
    assert (event.id, event.type, event.source, event.subject) == ("randomclouduuid11", "Contoso.Items.ItemReceived", "/contoso/items", "Door1")
    assert event.data == {"itemSku": "Contoso Item SKU #1"}


def cncf_namespace_event(events: list) -> None:
    [event] = events
    assert (event.type, event.source, event.subject) == ("cloudevent", "/cncf/cloud/event/1.0", "testing-cncf-event")
    assert event.data == b"This is a cncf cloud event."


def consume_process(ctx: Ctx) -> Prepared:
    """The sample publishes four events and releases, acknowledges, rejects and renews one each."""
    env, consumer = namespace_queue(ctx)

    def check(run: SampleRun) -> None:
        assert run.output.count("Succeeded Lock Token:") == 4, run.output  # one per operation
        # Only the released event is receivable now (the renewed one is still locked): it comes
        # back counted twice; the acknowledged and the rejected one never come back.
        [again] = receive_all(consumer, 1)
        assert again.event.data == "release"
        assert again.broker_properties.delivery_count == 2

    return Prepared(env, check)


# --------------------------------------------------------------------------------------------------

SYNC, ASYNC, PUBLISH, NAMESPACE_SYNC, NAMESPACE_ASYNC = (
    "basic/sync_samples/", "basic/async_samples/", "basic/publish_samples/", "namespace/sync_samples/", "namespace/async_samples/"
)

CASES = [
    # custom topics, Event Grid schema
    Case(SYNC + "sample_publish_eg_events_to_a_topic.py", eg_item_received()),
    Case(ASYNC + "sample_publish_eg_events_to_a_topic_async.py", eg_item_received()),
    Case(SYNC + "sample_publish_eg_event_using_dict.py", eg_item_received(2, {"randomuuid11", "randomuuid12"})),
    Case(ASYNC + "sample_publish_eg_event_using_dict_async.py", eg_item_received(2, {"randomuuid11", "randomuuid12"})),
    Case(SYNC + "sample_publish_events_to_a_topic_using_sas_credential.py", eg_item_received()),
    Case(ASYNC + "sample_publish_events_to_a_topic_using_sas_credential_async.py", eg_item_received()),
    Case(SYNC + "sample_generate_sas.py", sas_sample_token),
    Case(SYNC + "sample_authentication.py", constructs_clients_only(eventgrid_topic)),
    Case(ASYNC + "sample_authentication_async.py", constructs_clients_only(eventgrid_topic)),
    Case(SYNC + "sample_consume_custom_payload.py", custom_payload),
    Case(PUBLISH + "publish_event_grid_events_to_custom_topic_sample.py", lambda ctx: batches(ctx, eventgrid_topic, "Azure.Sdk.Demo")),
    # custom topics, CloudEvents
    Case(SYNC + "sample_publish_events_using_cloud_events_1.0_schema.py", ce_item_received()),
    Case(ASYNC + "sample_publish_events_using_cloud_events_1.0_schema_async.py", ce_item_received()),
    Case(SYNC + "sample_publish_cloud_event_using_dict.py", ce_item_received(1, {"randomclouduuid11"})),
    Case(ASYNC + "sample_publish_cloud_event_using_dict_async.py", ce_item_received(1, {"randomclouduuid11"})),
    Case(SYNC + "sample_publish_cncf_cloud_events.py", cncf_event),
    Case(ASYNC + "sample_publish_cncf_cloud_events_async.py", cncf_event),
    Case(PUBLISH + "publish_cloud_events_to_custom_topic_sample.py",
         lambda ctx: batches(ctx, cloudevents_topic, "Azure.Sdk.Sample", "https://egsample.dev/sampleevent")),
    Case(PUBLISH + "publish_with_shared_access_signature_sample.py",
         lambda ctx: batches(ctx, cloudevents_topic, "Azure.Sdk.Demo", "https://egdemo.dev/demowithsignature")),
    # custom input schema
    Case(SYNC + "sample_publish_custom_schema_to_a_topic.py", custom_schema(batched=False)),
    Case(ASYNC + "sample_publish_custom_schema_to_a_topic_async.py", custom_schema(batched=False)),
    Case(PUBLISH + "publish_custom_schema_events_to_topic_sample.py", custom_schema(batched=True)),
    # event domains
    Case(SYNC + "sample_publish_eg_events_to_a_domain.py", eventgrid_domain),
    Case(ASYNC + "sample_publish_eg_events_to_a_domain_async.py", eventgrid_domain),
    Case(PUBLISH + "publish_cloud_events_to_domain_topic_sample.py", cloudevents_domain),
    # namespaces
    Case(NAMESPACE_SYNC + "sample_publish_cloud_event.py", namespace_published(dict_cloud_event)),
    Case(NAMESPACE_ASYNC + "sample_publish_cloud_event_async.py", namespace_published(dict_cloud_event)),
    Case(NAMESPACE_SYNC + "sample_publish_cncf_events.py", namespace_published(cncf_namespace_event, cncf=True)),
    Case(NAMESPACE_ASYNC + "sample_publish_cncf_events_async.py", namespace_published(cncf_namespace_event, cncf=True)),
    Case(NAMESPACE_SYNC + "sample_consume_process_events.py", consume_process),
    Case(NAMESPACE_ASYNC + "sample_consume_process_events_async.py", consume_process),
    Case(NAMESPACE_SYNC + "sample_namespace_authentication.py", lambda ctx: Prepared(namespace_queue(ctx)[0], lambda run: None)),
    Case(NAMESPACE_ASYNC + "sample_namespace_authentication_async.py", lambda ctx: Prepared(namespace_queue(ctx)[0], lambda run: None)),
]
BY_NAME = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


# --------------------------------------------------------------------------------------------------
# Fixtures: one broker, one webhook, every selected sample started at once


@pytest.fixture(scope="module")
def samples(request) -> Path:
    return fetch_samples(request.config.cache.mkdir("azure-eventgrid-samples"))


@pytest.fixture(scope="module")
def broker(sdk_broker):
    return sdk_broker


@dataclass
class Launched:
    run: SampleRun | None = None
    prepared: Prepared | None = None
    error: BaseException | None = None


@pytest.fixture(scope="module")
def launched(request, samples, broker, subscriber, tmp_path_factory) -> Iterator[dict[str, Launched]]:
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params]
    cncf = cloudevents_v1(request.config.cache.mkdir("cloudevents-v1")) if selected else Path()
    arm = Arm(broker.url)
    logs = tmp_path_factory.mktemp("sample-logs")
    runs: dict[str, Launched] = {}
    for case in selected:
        entry = runs.setdefault(case.name, Launched())
        try:
            entry.prepared = case.prepare(Ctx(broker, arm, subscriber, cncf, case.name))
            env = dict(entry.prepared.env)
            if entry.prepared.python_path:
                env["PYTHONPATH"] = ":".join(map(str, entry.prepared.python_path))
            entry.run = SampleRun(samples / case.sample, env).start(logs)
        except Exception as exc:  # this case fails in its own test; the others still run
            entry.error = exc
    yield runs
    for entry in runs.values():
        if entry.run is not None:
            entry.run.kill()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_official_sample_runs_unchanged_and_its_events_arrive(case, launched):
    entry = launched[case.name]
    if entry.error is not None:
        raise AssertionError(f"setting up {case.sample} failed: {entry.error!r}") from entry.error
    run = entry.run.wait()
    run.assert_succeeded()
    entry.prepared.check(run)


def test_every_sample_is_run_or_skipped_with_a_reason(samples):
    # A newer sdist that adds a sample fails here until the sample gets a case (or a reason).
    programs = {str(p.relative_to(samples)) for p in samples.rglob("*.py") if p.parts[len(samples.parts)] in ("basic", "namespace")}
    covered = {case.sample for case in CASES} | set(NOT_EMULATED)
    assert programs - covered == set()
    assert covered - programs == set(), "cases name samples the sdist no longer has"
    for sample in covered:  # every listed sample is a Python program
        ast.parse((samples / sample).read_text())
