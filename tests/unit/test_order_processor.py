"""The order processor app through a Flask test client, on a temporary data dir."""

from __future__ import annotations

import logging

import pytest

from order_processor.app import create_app
from order_processor.config import Config


def order_data(order_id: str = "12345", **overrides) -> dict:
    data = {
        "orderId": order_id,
        "customerName": "Ada Lovelace",
        "customerEmail": "ada@example.com",
        "items": [
            {"sku": "BK-1001", "name": "Paperback notebook A5", "quantity": 2, "unitPrice": 4.5},
            {"sku": "PN-2001", "name": "Fountain pen", "quantity": 1, "unitPrice": 24.0},
        ],
        "total": 33.0,
        "currency": "EUR",
        "createdAt": "2026-01-01T12:00:00.000Z",
    }
    return {**data, **overrides}


def new_order(event_id: str, **data) -> dict:
    return {
        "id": event_id,
        "eventType": "NewOrder",
        "subject": "orders/x",
        "eventTime": "2026-01-01T12:00:00Z",
        "dataVersion": "1.0",
        "data": order_data(**data),
    }


@pytest.fixture
def client(tmp_path):
    return create_app(Config(data_dir=tmp_path)).test_client()


def test_new_order_is_stored_and_logged_as_processed(client, caplog):
    with caplog.at_level(logging.INFO, logger="order_processor"):
        response = client.post("/events", json=[new_order("ev-1")], headers={"aeg-event-type": "Notification"})

    assert response.status_code == 200
    record = next(r for r in caplog.records if r.getMessage() == "processed order 12345")
    assert (record.order_id, record.event_id, record.event_type) == ("12345", "ev-1", "NewOrder")
    assert client.get("/orders/12345").json["eventId"] == "ev-1"


def test_order_listing_has_the_summary_fields_newest_first(client):
    client.post("/events", json=[new_order("ev-1", order_id="100")])
    client.post("/events", json=[new_order("ev-2", order_id="200")])

    listing = client.get("/orders").json

    assert listing["count"] == 2
    assert [o["orderId"] for o in listing["orders"]] == ["200", "100"]
    newest = listing["orders"][0]
    assert newest["customer"] == "Ada Lovelace"
    assert newest["total"] == 33.0
    assert newest["currency"] == "EUR"
    assert newest["itemCount"] == 3  # 2 notebooks + 1 pen
    assert newest["eventId"] == "ev-2"
    assert newest["processedAt"].endswith("Z")


def test_order_listing_honours_limit_and_rejects_a_bad_one(client):
    for n in range(3):
        client.post("/events", json=[new_order(f"ev-{n}", order_id=str(n))])

    limited = client.get("/orders?limit=2").json
    bad = client.get("/orders?limit=0")

    assert limited["count"] == 3
    assert len(limited["orders"]) == 2
    assert bad.status_code == 400
    assert "limit" in bad.json["error"]


def test_single_order_has_its_lines_with_line_totals(client):
    client.post("/events", json=[new_order("ev-1")])

    order = client.get("/orders/12345").json

    assert order["items"] == [
        {"sku": "BK-1001", "name": "Paperback notebook A5", "quantity": 2, "unitPrice": 4.5, "lineTotal": 9.0},
        {"sku": "PN-2001", "name": "Fountain pen", "quantity": 1, "unitPrice": 24.0, "lineTotal": 24.0},
    ]


def test_unknown_order_is_a_json_404(client):
    response = client.get("/orders/nope")

    assert response.status_code == 404
    assert "nope" in response.json["error"]


def test_redelivered_event_stores_the_order_once(client):
    client.post("/events", json=[new_order("ev-1")])
    second = client.post("/events", json=[new_order("ev-1")])

    assert second.json["duplicates"] == 1
    assert client.get("/orders").json["count"] == 1


def test_orders_and_processed_ids_survive_a_restart(tmp_path):
    create_app(Config(data_dir=tmp_path)).test_client().post("/events", json=[new_order("ev-1")])

    restarted = create_app(Config(data_dir=tmp_path)).test_client()
    redelivery = restarted.post("/events", json=[new_order("ev-1")])

    assert redelivery.json["duplicates"] == 1
    assert restarted.get("/orders").json["count"] == 1


def test_same_order_id_from_a_new_event_is_a_new_placement_and_get_returns_the_latest(client):
    client.post("/events", json=[new_order("ev-1", customerName="First")])
    client.post("/events", json=[new_order("ev-2", customerName="Second")])

    assert client.get("/orders").json["count"] == 2
    assert client.get("/orders/12345").json["customer"] == "Second"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"total": 99.0}, "does not equal the sum"),
        ({"items": []}, "items"),
        ({"customerEmail": "not-an-address"}, "customerEmail"),
        ({"currency": "euro"}, "currency"),
        ({"items": [{"sku": "A", "name": "A", "quantity": 0, "unitPrice": 1}]}, "quantity"),
        ({"items": [{"sku": "A", "name": "A", "quantity": 1, "unitPrice": 1.001}], "total": 1.0}, "decimals"),
    ],
)
def test_invalid_order_is_rejected_with_400_and_not_stored(client, overrides, complaint):
    response = client.post("/events", json=[new_order("ev-bad", **overrides)])

    assert response.status_code == 400
    assert complaint in response.json["rejected"][0]["error"]
    assert client.get("/orders").json["count"] == 0


def test_other_event_types_are_ignored(client):
    event = {**new_order("ev-1"), "eventType": "OrderShipped"}

    response = client.post("/events", json=[event])

    assert response.json["ignored"] == 1
    assert client.get("/orders").json["count"] == 0


def test_config_reads_the_environment_with_defaults():
    defaults = Config.from_env({})
    configured = Config.from_env(
        {"ORDER_PROCESSOR_PORT": "6001", "ORDER_PROCESSOR_HOST": "127.0.0.1", "ORDER_PROCESSOR_DATA_DIR": "/data"}
    )

    assert (defaults.host, defaults.port, str(defaults.data_dir)) == ("0.0.0.0", 5001, "data/order_processor")
    assert (configured.host, configured.port, str(configured.data_dir)) == ("127.0.0.1", 6001, "/data")


def test_config_with_a_non_numeric_port_stops_start_up_naming_the_variable():
    with pytest.raises(SystemExit, match="ORDER_PROCESSOR_PORT"):
        Config.from_env({"ORDER_PROCESSOR_PORT": "http"})
