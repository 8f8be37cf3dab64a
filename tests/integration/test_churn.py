"""Churn: publishers at full speed while a subscription is created and deleted over and over. The
broker keeps answering (a deadlock stopped every answer, /healthz included) and every accepted event
reaches the subscription that stayed."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from tests.integration.processes import Broker, Webhook, event, subscription

pytestmark = pytest.mark.integration

CHURN_SECONDS = 4.0
PUBLISHERS = 3
MAX_EVENTS = 1500  # enough to overlap hundreds of subscription changes; the test webhook takes a connection each


def test_publishing_while_a_subscription_flaps_keeps_the_broker_answering_and_loses_nothing(processes):
    stay, flap = Webhook().start(), Webhook().start()
    try:
        broker = Broker.of(processes.broker(time_scale=0.001))
        broker.subscribe("churn", "stays", subscription(stay.url, skip_validation=True))
        stop = threading.Event()
        accepted: list[str] = []
        problems: list[str] = []
        lock = threading.Lock()

        def publisher():
            with requests.Session() as http:
                while not stop.is_set() and len(accepted) < MAX_EVENTS:
                    batch = [event(event_id=str(uuid.uuid4())) for _ in range(3)]
                    resp = http.post(f"{broker.url}/topics/churn/api/events", json=batch, timeout=5)
                    with lock:
                        if resp.status_code == 200:
                            accepted.extend(e["id"] for e in batch)
                        else:
                            problems.append(f"publish {resp.status_code}: {resp.text[:200]}")

        def flapper():
            with requests.Session() as http:
                n = 0
                while not stop.is_set():
                    path = f"{broker.url}/topics/churn/eventSubscriptions/flap-{n % 3}"
                    put = http.put(path, json=subscription(flap.url, skip_validation=True), timeout=5)
                    gone = http.delete(path, timeout=5)
                    if put.status_code not in (200, 201) or gone.status_code not in (200, 204):
                        with lock:
                            problems.append(f"flap {put.status_code}/{gone.status_code}")
                    n += 1

        threads = [threading.Thread(target=publisher) for _ in range(PUBLISHERS)] + [threading.Thread(target=flapper)]
        for t in threads:
            t.start()
        health = []
        deadline = time.monotonic() + CHURN_SECONDS
        try:
            while time.monotonic() < deadline:
                started = time.monotonic()
                status = requests.get(f"{broker.url}/healthz", timeout=5).status_code
                health.append((status, time.monotonic() - started))
                time.sleep(0.1)  # a probe every 100 ms, as a liveness check would
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert not problems, problems[:5]
        assert all(status == 200 for status, _ in health) and max(took for _, took in health) < 2.0, health
        assert len(accepted) > 300, "the publishers hardly published"
        stay.wait_for_ids(accepted, 30)
        assert broker.wait_settled("churn", "stays", len(accepted), timeout=30) == {"delivered": len(accepted)}
        leftover = broker.query("SELECT COUNT(*) AS n FROM named_deliveries WHERE subscription_name LIKE 'flap-%' "
                                "AND status IN ('pending', 'inflight')")
        assert leftover == [{"n": 0}], "deliveries of deleted subscriptions were left waiting"
    finally:
        stay.stop()
        flap.stop()
