"""Azure Event Grid's retry policy, observed from a real webhook against a real broker process.

BROKER_TIME_SCALE=0.01 turns Azure's 10 s / 30 s / 1 min schedule into 0.1 / 0.3 / 0.6 s and a
one-minute time-to-live into 0.6 s, so the whole policy plays out in seconds.
"""

from __future__ import annotations

import time

import pytest

from broker.retry import JITTER, SCHEDULE_SECONDS
from tests.integration.processes import Broker, always, event, fail_first, hang, subscription

pytestmark = pytest.mark.integration

SCALE = 0.01
# Allowance on top of the jitter for the broker's own work between an answer and the next request:
# the retry's commit (up to 10 ms, a lazy write) and the dispatcher's claim. A retry that waited
# for the dispatcher's idle second, as it once did, misses this by far.
SLACK_SECONDS = 0.025


@pytest.fixture(scope="module")
def broker(module_processes):
    # The response timeout (unscaled) is what a healthy subscriber stuck behind a hanging one would wait.
    return Broker.of(module_processes.broker(time_scale=SCALE, BROKER_DELIVERY_TIMEOUT=10))


def test_a_failing_subscriber_is_retried_on_azures_schedule_until_it_succeeds(broker, webhook):
    assert SCHEDULE_SECONDS[:3] == (10, 30, 60)  # Azure's documented first waits
    failures = 3
    hook = webhook(fail_first(failures, status=500))
    broker.subscribe("retry-schedule", "flaky", subscription(hook.url))
    [event_id] = broker.publish_ok([event()], topic="retry-schedule")

    got = hook.wait_for(lambda r: len(r) > failures and r, 15, "the successful attempt")
    assert [r.status for r in got] == [500, 500, 500, 200]
    assert [r.delivery_count for r in got] == [0, 1, 2, 3]
    assert all(r.event_ids == [event_id] for r in got)
    for n, (before, after) in enumerate(zip(got, got[1:], strict=False), start=1):
        wait = SCHEDULE_SECONDS[n - 1] * SCALE
        gap = after.at - before.at
        assert wait * (1 - JITTER) <= gap <= wait * (1 + JITTER) + SLACK_SECONDS, (
            f"retry {n} came {gap:.3f}s after the previous attempt; the schedule says {wait:.3f}s +/- {JITTER:.0%}")
    assert broker.wait_settled("retry-schedule", "flaky", 1) == {"delivered": 1}
    assert hook.quiet_for(0.3, len(got)), "a delivered event was sent again"


def test_deliveries_carry_azures_headers_and_envelope(broker, webhook):
    hook = webhook()
    broker.subscribe("retry-headers", "Mixed-Case-Sub", subscription(hook.url))
    sent = event("Shop.OrderPlaced", {"orderId": "h-1"}, subject="/orders/h-1", data_version="2.0")
    broker.publish_ok([sent], topic="retry-headers")

    [delivery] = hook.wait_for(lambda r: r, 10, "the delivery")
    assert delivery.headers["aeg-event-type"] == "Notification"
    assert delivery.headers["aeg-subscription-name"] == "MIXED-CASE-SUB"
    assert delivery.headers["aeg-delivery-count"] == "0"
    assert delivery.headers["aeg-data-version"] == "2.0"
    assert delivery.headers["aeg-metadata-version"] == "1"
    assert delivery.headers["content-type"].startswith("application/json")
    [got] = delivery.events  # Event Grid schema deliveries are always an array
    assert got == {
        "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/eventgrid-emulator"
                 "/providers/Microsoft.EventGrid/topics/retry-headers",
        "subject": "/orders/h-1", "eventType": "Shop.OrderPlaced", "eventTime": sent["eventTime"],
        "id": sent["id"], "data": {"orderId": "h-1"}, "dataVersion": "2.0", "metadataVersion": "1",
    }


@pytest.mark.parametrize(("status", "reason"), [
    (400, "BadRequest"), (401, "Unauthorized"), (403, "Forbidden"), (413, "RequestEntityTooLarge"),
])
def test_a_non_retryable_answer_dead_letters_after_exactly_one_attempt(broker, webhook, status, reason):
    topic = f"retry-reject-{status}"
    hook = webhook(always(status))
    broker.subscribe(topic, "rejecting", subscription(hook.url, dead_letter=True))
    [event_id] = broker.publish_ok([event()], topic=topic)

    page = broker.wait_dead_letters(topic, "rejecting", 1)
    [record] = page["value"]
    assert record["id"] == event_id
    assert record["deadLetterReason"] == reason
    assert record["deliveryAttempts"] == 1
    assert record["lastHttpStatusCode"] == status
    assert len(hook.deliveries()) == 1
    assert hook.quiet_for(0.3, 1), f"HTTP {status} was retried"


