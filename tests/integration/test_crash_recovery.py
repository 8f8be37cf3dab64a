"""At-least-once across crashes: the broker process is SIGKILLed (no shutdown code runs) and
restarted on the same data directory, and every event it had accepted still reaches its end.

Duplicates are allowed by at-least-once delivery and are counted (printed with -s); a lost event
is never allowed.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests

from tests.integration.processes import (
    Broker,
    Reply,
    always,
    event,
    hang,
    subscription,
    wait_until,
)

pytestmark = pytest.mark.integration

SCALE = 0.01


def kill_and_restart(service) -> None:
    service.kill()
    assert not service.running
    service.start()  # same port, same BROKER_DATA_DIR


def duplicates(ids: list[str]) -> dict[str, int]:
    return {i: n for i, n in Counter(ids).items() if n > 1}


class Publisher(threading.Thread):
    """Publishes batches of events until `total` are accepted or the broker stops answering."""

    def __init__(self, url: str, total: int, batch: int) -> None:
        super().__init__(name="publisher", daemon=True)
        self.url, self.total, self.batch = url, total, batch
        self.accepted: list[str] = []
        self.unanswered: list[str] = []  # the batch in flight when the broker died: stored or not, whole
        self.lock = threading.Lock()

    def run(self) -> None:
        with requests.Session() as session:
            while len(self.accepted) < self.total:
                events = [event(data={"n": len(self.accepted) + i}) for i in range(self.batch)]
                try:
                    resp = session.post(self.url + "/api/events", json=events, timeout=5)
                except requests.RequestException:
                    self.unanswered = [e["id"] for e in events]
                    return
                assert resp.status_code == 200, resp.text
                with self.lock:
                    self.accepted += [e["id"] for e in events]

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def test_events_accepted_before_a_kill_9_are_all_delivered_after_restart(processes, webhook):
    hook = webhook(start=False)  # the subscriber is down: every attempt is refused and rescheduled
    service = processes.broker(time_scale=SCALE)
    broker = Broker.of(service)
    broker.subscribe("default", "down-subscriber", subscription(hook.url, skip_validation=True))

    publisher = Publisher(service.url, total=300, batch=10)
    publisher.start()
    wait_until(lambda: publisher.count() >= 100, 20, "100 accepted events")
    service.kill()  # mid-stream: the publisher is still sending
    publisher.join(10)
    assert not publisher.is_alive()
    accepted = list(publisher.accepted)
    stored = {r["event_id"] for r in broker.query("SELECT event_id FROM events")}
    assert set(accepted) <= stored, "an event acknowledged with 200 is not in the store"
    half_stored = set(publisher.unanswered) & stored
    assert half_stored in (set(), set(publisher.unanswered)), "a batch was stored in part"

    service.start()
    hook.start()
    hook.wait_for_ids(stored, 30)
    broker.wait_settled("default", "down-subscriber", len(stored), timeout=10)
    delivered = hook.ids()
    assert set(delivered) == stored
    dups = duplicates(delivered)
    print(f"accepted {len(accepted)} (+{len(half_stored)} whose answer was cut off); "
          f"{len(delivered)} deliveries, {len(dups)} duplicates")
    assert not dups, f"no delivery was answered before the crash, yet some came twice: {dups}"


def test_deliveries_in_flight_at_a_kill_9_are_sent_again_after_restart(processes, webhook):
    hook = webhook(hang(30))  # holds every request: deliveries are in flight when the broker dies
    service = processes.broker(time_scale=SCALE, BROKER_SUBSCRIPTION_CONCURRENCY=4)
    broker = Broker.of(service)
    broker.subscribe("default", "slow-subscriber", subscription(hook.url, skip_validation=True))
    ids = broker.publish_ok([event(data={"n": n}) for n in range(20)])
    # A subscriber that has not answered yet is sent one request at a time (Lane.window).
    held = hook.wait_for(lambda r: len(r) >= 1 and r, 10, "a request held open")
    # The request on the wire, plus whatever the dispatcher claimed ahead for its next ones.
    assert wait_until(lambda: broker.statuses("default", "slow-subscriber")["inflight"] >= 2, 5, "deliveries in flight")

    service.kill()
    hook.release()  # whatever the dead broker was waiting for is never answered
    hook.respond(always(200))
    service.start()
    hook.wait_for_ids(ids, 15)
    assert broker.wait_settled("default", "slow-subscriber", 20) == {"delivered": 20}
    answered = hook.ids()
    assert sorted(answered) == sorted(ids), f"duplicates: {duplicates(answered)}"
    interrupted = {i for r in held[:1] for i in r.event_ids}
    for event_id in interrupted:
        # No attempt was recorded before the crash, so the resend is still attempt 0.
        assert [r.delivery_count for r in hook.for_event(event_id)] == [0, 0]


def test_a_kill_9_during_retries_keeps_the_schedule_and_every_event_ends_delivered_or_dead_lettered(processes, webhook):
    scale = 0.05  # waits of 0.5 s then 1.5 s: room to kill the broker inside each of them

    def script(request, n) -> Reply:  # even events fail once then succeed, odd ones always fail
        return Reply(500) if request.events[0]["data"]["n"] % 2 or n == 1 else Reply(200)

    hook = webhook(script)
    service = processes.broker(time_scale=scale)
    broker = Broker.of(service)
    broker.subscribe("default", "flaky", subscription(hook.url, dead_letter=True, max_attempts=3))
    sent = [event(data={"n": n}) for n in range(20)]
    broker.publish_ok(sent)
    odd = {e["id"] for e in sent if e["data"]["n"] % 2}
    even = {e["id"] for e in sent} - odd

    def attempts_at_least(k: int, which: set[str]) -> bool:
        rows = broker.query("SELECT e.event_id, d.attempts FROM deliveries d JOIN events e ON e.seq=d.event_seq")
        return all(r["attempts"] >= k for r in rows if r["event_id"] in which)

    wait_until(lambda: attempts_at_least(1, odd | even), 10, "every first attempt to be recorded")
    kill_and_restart(service)  # while the 0.5 s retries are pending
    wait_until(lambda: attempts_at_least(2, odd), 10, "the odd events' second attempts")
    kill_and_restart(service)  # while the 1.5 s retries are pending

    counts = broker.wait_settled("default", "flaky", 20, timeout=20)
    assert counts == {"delivered": 10, "deadlettered": 10}, "an event vanished or was dropped"
    records = broker.dead_letters("default", "flaky")["value"]
    assert {r["id"] for r in records} == odd
    assert {(r["deadLetterReason"], r["deliveryAttempts"], r["lastHttpStatusCode"]) for r in records} == {
        ("MaxDeliveryAttemptsExceeded", 3, 500)}
    assert set(hook.ids()) == even
    print(f"duplicates answered 200: {duplicates(hook.ids())}")

    for event_id in odd:
        got = hook.for_event(event_id)
        seen = [r.delivery_count for r in got]
        # The attempt count survived both crashes: it never went back to 0. (An attempt answered just
        # as the broker died is repeated with the same count, at most once per crash.)
        assert seen == sorted(seen) and set(seen) == {0, 1, 2} and len(seen) <= 5, seen
        last_second = max(r.at for r in got if r.delivery_count == 1)
        first_third = min(r.at for r in got if r.delivery_count == 2)
        assert first_third - last_second >= 30 * scale * 0.9, "the restarted broker did not keep the 1.5 s wait"
