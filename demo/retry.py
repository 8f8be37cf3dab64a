"""`python -m demo.retry`: watch Azure's retry schedule and dead-lettering, compressed to seconds.

Starts a broker (BROKER_TIME_SCALE=0.002, so the 10 s / 30 s / 1 min / 5 min / 10 min schedule
takes about two seconds) and a subscriber that answers 503 until it is "fixed". One event is
published; every attempt is printed as the subscriber sees it; after maxDeliveryAttempts the event is
dead-lettered (record shown, blob file listed). Then the subscriber is fixed and the dead letter is
redelivered through the API. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from flask import Flask, request
from waitress.server import create_server

TIME_SCALE = 0.002
MAX_ATTEMPTS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise SystemExit(f"demo: timed out waiting for {what}")


def flaky_subscriber(state: dict) -> Flask:
    app = Flask("flaky-subscriber")

    @app.post("/events")
    def events():
        body = request.get_json()
        if request.headers.get("aeg-event-type") == "SubscriptionValidation":
            return {"validationResponse": body[0]["data"]["validationCode"]}
        elapsed = time.monotonic() - state["t0"]
        count = request.headers.get("aeg-delivery-count")
        status = 200 if state["fixed"] else 503
        print(f"  t={elapsed:6.3f}s  attempt aeg-delivery-count={count}  event {body[0]['id'][:8]}…  -> answering {status}")
        return ("", status)

    return app


def main() -> int:
    broker_port, sub_port = free_port(), free_port()
    base = f"http://127.0.0.1:{broker_port}"
    state = {"fixed": False, "t0": time.monotonic()}
    server = create_server(flaky_subscriber(state), host="127.0.0.1", port=sub_port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "BROKER_HOST": "127.0.0.1", "BROKER_PORT": str(broker_port), "BROKER_DATA_DIR": data_dir,
               "BROKER_TIME_SCALE": str(TIME_SCALE), "BROKER_PUBLIC_URL": base, "LOG_LEVEL": "WARNING"}
        broker = subprocess.Popen([sys.executable, "-m", "broker"], env=env)
        try:
            wait_until(lambda: _ok(f"{base}/healthz"), 20, "the broker")
            print(f"broker on {base} (time scale {TIME_SCALE}: Azure's 10 s first retry takes {10 * TIME_SCALE * 1000:.0f} ms)")
            sub = {"properties": {
                "destination": {"endpointType": "WebHook", "properties": {"endpointUrl": f"http://127.0.0.1:{sub_port}/events"}},
                "retryPolicy": {"maxDeliveryAttempts": MAX_ATTEMPTS, "eventTimeToLiveInMinutes": 1440},
                "deadLetterDestination": {"endpointType": "StorageBlob", "properties": {"blobContainerName": "deadletter"}}}}
            requests.put(f"{base}/topics/demo/eventSubscriptions/flaky", json=sub, timeout=10).raise_for_status()
            print(f"subscription 'flaky' validated; maxDeliveryAttempts={MAX_ATTEMPTS}; publishing one event…")
            state["t0"] = time.monotonic()
            event = [{"id": "11111111-demo-retry", "subject": "orders/1", "eventType": "NewOrder",
                      "eventTime": "2026-01-01T00:00:00Z", "data": {"orderId": 1}, "dataVersion": "1.0"}]
            requests.post(f"{base}/topics/demo/api/events", json=event, timeout=10).raise_for_status()
            dead_url = f"{base}/topics/demo/eventSubscriptions/flaky/deadLetters"
            page = wait_until(lambda: (p := requests.get(dead_url, timeout=5).json())["count"] and p, 60, "the dead letter")
            record = page["value"][0]
            print("\ndead-lettered:")
            print(json.dumps({k: record[k] for k in ("deliveryId", "deadLetterReason", "deliveryAttempts", "lastDeliveryOutcome",
                                                    "lastHttpStatusCode", "publishTime", "lastDeliveryAttemptTime")}, indent=2))
            for blob in Path(data_dir, "deadletter").rglob("*.json"):
                print(f"blob file: {blob.relative_to(data_dir)}")
            print("\nfixing the subscriber and redelivering the dead letter…")
            state["fixed"] = True
            state["t0"] = time.monotonic()
            requests.post(f"{dead_url}/{record['deliveryId']}/redeliver", timeout=5).raise_for_status()
            wait_until(lambda: requests.get(dead_url, timeout=5).json()["count"] == 0 and _delivered(base), 20, "the redelivery")
            print("delivered. Open the dashboard of a running broker to see the same timeline live.")
            return 0
        finally:
            broker.terminate()
            broker.wait(10)
            server.close()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def _delivered(base: str) -> bool:
    metrics = requests.get(f"{base}/metrics", timeout=5).text
    return 'outcome="delivered"' in metrics and any(
        line.startswith("eventgrid_delivery_attempts_total") and 'outcome="delivered"' in line and not line.endswith(" 0.0")
        for line in metrics.splitlines())


if __name__ == "__main__":
    sys.exit(main())
