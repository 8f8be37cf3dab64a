"""Dead letters through the management API and on disk: list and page, fetch one, the blob file
Azure would have written to the storage container, redeliver one or all, purge."""

from __future__ import annotations

import json
from datetime import datetime
from urllib.parse import urlsplit

import pytest

from tests.integration.processes import Broker, always, event, subscription, wait_until

pytestmark = pytest.mark.integration

SCALE = 0.01
AZURE_FIELDS = ("deadLetterReason", "deliveryAttempts", "lastDeliveryOutcome", "lastHttpStatusCode",
                "publishTime", "lastDeliveryAttemptTime")


@pytest.fixture(scope="module")
def broker(module_processes):
    return Broker.of(module_processes.broker(time_scale=SCALE))


def dead_lettered(broker, webhook, topic: str, count: int, **sub):
    """A subscription whose webhook rejects with 400, and `count` events dead-lettered on it."""
    hook = webhook(always(400))
    broker.subscribe(topic, "orders-sub", subscription(hook.url, dead_letter=True, **sub))
    ids = broker.publish_ok([event(data={"n": n}) for n in range(count)], topic=topic)
    broker.wait_dead_letters(topic, "orders-sub", count)
    return hook, ids


def path(topic: str, suffix: str = "") -> str:
    return f"/topics/{topic}/eventSubscriptions/orders-sub/deadLetters{suffix}"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_dead_letters_are_listed_in_pages_with_a_count_and_next_link(broker, webhook):
    _hook, ids = dead_lettered(broker, webhook, "dl-paging", 5)
    first = broker.dead_letters("dl-paging", "orders-sub", top=2)
    assert first["count"] == 5 and len(first["value"]) == 2
    seen, page, pages = [], first, 0
    while True:  # follow nextLink exactly as a client would, at most a handful of pages
        pages += 1
        assert pages <= 5
        seen += [r["id"] for r in page["value"]]
        if "nextLink" not in page:
            break
        link = urlsplit(page["nextLink"])
        assert link.path == path("dl-paging")
        page = broker.request("GET", f"{link.path}?{link.query}").json()
    assert pages == 3 and seen == ids  # oldest first, none twice, none missing
    last = broker.dead_letters("dl-paging", "orders-sub", skip=4, top=2)
    assert [r["id"] for r in last["value"]] == ids[4:] and "nextLink" not in last
    assert broker.dead_letters("dl-paging", "orders-sub", skip=10)["value"] == []


def test_one_dead_letter_has_azures_fields_the_event_and_a_matching_blob_file(broker, webhook):
    sent = event("OrderPlaced", {"orderId": "dl-1"}, subject="/orders/dl-1")
    hook = webhook(always(400))
    broker.subscribe("dl-fetch", "orders-sub", subscription(hook.url, dead_letter=True))
    broker.publish_ok([sent], topic="dl-fetch")
    [listed] = broker.wait_dead_letters("dl-fetch", "orders-sub", 1)["value"]

    resp = broker.request("GET", path("dl-fetch", f"/{listed['deliveryId']}"))
    assert resp.status_code == 200
    record = resp.json()
    assert record == listed
    assert record["deadLetterReason"] == "BadRequest"
    assert record["deliveryAttempts"] == 1
    assert record["lastDeliveryOutcome"] == "BadRequest"
    assert record["lastHttpStatusCode"] == 400
    published, attempted = parse_iso(record["publishTime"]), parse_iso(record["lastDeliveryAttemptTime"])
    assert published <= attempted and (attempted - published).total_seconds() < 5
    for key in ("id", "subject", "eventType", "eventTime", "data"):
        assert record[key] == sent[key]
    assert record["topic"].endswith("/providers/Microsoft.EventGrid/topics/dl-fetch")
    assert record["metadataVersion"] == "1" and record["dataVersion"] == "1.0"

    # Azure's blob layout: {container}/{topic}/{SUBSCRIPTION}/{yyyy}/{M}/{d}/{H}/{guid}.json, unpadded.
    blobs = list((broker.data_dir / "deadletter").rglob("*.json"))
    mine = [b for b in blobs if b.relative_to(broker.data_dir / "deadletter").parts[0] == "dl-fetch"]
    assert len(mine) == 1
    parts = mine[0].relative_to(broker.data_dir / "deadletter").parts
    assert parts[:2] == ("dl-fetch", "ORDERS-SUB")
    assert parts[2:6] == tuple(str(x) for x in (attempted.year, attempted.month, attempted.day, attempted.hour))
    stem = mine[0].stem
    assert len(stem) == 36 and stem.count("-") == 4  # a GUID
    blob = json.loads(mine[0].read_text())
    assert blob == [{k: v for k, v in record.items() if k != "deliveryId"}]
    assert set(AZURE_FIELDS) <= set(blob[0])