def test_a_subscriber_failing_every_attempt_is_dead_lettered_when_attempts_run_out(broker, webhook):
    hook = webhook(always(500))
    broker.subscribe("retry-exhausted", "broken", subscription(hook.url, dead_letter=True, max_attempts=3))
    [event_id] = broker.publish_ok([event()], topic="retry-exhausted")

    [record] = broker.wait_dead_letters("retry-exhausted", "broken", 1)["value"]
    assert record["id"] == event_id
    assert record["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
    assert record["deliveryAttempts"] == 3
    assert record["lastHttpStatusCode"] == 500
    assert record["lastDeliveryOutcome"] == "GenericError"
    assert [r.delivery_count for r in hook.deliveries()] == [0, 1, 2]
    assert hook.quiet_for(0.3, 3)


def test_an_event_past_its_time_to_live_is_dead_lettered_as_expired(broker, webhook):
    hook = webhook(always(500))
    # One minute is 0.6 s at this scale: attempts at 0, 0.1 and 0.4 s, then the next falls past it.
    broker.subscribe("retry-ttl", "expiring", subscription(hook.url, dead_letter=True, ttl_minutes=1))
    published = time.time()
    [event_id] = broker.publish_ok([event()], topic="retry-ttl")

    [record] = broker.wait_dead_letters("retry-ttl", "expiring", 1)["value"]
    assert record["id"] == event_id
    assert record["deadLetterReason"] == "TimeToLiveExceeded"
    assert 1 <= record["deliveryAttempts"] < 30
    assert record["lastHttpStatusCode"] == 500
    [row] = broker.query("SELECT created_at, expires_at, done_at FROM named_deliveries WHERE subscription_name='expiring'")
    ttl = 60 * SCALE
    assert row["expires_at"] - row["created_at"] == pytest.approx(ttl, abs=1e-6)
    assert row["done_at"] >= row["created_at"] + ttl, "dead-lettered before the time-to-live ran out"
    assert row["done_at"] - published < ttl + SLACK_SECONDS + 1.0


@pytest.mark.parametrize(("script", "reason", "attempts"), [
    (always(400), "BadRequest", 1),
    (always(503), "MaxDeliveryAttemptsExceeded", 2),
], ids=["rejected", "attempts-exhausted"])
def test_without_a_dead_letter_destination_a_failed_event_is_dropped(broker, webhook, script, reason, attempts):
    topic = f"retry-drop-{attempts}"
    hook = webhook(script)
    broker.subscribe(topic, "no-dead-letter", subscription(hook.url, max_attempts=2))
    [event_id] = broker.publish_ok([event()], topic=topic)

    assert broker.wait_settled(topic, "no-dead-letter", 1) == {"dropped": 1}
    [row] = broker.query("SELECT attempts, dead_letter_reason FROM named_deliveries WHERE topic_name=?", (topic,))
    assert row == {"attempts": attempts, "dead_letter_reason": reason}
    assert broker.dead_letters(topic, "no-dead-letter") == {"value": [], "count": 0}
    assert len(hook.deliveries()) == attempts
    assert not list((broker.data_dir / "deadletter").glob(f"{topic}/**/*.json")), "a dropped event was written as a dead-letter blob"
    assert hook.for_event(event_id)


def test_a_dead_or_hanging_subscriber_does_not_hold_back_a_healthy_one(broker, webhook):
    hanging = webhook(hang(30))  # answers only when the broker's 5 s timeout has long given up
    refused = webhook(start=False)  # nothing listens on its port
    healthy = webhook()
    for name, hook in (("hanging", hanging), ("refused", refused), ("healthy", healthy)):
        broker.subscribe("retry-isolation", name, subscription(hook.url, skip_validation=True))

    published = {}
    for n in range(20):
        sent = event(data={"n": n})
        broker.publish_ok([sent], topic="retry-isolation")
        published[sent["id"]] = time.time()
    healthy.wait_for_ids(set(published), 10)

    latencies = sorted(r.wall - published[r.event_ids[0]] for r in healthy.deliveries())
    assert len(latencies) == 20
    # Unhindered, a local delivery takes milliseconds; a healthy subscriber queued behind the hanging
    # one would wait for the 10 s response timeout.
    shown = [round(x, 3) for x in latencies]
    assert latencies[10] < 0.5 and latencies[-1] < 2.0, f"healthy subscriber latencies (s): {shown}"
    # The hanging subscriber holds at most its concurrency share (4) of requests.
    assert 1 <= len(hanging.deliveries()) <= 4
    # In the store they stay in flight (with those claimed ahead for the next requests), not lost.
    assert broker.statuses("retry-isolation", "hanging")["inflight"] >= len(hanging.deliveries())
    assert broker.statuses("retry-isolation", "refused")["pending"] >= 1  # refused, and kept for a retry
