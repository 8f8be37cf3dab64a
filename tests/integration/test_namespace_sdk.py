"""Namespace topics with queue subscriptions through the official EventGridConsumerClient (issue 17).

The broker runs at a compressed time scale (BROKER_TIME_SCALE): a 60 s lock lasts 60 x SCALE s, a
60 s release delay the same, so lock expiry, release delays and time to live are observed for real
in seconds. Each test makes its own namespace topic and queue subscription through the ARM routes and
talks to `http://127.0.0.1:PORT/namespaces/{ns}` with the namespace's key, exactly as an application
talks to `https://{ns}.{region}-1.eventgrid.azure.net`.

Where time must pass (a lock that runs out) the test waits a bounded, measured pause; everywhere else
it waits for a condition.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridConsumerClient, EventGridPublisherClient, generate_sas

from tests.integration.arm_support import Arm, namespace_id
from tests.integration.processes import free_port
from tests.integration.sdk_support import HOST, new_key
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SCALE = 0.05  # BROKER_TIME_SCALE of the module's broker
LOCK = 60  # seconds, Azure's default and minimum receiveLockDurationInSeconds
RECEIVE_WAIT = 10  # seconds, Azure's minimum maxWaitTime
NAMESPACE = "ns-sdk-tests"
SLACK = 0.8  # a measured wait may come out this much shorter than scheduled (timer granularity)


def pause(seconds: float) -> None:
    """Let time pass on purpose (a lock or delay must run out); bounded by its argument."""
    threading.Event().wait(seconds)


@dataclass
class Queue:
    topic: str
    subscription: str
    endpoint: str
    key: str

    @property
    def publisher(self) -> EventGridPublisherClient:
        return EventGridPublisherClient(self.endpoint, AzureKeyCredential(self.key), namespace_topic=self.topic)

    @property
    def consumer(self) -> EventGridConsumerClient:
        return EventGridConsumerClient(self.endpoint, AzureKeyCredential(self.key), namespace_topic=self.topic,
                                       subscription=self.subscription)

    def publish(self, count: int = 1, event_type: str = "Contoso.Orders.Created") -> list[CloudEvent]:
        events = [CloudEvent(source="/contoso/orders", type=event_type, data={"n": n}, extensions={"tenant": "contoso"})
                  for n in range(count)]
        self.publisher.send(events)
        return events

    def receive(self, count: int, timeout: float = 20.0) -> list:
        """Receive until `count` events came, bounded by `timeout` (settling none)."""
        got: list = []
        consumer = self.consumer

        def enough() -> bool:
            got.extend(consumer.receive(max_events=100, max_wait_time=RECEIVE_WAIT))
            return len(got) >= count

        wait_until(enough, timeout, f"{count} events from {self.topic}/{self.subscription}", interval=0)
        return got

    def nothing_left(self, sentinel_type: str = "Sentinel") -> bool:
        """No event is receivable now. Checked with a sentinel rather than an empty receive (which
        lasts maxWaitTime): a receive hands out every available event at once, so if the sentinel
        published now comes alone, nothing else was there."""
        [sentinel] = self.publish(1, sentinel_type)
        got = self.receive(1)
        self.consumer.acknowledge(lock_tokens=tokens(got))
        return ids(got) == [sentinel.id]


def ids(details: list) -> list[str]:
    return [d.event.id for d in details]


def tokens(details: list) -> list[str]:
    return [d.broker_properties.lock_token for d in details]


def start(processes, name: str, time_scale: float):
    port = free_port()
    return processes.broker(name, port=port, time_scale=time_scale, BROKER_PUBLIC_URL=f"http://{HOST}:{port}",
                            LOG_LEVEL="WARNING")


@pytest.fixture(scope="module")
def broker(module_processes):
    return start(module_processes, "broker", SCALE)


@pytest.fixture(scope="module")
def namespace(broker) -> tuple[Arm, str, str]:
    arm = Arm(broker.url)
    arm.create_namespace(NAMESPACE)
    key, _ = arm.list_keys(namespace_id(NAMESPACE))
    return arm, f"{broker.url}/namespaces/{NAMESPACE}", key


@pytest.fixture
def queue(namespace) -> Iterator:
    """A factory of fresh topic + queue subscription pairs, named after the test."""
    arm, endpoint, key = namespace
    made = []

    def make(**options) -> Queue:
        topic = f"t{len(made)}-{uuid.uuid4().hex[:8]}"
        arm.create_namespace_topic(NAMESPACE, topic)
        arm.create_queue_subscription(NAMESPACE, topic, "worker", **options)
        made.append(topic)
        return Queue(topic, "worker", endpoint, key)

    yield make


# -- receive and acknowledge -----------------------------------------------------------------------


def test_receive_returns_the_published_events_each_locked_with_delivery_count_one(queue):
    q = queue()
    sent = q.publish(3)

    got = q.receive(3)

    assert sorted(ids(got)) == sorted(e.id for e in sent)
    assert len(set(tokens(got))) == 3
    assert {d.broker_properties.delivery_count for d in got} == {1}
    by_id = {d.event.id: d.event for d in got}
    for event in sent:
        received = by_id[event.id]
        assert (received.source, received.type, received.data, received.extensions) == (
            event.source, event.type, event.data, {"tenant": "contoso"})


def test_receive_hands_out_at_most_max_events(queue):
    q = queue()
    q.publish(5)

    first = q.consumer.receive(max_events=2, max_wait_time=RECEIVE_WAIT)

    assert len(first) == 2
    rest = q.receive(3)
    assert len(set(ids(first) + ids(rest))) == 5


def test_acknowledged_events_are_gone_and_their_tokens_fail_afterwards(queue):
    q = queue()
    q.publish(2)
    got = q.receive(2)

    result = q.consumer.acknowledge(lock_tokens=tokens(got))

    assert sorted(result.succeeded_lock_tokens) == sorted(tokens(got))
    assert result.failed_lock_tokens == []
    again = q.consumer.acknowledge(lock_tokens=tokens(got))
    assert again.succeeded_lock_tokens == []
    assert sorted(f.lock_token for f in again.failed_lock_tokens) == sorted(tokens(got))
    assert all(f.error.code and f.error.message for f in again.failed_lock_tokens)
    assert q.nothing_left()


def test_an_unknown_lock_token_is_a_failed_token_not_an_http_error(queue):
    q = queue()
    q.publish(1)
    [detail] = q.receive(1)

    result = q.consumer.acknowledge(lock_tokens=[detail.broker_properties.lock_token, "not-a-lock-token"])

    assert result.succeeded_lock_tokens == [detail.broker_properties.lock_token]
    [failed] = result.failed_lock_tokens
    assert failed.lock_token == "not-a-lock-token"
    assert failed.error.code


# -- release ---------------------------------------------------------------------------------------


def test_released_event_comes_back_at_once_counted_twice_and_its_old_token_fails(queue):
    q = queue()
    [event] = q.publish(1)
    [first] = q.receive(1)

    assert q.consumer.release(lock_tokens=tokens([first])).succeeded_lock_tokens == tokens([first])

    [second] = q.receive(1, timeout=RECEIVE_WAIT + 5)
    assert second.event.id == event.id
    assert second.broker_properties.delivery_count == 2
    assert second.broker_properties.lock_token != first.broker_properties.lock_token
    assert [f.lock_token for f in q.consumer.acknowledge(lock_tokens=tokens([first])).failed_lock_tokens] == tokens([first])
    assert q.consumer.acknowledge(lock_tokens=tokens([second])).succeeded_lock_tokens == tokens([second])


def test_release_with_a_delay_hides_the_event_until_the_delay_has_passed(queue):
    q = queue()
    [event] = q.publish(1)
    [first] = q.receive(1)

    released_at = time.monotonic()
    assert q.consumer.release(lock_tokens=tokens([first]), release_delay=60).succeeded_lock_tokens == tokens([first])

    [second] = q.receive(1, timeout=60 * SCALE + RECEIVE_WAIT + 5)
    assert time.monotonic() - released_at >= SLACK * 60 * SCALE
    assert (second.event.id, second.broker_properties.delivery_count) == (event.id, 2)


@pytest.mark.parametrize("delay", [5, 30, 7200])
def test_release_delay_other_than_azures_values_is_a_400(queue, delay):
    q = queue()
    q.publish(1)
    [detail] = q.receive(1)

    with pytest.raises(HttpResponseError) as refused:
        q.consumer.release(lock_tokens=tokens([detail]), release_delay=delay)

    assert refused.value.status_code == 400
    assert refused.value.error.code
    # Refused as a whole: the lock is untouched.
    assert q.consumer.acknowledge(lock_tokens=tokens([detail])).succeeded_lock_tokens == tokens([detail])


# -- locks -----------------------------------------------------------------------------------------


def test_expired_lock_makes_the_event_receivable_again_and_the_old_token_fails(queue):
    q = queue(lock_seconds=LOCK)
    [event] = q.publish(1)
    [first] = q.receive(1)
    received_at = time.monotonic()

    [second] = q.receive(1, timeout=LOCK * SCALE + RECEIVE_WAIT + 5)

    assert time.monotonic() - received_at >= SLACK * LOCK * SCALE
    assert (second.event.id, second.broker_properties.delivery_count) == (event.id, 2)
    failed = q.consumer.acknowledge(lock_tokens=tokens([first])).failed_lock_tokens
    assert [f.lock_token for f in failed] == tokens([first])
    assert q.consumer.acknowledge(lock_tokens=tokens([second])).succeeded_lock_tokens == tokens([second])


def test_renewed_lock_outlasts_its_first_expiry(queue):
    q = queue(lock_seconds=LOCK)
    q.publish(1)
    [detail] = q.receive(1)
    received_at = time.monotonic()
    lock = LOCK * SCALE

    pause(max(0.0, received_at + 0.6 * lock - time.monotonic()))
    assert q.consumer.renew_locks(lock_tokens=tokens([detail])).succeeded_lock_tokens == tokens([detail])
    pause(max(0.0, received_at + 1.3 * lock - time.monotonic()))  # past the first expiry, within the renewed one

    assert q.consumer.acknowledge(lock_tokens=tokens([detail])).succeeded_lock_tokens == tokens([detail])
    assert q.nothing_left()


def test_renewing_an_unknown_lock_is_a_failed_token(queue):
    q = queue()

    result = q.consumer.renew_locks(lock_tokens=["not-a-lock-token"])

    assert result.succeeded_lock_tokens == []
    assert [f.lock_token for f in result.failed_lock_tokens] == ["not-a-lock-token"]


# -- reject, delivery count, time to live ----------------------------------------------------------


def test_rejected_event_is_never_received_again(queue):
    q = queue()
    [event] = q.publish(1)
    [detail] = q.receive(1)

    assert q.consumer.reject(lock_tokens=tokens([detail])).succeeded_lock_tokens == tokens([detail])

    assert q.nothing_left()  # no dead-letter destination: dropped
    assert [f.lock_token for f in q.consumer.release(lock_tokens=tokens([detail])).failed_lock_tokens] == tokens([detail])


def test_event_released_more_than_max_delivery_count_times_is_dropped(queue):
    q = queue(max_delivery_count=2)
    [event] = q.publish(1)

    for count in (1, 2):
        [detail] = q.receive(1, timeout=RECEIVE_WAIT + 5)
        assert (detail.event.id, detail.broker_properties.delivery_count) == (event.id, count)
        assert q.consumer.release(lock_tokens=tokens([detail])).succeeded_lock_tokens == tokens([detail])

    assert q.nothing_left()


def test_event_older_than_the_subscription_time_to_live_is_not_received(queue):
    q = queue(time_to_live="PT1M")  # Azure's minimum: 1 minute, here 60 x SCALE s
    q.publish(1)
    published_at = time.monotonic()

    pause(max(0.0, published_at + 1.5 * 60 * SCALE - time.monotonic()))

    assert q.nothing_left()


# -- filters, parameters, limits, auth -------------------------------------------------------------


def test_included_event_types_filter_what_a_queue_subscription_holds(namespace):
    arm, endpoint, key = namespace
    topic = f"filtered-{uuid.uuid4().hex[:8]}"
    arm.create_namespace_topic(NAMESPACE, topic)
    arm.create_queue_subscription(NAMESPACE, topic, "worker", filtersConfiguration={"includedEventTypes": ["Wanted"]})
    q = Queue(topic, "worker", endpoint, key)
    q.publish(2, "Unwanted")
    [wanted] = q.publish(1, "Wanted")

    got = q.receive(1)

    assert ids(got) == [wanted.id]
    q.consumer.acknowledge(lock_tokens=tokens(got))
    assert q.nothing_left("Wanted")  # the sentinel must pass the filter too


@pytest.mark.parametrize(("max_events", "max_wait_time"), [(0, 10), (101, 10), (1, 9), (1, 121)])
def test_receive_parameters_outside_azures_ranges_are_a_400(queue, max_events, max_wait_time):
    q = queue()

    with pytest.raises(HttpResponseError) as refused:
        q.consumer.receive(max_events=max_events, max_wait_time=max_wait_time)

    assert refused.value.status_code == 400
    assert refused.value.error.code


def test_more_than_1000_events_or_1_mb_in_one_publish_is_refused_whole(queue):
    q = queue()
    url = f"{q.endpoint}/topics/{q.topic}:publish"
    headers = {"Authorization": f"SharedAccessKey {q.key}", "Content-Type": "application/cloudevents-batch+json; charset=utf-8"}

    def batch(count: int, size: int = 10) -> list[dict]:
        return [{"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/limits", "type": "T", "data": "x" * size}
                for _ in range(count)]

    too_many = requests.post(url, params={"api-version": "2024-06-01"}, json=batch(1001), headers=headers, timeout=30)
    too_big = requests.post(url, params={"api-version": "2024-06-01"}, json=batch(2, 600_000), headers=headers, timeout=30)
    at_limit = requests.post(url, params={"api-version": "2024-06-01"}, json=batch(1000), headers=headers, timeout=30)

    assert too_many.status_code in (400, 413), too_many.text
    assert too_big.status_code == 413, too_big.text
    assert too_many.json()["error"]["code"]
    assert too_big.json()["error"]["code"]
    assert at_limit.status_code == 200, at_limit.text
    assert len(q.receive(1000, timeout=60)) == 1000  # only the accepted batch is there


def test_a_sas_token_of_the_namespace_key_publishes_and_receives_over_rest(queue):
    # The Python SDK refuses SAS credentials for namespaces; the REST API takes them (as Azure's does).
    q = queue()
    base = f"{q.endpoint}/topics/{q.topic}"
    token = generate_sas(base, q.key, datetime.now(UTC) + timedelta(minutes=10))
    auth = {"Authorization": f"SharedAccessSignature {token}"}
    event = {"specversion": "1.0", "id": "sas-1", "source": "/orders", "type": "Contoso.Orders.Created", "data": {}}
    published = requests.post(f"{base}:publish?api-version=2024-06-01", json=event, timeout=10,
                              headers={**auth, "Content-Type": "application/cloudevents+json; charset=utf-8"})
    assert published.status_code == 200, published.text
    received = requests.post(f"{base}/eventsubscriptions/{q.subscription}:receive?api-version=2024-06-01&maxEvents=1&maxWaitTime=10",
                             headers=auth, timeout=20)
    assert received.status_code == 200 and [v["event"]["id"] for v in received.json()["value"]] == ["sas-1"]
    forged = generate_sas(base, new_key(), datetime.now(UTC) + timedelta(minutes=10))
    refused = requests.post(f"{base}:publish?api-version=2024-06-01", json=event, timeout=10,
                            headers={"Authorization": f"SharedAccessSignature {forged}", "Content-Type": "application/cloudevents+json"})
    assert refused.status_code == 401


def test_wrong_key_is_refused_with_401_for_publish_and_receive(queue):
    q = queue()
    wrong = Queue(q.topic, q.subscription, q.endpoint, new_key())

    with pytest.raises(ClientAuthenticationError) as publish:
        wrong.publish(1)
    with pytest.raises(ClientAuthenticationError) as receive:
        wrong.consumer.receive(max_events=1, max_wait_time=RECEIVE_WAIT)

    assert publish.value.status_code == receive.value.status_code == 401
    assert q.nothing_left()


def test_receive_waits_for_an_event_published_while_it_waits(processes):
    # A broker at Azure's own time scale, so maxWaitTime is the full 30 s here.
    broker = start(processes, "longpoll", 1.0)
    arm = Arm(broker.url)
    arm.create_namespace("ns-longpoll")
    arm.create_namespace_topic("ns-longpoll", "orders")
    arm.create_queue_subscription("ns-longpoll", "orders", "worker")
    key, _ = arm.list_keys(namespace_id("ns-longpoll"))
    q = Queue("orders", "worker", f"{broker.url}/namespaces/ns-longpoll", key)
    result: dict = {}

    def long_poll() -> None:
        started = time.monotonic()
        result["events"] = q.consumer.receive(max_events=10, max_wait_time=30)
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=long_poll, daemon=True)
    waiter.start()
    pause(1.0)  # the receive is waiting on the broker by now
    [event] = q.publish(1)
    waiter.join(35)

    assert not waiter.is_alive()
    assert ids(result["events"]) == [event.id]
    assert result["took"] < 10  # answered when the event came, not at maxWaitTime


# -- durability ------------------------------------------------------------------------------------


def test_kill_9_loses_no_unacknowledged_event_and_brings_back_no_acknowledged_one(processes):
    service = start(processes, "crash", SCALE)
    arm = Arm(service.url)
    arm.create_namespace("ns-crash")
    arm.create_namespace_topic("ns-crash", "orders")
    arm.create_queue_subscription("ns-crash", "orders", "worker", lock_seconds=LOCK)
    key, _ = arm.list_keys(namespace_id("ns-crash"))
    q = Queue("orders", "worker", f"{service.url}/namespaces/ns-crash", key)
    sent = q.publish(6)
    received = q.consumer.receive(max_events=4, max_wait_time=RECEIVE_WAIT)
    assert len(received) == 4
    acknowledged, locked = received[:2], received[2:]
    assert sorted(q.consumer.acknowledge(lock_tokens=tokens(acknowledged)).succeeded_lock_tokens) == sorted(tokens(acknowledged))
    never_received = {e.id for e in sent} - set(ids(received))

    service.kill()  # SIGKILL right after the acknowledge was answered
    service.start()  # same port, same data dir

    # The two never received come at once; the two that were locked when the lock runs out.
    back = q.receive(4, timeout=LOCK * SCALE + 3 * RECEIVE_WAIT)
    assert sorted(ids(back)) == sorted(never_received | set(ids(locked)))
    assert all(d.broker_properties.delivery_count == (2 if d.event.id in ids(locked) else 1) for d in back)
    assert sorted(q.consumer.acknowledge(lock_tokens=tokens(back)).succeeded_lock_tokens) == sorted(tokens(back))
    assert q.nothing_left()  # the acknowledged two never come back
