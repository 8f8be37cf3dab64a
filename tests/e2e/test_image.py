"""The broker's image on its own, as a user runs it: built from broker/Dockerfile, started through
the package's Testcontainers class, ready on /readyz, and taking a publish that reaches a queue."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
import requests

from broker.containers import EventGridEmulatorContainer
from tests.e2e.stack import REPO_ROOT, docker_unavailable_reason

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def image() -> str:
    reason = docker_unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"e2e tier cannot run under CI: {reason}")
        pytest.skip(f"e2e tier needs Docker: {reason}")
    tag = f"eventgrid-emulator:e2e-{uuid.uuid4().hex[:8]}"
    base = os.environ.get("PYTHON_IMAGE", "python:3.12-slim")
    subprocess.run(["docker", "build", "-q", "--build-arg", f"PYTHON_IMAGE={base}", "-f", "broker/Dockerfile", "-t", tag, "."],
                   cwd=REPO_ROOT, check=True, timeout=900, capture_output=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


def test_the_standalone_image_runs_the_emulator_and_reports_ready(image):
    with EventGridEmulatorContainer(image) as emulator:
        ready = requests.get(f"{emulator.url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["store"] == "writable"
        base = emulator.url
        assert requests.put(f"{base}/namespaces/shop", json={}, timeout=10).status_code == 201
        assert requests.put(f"{base}/namespaces/shop/topics/orders", json={}, timeout=10).status_code == 201
        queue = {"properties": {"deliveryConfiguration": {"deliveryMode": "Queue", "queue": {}}}}
        assert requests.put(f"{base}/namespaces/shop/topics/orders/eventSubscriptions/worker", json=queue, timeout=10).status_code == 201
        key = requests.post(f"{base}/namespaces/shop/listKeys", timeout=10).json()["key1"]
        auth = {"Authorization": f"SharedAccessKey {key}"}
        event = [{"specversion": "1.0", "id": "img-1", "source": "/shop", "type": "Order.Placed", "data": {"n": 1}}]
        assert requests.post(f"{base}/namespaces/shop/topics/orders:publish", json=event, timeout=10,
                             headers={**auth, "Content-Type": "application/cloudevents-batch+json"}).status_code == 200
        got = requests.post(f"{base}/namespaces/shop/topics/orders/eventsubscriptions/worker:receive?maxEvents=1&maxWaitTime=10",
                            headers=auth, timeout=20).json()["value"]
        assert [g["event"]["id"] for g in got] == ["img-1"]
