"""The package as a user gets it: the wheel installed into a fresh virtual environment outside the
checkout, the `eventgrid-emulator` command run from elsewhere, and a user's own test suite that
only installs the package and uses its `eventgrid_emulator` fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from tests.integration.processes import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# What the user's test project installs beside the package (pins of this repository's own).
USER_PINS = ["azure-eventgrid==4.22.1", "azure-core==1.41.0", "pytest==9.2.0"]


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (outside the checkout) with the built wheel installed; its bin directory."""
    root = tmp_path_factory.mktemp("user")
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                   check=True, timeout=300, cwd=root)
    [wheel] = wheels.glob("eventgrid_emulator-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel), *USER_PINS], check=True, timeout=600, cwd=root, stderr=subprocess.DEVNULL)
    return venv / "bin"


def _user_env() -> dict[str, str]:
    # Nothing of this checkout: no PYTHONPATH, no BROKER_* settings.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}


def test_the_command_runs_from_any_directory_with_its_flags(installed, tmp_path):
    version = subprocess.run([str(installed / "eventgrid-emulator"), "--version"], capture_output=True, text=True,
                             timeout=30, env=_user_env(), cwd=tmp_path)
    assert version.returncode == 0 and "eventgrid-emulator 0." in version.stdout
    port = free_port()
    proc = subprocess.Popen([str(installed / "eventgrid-emulator"), "--port", str(port), "--in-memory", "--log-level", "WARNING"],
                            env=_user_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode()  # it exited: say why
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                assert json.loads(resp.read())["status"] == "ready"
                return True

        wait_until(ready, 30, "the emulator to get ready", interval=0.1, tolerate=(OSError,))
        event = [{"id": "1", "eventType": "T", "subject": "s", "eventTime": "2026-01-01T00:00:00Z", "data": {}}]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/events", data=json.dumps(event).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        stopped = proc.wait(15)
        proc.stderr.close()
    assert stopped == 0
    assert not list(tmp_path.glob("data")), "--in-memory left a data directory behind"


USER_TEST = '''
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient


def test_an_order_reaches_my_subscriber(eventgrid_emulator):
    topic = eventgrid_emulator.create_topic("orders", keys=True)
    eventgrid_emulator.subscribe("orders", "recorder", filter={"includedEventTypes": ["NewOrder"]})
    client = EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(topic["key1"]))
    client.send([EventGridEvent(event_type="NewOrder", subject="orders/1", data={"orderId": 1}, data_version="1.0"),
                 EventGridEvent(event_type="Ignored", subject="orders/2", data={}, data_version="1.0")])
    [event] = eventgrid_emulator.webhook.wait_for(eventType="NewOrder", timeout=15)
    assert event["data"] == {"orderId": 1}
    assert event["topic"].endswith("/providers/Microsoft.EventGrid/topics/orders")
'''


def test_a_users_own_tests_get_the_fixture_from_the_installed_package(installed, tmp_path):
    project = tmp_path / "shop"
    project.mkdir()
    (project / "test_orders.py").write_text(textwrap.dedent(USER_TEST))
    run = subprocess.run([str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
                         capture_output=True, text=True, timeout=180, env=_user_env())
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
