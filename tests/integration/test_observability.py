"""/metrics counters move by exactly what happened; every service logs JSON lines with the ids."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.processes import Broker, always, event, subscription, wait_until

pytestmark = pytest.mark.integration


def scrape(broker: Broker) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    resp = broker.request("GET", "/metrics")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_by_exactly_the_published_and_delivered_counts(processes, webhook):
    broker = Broker.of(processes.broker(time_scale=0.001))
    good, bad = webhook(), webhook(always(400))
    broker.subscribe("metrics-topic", "good-sub", subscription(good.url))
    broker.subscribe("metrics-topic", "bad-sub", subscription(bad.url, dead_letter=True))
    before = scrape(broker)

    ids = broker.publish_ok([event() for _ in range(7)], topic="metrics-topic")
    ids += broker.publish_ok([event() for _ in range(5)], topic="metrics-topic")
    for body in (b"not json", b"[]", b'[{"id": "x"}]'):
        assert broker.request("POST", "/topics/metrics-topic/api/events", data=body,
                              headers={"Content-Type": "application/json"}).status_code == 400
    good.wait_for_ids(ids, timeout=15)
    broker.wait_settled("metrics-topic", "good-sub", 12)
    broker.wait_settled("metrics-topic", "bad-sub", 12)

    after = scrape(broker)
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("eventgrid_events_accepted_total", topic="metrics-topic") == 12
    assert sum(v - value(before, n, **dict(lbl)) for (n, lbl), v in after.items()
               if n == "eventgrid_events_rejected_total" and dict(lbl)["topic"] == "metrics-topic") == 3
    assert delta("eventgrid_delivery_attempts_total", topic="metrics-topic", subscription="good-sub", outcome="delivered") == 12
    assert delta("eventgrid_delivery_attempts_total", topic="metrics-topic", subscription="bad-sub", outcome="deadlettered") == 12
    assert delta("eventgrid_delivery_latency_seconds_count", topic="metrics-topic", subscription="good-sub") == len(good.deliveries())
    assert value(after, "eventgrid_dead_letters", topic="metrics-topic", subscription="bad-sub") == 12
    assert value(after, "eventgrid_deliveries_pending", topic="metrics-topic", subscription="good-sub") == 0
    assert value(after, "eventgrid_store_events") >= 12 and value(after, "eventgrid_store_size_bytes") > 0


def test_pending_gauge_counts_deliveries_waiting_for_a_down_subscriber(processes, webhook):
    broker = Broker.of(processes.broker())
    hook = webhook()
    broker.subscribe("default", "down-sub", subscription(hook.url))
    hook.stop()
    broker.publish_ok([event() for _ in range(4)])
    wait_until(lambda: value(scrape(broker), "eventgrid_deliveries_pending", topic="default", subscription="down-sub") == 4,
               10, "4 pending deliveries in /metrics")


def json_lines(process) -> list[dict]:
    lines = []
    for raw in process.log_path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))  # every line a service logs is one JSON object
    return lines


def test_broker_logs_one_json_line_per_batch_and_per_delivery_attempt(processes, webhook):
    proc = processes.broker(time_scale=0.001, LOG_LEVEL="INFO")
    broker = Broker.of(proc)
    hook = webhook(always(500))
    broker.subscribe("default", "log-sub", subscription(hook.url, max_attempts=2))
    (event_id,) = broker.publish_ok([event()])
    broker.wait_settled("default", "log-sub", 1)

    def attempts():
        return [r for r in json_lines(proc) if r["msg"] == "delivery attempt" and event_id in r["event_ids"]]

    rows = wait_until(lambda: len(attempts()) == 2 and attempts(), 10, "two logged delivery attempts")
    assert [(r["subscription"], r["attempt"], r["status"]) for r in rows] == [("log-sub", 1, 500), ("log-sub", 2, 500)]
    assert all(r["service"] == "broker" and r["level"] == "info" and r["ts"].endswith("Z") for r in rows)
    (batch,) = [r for r in json_lines(proc) if r["msg"] == "accepted batch" and event_id in r["event_ids"]]
    assert batch["count"] == 1 and batch["topic"] == "default" and batch["deliveries"] == 1


def test_log_level_comes_from_the_environment(processes):
    proc = processes.broker(LOG_LEVEL="WARNING")
    broker = Broker.of(proc)
    broker.publish_ok([event()])  # would log "accepted batch" at info
    assert broker.request("POST", "/api/events?api-version=2099-01-01", json=[event()]).status_code == 200
    warned = wait_until(lambda: [r for r in json_lines(proc) if r["level"] == "warning"], 5, "the unknown api-version warning")
    assert warned[0]["api_version"] == "2099-01-01"
    assert not [r for r in json_lines(proc) if r["level"] == "info"]
