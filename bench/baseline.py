"""The baseline: the original prototype's design, reproduced for comparison.

Flask's development server (`app.run(threaded=True)`), subscribers in a Python list, nothing
durable, and each subscriber called with a synchronous `requests.post` (a new connection each time,
as a bare `requests.post` does) inside the publish request, so the publisher waits for every
delivery. `python -m bench.baseline --port N`.

Routes: POST /subscribe {"eventType", "endpoint", "maxEventsPerBatch"?} (the prototype's, plus an
optional batch size so the output-batching scenario has something to compare), POST /publish
{"eventType", "data"} (the prototype's single event) and POST /api/events (an Event Grid array, so
the bench sends every target the very same request bytes). Event type filtering is as the
prototype's: exact match, or "*" for all.
"""

from __future__ import annotations

import argparse
import logging

import requests
from flask import Flask, jsonify, request

DELIVERY_TIMEOUT = 10.0


def create_app() -> Flask:
    app = Flask(__name__)
    subscribers: list[dict] = []  # the prototype's in-memory subscriber list, owned by this app

    def deliver(events: list[dict]) -> int:
        sent = 0
        for sub in subscribers:
            matching = [e for e in events if sub["eventType"] in ("*", e.get("eventType"))]
            size = sub["maxEventsPerBatch"]
            for i in range(0, len(matching), size):
                try:
                    requests.post(sub["endpoint"], json=matching[i:i + size], timeout=DELIVERY_TIMEOUT)
                    sent += 1
                except requests.RequestException:
                    pass  # the prototype printed the error and moved on: the event is lost
        return sent

    @app.post("/subscribe")
    def subscribe():
        body = request.get_json()
        subscribers.append({
            "eventType": body["eventType"], "endpoint": body["endpoint"],
            "maxEventsPerBatch": int(body.get("maxEventsPerBatch", 1)),
        })
        return jsonify({"status": "subscribed"}), 201

    @app.post("/publish")
    def publish():
        body = request.get_json()
        deliver([{"eventType": body["eventType"], "data": body.get("data")}])
        return jsonify({"status": "published"}), 202

    @app.post("/api/events")
    @app.post("/topics/<topic>/api/events")
    def publish_batch(topic: str | None = None):
        deliver(request.get_json())
        return "", 200

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The broker runs with LOG_LEVEL=WARNING; silence the dev server's per-request line likewise.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    create_app().run(host=args.host, port=args.port, threaded=True, debug=False, use_reloader=False)


if __name__ == "__main__":
    main()