def test_redelivering_one_dead_letter_sends_it_again_with_a_fresh_attempt_count(broker, webhook):
    hook, ids = dead_lettered(broker, webhook, "dl-redeliver-one", 3)
    listed = {r["id"]: r["deliveryId"] for r in broker.dead_letters("dl-redeliver-one", "orders-sub")["value"]}
    hook.respond(always(200))  # the subscriber is fixed
    resp = broker.request("POST", path("dl-redeliver-one", f"/{listed[ids[1]]}/redeliver"))
    assert resp.status_code == 202 and resp.json() == {"redelivered": 1}

    hook.wait_for_ids({ids[1]}, 10)
    [again] = hook.deliveries(200)
    assert again.event_ids == [ids[1]] and again.delivery_count == 0
    assert broker.wait_settled("dl-redeliver-one", "orders-sub", 3) == {"delivered": 1, "deadlettered": 2}
    remaining = broker.dead_letters("dl-redeliver-one", "orders-sub")
    assert remaining["count"] == 2 and {r["id"] for r in remaining["value"]} == {ids[0], ids[2]}
    assert broker.request("GET", path("dl-redeliver-one", f"/{listed[ids[1]]}")).status_code == 404
    assert hook.quiet_for(0.3, 4), "redelivering one dead letter sent others too"


def test_redelivering_all_dead_letters_resets_their_attempts(broker, webhook):
    hook = webhook(always(500))
    broker.subscribe("dl-redeliver-all", "orders-sub", subscription(hook.url, dead_letter=True, max_attempts=2))
    ids = broker.publish_ok([event(data={"n": n}) for n in range(3)], topic="dl-redeliver-all")
    broker.wait_dead_letters("dl-redeliver-all", "orders-sub", 3)
    assert len(hook.deliveries()) == 6

    # Still failing: a redelivered event gets the whole policy again, not the one attempt left over.
    resp = broker.request("POST", path("dl-redeliver-all", "/redeliver"))
    assert resp.status_code == 202 and resp.json() == {"redelivered": 3}
    wait_until(lambda: broker.dead_letters("dl-redeliver-all", "orders-sub")["count"] == 3
               and len(hook.deliveries()) == 12, 10, "the second round of dead letters")
    records = broker.dead_letters("dl-redeliver-all", "orders-sub")["value"]
    assert {r["deliveryAttempts"] for r in records} == {2}
    assert sorted(r.delivery_count for r in hook.deliveries()[6:]) == [0, 0, 0, 1, 1, 1]

    hook.respond(always(200))
    assert broker.request("POST", path("dl-redeliver-all", "/redeliver")).json() == {"redelivered": 3}
    hook.wait_for_ids(set(ids), 10)
    assert sorted(r.delivery_count for r in hook.deliveries(200)) == [0, 0, 0]
    assert broker.wait_settled("dl-redeliver-all", "orders-sub", 3) == {"delivered": 3}
    assert broker.dead_letters("dl-redeliver-all", "orders-sub") == {"value": [], "count": 0}


def test_purging_removes_every_dead_letter_for_good(broker, webhook):
    hook, _ids = dead_lettered(broker, webhook, "dl-purge", 4)
    resp = broker.request("DELETE", path("dl-purge"))
    assert resp.status_code == 200 and resp.json() == {"purged": 4}
    assert broker.dead_letters("dl-purge", "orders-sub") == {"value": [], "count": 0}
    assert broker.request("POST", path("dl-purge", "/redeliver")).json() == {"redelivered": 0}
    assert broker.request("DELETE", path("dl-purge")).json() == {"purged": 0}
    hook.respond(always(200))
    assert hook.quiet_for(0.3, 4), "a purged dead letter was delivered"
