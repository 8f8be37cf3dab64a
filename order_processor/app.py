"""The order processor's Flask app: the NewOrder webhook plus read-only order listings.

| method | path            | answer                                                        |
|--------|-----------------|---------------------------------------------------------------|
| POST   | `/events`       | Event Grid / CloudEvents deliveries (see servicekit.webhook)  |
| OPTIONS| `/events`       | CloudEvents webhook handshake                                 |
| GET    | `/orders`       | `{"count": all stored, "orders": [newest first]}`; `?limit=` 1..1000, default 100 |
| GET    | `/orders/<id>`  | the latest processing of that order, with its items; 404 if none |
| GET    | `/healthz`      | `{"status": "ok"}`                                            |
"""

from __future__ import annotations

import logging

from flask import Flask, abort, jsonify

from order_processor.config import Config
from order_processor.order_store import OrderStore
from servicekit.idempotency import ProcessedEvents
from servicekit.order import InvalidOrder, order_id_of, parse_order
from servicekit.service import create_service_app, limit_arg
from servicekit.webhook import ReceivedEvent, RejectedEvent, create_webhook_blueprint

log = logging.getLogger(__name__)


def _log_fields(event: ReceivedEvent) -> dict[str, str | None]:
    return {"order_id": order_id_of(event.data)}


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    orders = OrderStore(config.data_dir)
    processed = ProcessedEvents(config.data_dir)
    processed.recover()

    def process_new_order(event: ReceivedEvent) -> None:
        try:
            order = parse_order(event.data)
        except InvalidOrder as error:
            raise RejectedEvent(str(error)) from error
        fields = {"event_id": event.id, "event_type": event.type, "order_id": order.order_id}
        if not orders.add(order, event_id=event.id):
            log.info("order of this event was already stored", extra=fields)
            return
        log.info(
            "processed order %s",
            order.order_id,
            extra={**fields, "total": str(order.total), "currency": order.currency, "item_count": order.item_count},
        )

    app = create_service_app("order_processor")
    app.register_blueprint(
        create_webhook_blueprint(
            process_new_order, event_types=config.event_types, processed=processed, log_fields=_log_fields
        )
    )

    @app.get("/orders")
    def list_orders():
        return jsonify(count=orders.count(), orders=orders.recent(limit_arg()))

    @app.get("/orders/<order_id>")
    def get_order(order_id: str):
        order = orders.get(order_id)
        if order is None:
            abort(404, description=f"order {order_id} has not been processed")
        return jsonify(order)

    return app
