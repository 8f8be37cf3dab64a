"""A full disk under a real broker: publishes get 503 with Retry-After (nothing half stored), /readyz
says the store cannot take writes, and once space is back the broker recovers by itself with
every accepted event delivered and nothing left in flight. The store lives on a small tmpfs."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.processes import Broker, Webhook, event, subscription
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

TMPFS_BYTES = 12 << 20
FILLER_BYTES = 4 << 20  # freed to give the space back


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_publishes_with_503_and_recovers_by_itself_losing_nothing(processes, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * FILLER_BYTES)
    hook = Webhook().start()
    try:
        broker = Broker.of(processes.broker(data_dir=small_disk / "broker", time_scale=0.001))
        broker.subscribe("default", "sink", subscription(hook.url, skip_validation=True))
        accepted: list[str] = []
        refused = None
        payload = {"blob": "x" * 200_000}
        for _ in range(200):  # bounded: 200 x 200 KB is three times the disk
            batch = [event(data=payload, event_id=str(uuid.uuid4()))]
            resp = broker.publish(batch)
            if resp.status_code == 200:
                accepted += [e["id"] for e in batch]
                continue
            refused = resp
            break
        assert refused is not None, "the disk never filled"

        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "ServiceUnavailable"
        ready = broker.request("GET", "/readyz")
        assert ready.status_code == 503 and "store" in ready.json()["checks"] and ready.json()["checks"]["store"] != "writable"
        assert broker.request("GET", "/healthz").status_code == 200  # alive, only not ready

        filler.unlink()  # space is back
        wait_until(lambda: broker.request("GET", "/readyz").status_code == 200, 20, "the broker to be ready again")
        after = [event(event_id=str(uuid.uuid4()))]
        assert broker.publish(after).status_code == 200
        accepted += [after[0]["id"]]
        hook.wait_for_ids(accepted, 30)
        counts = broker.wait_settled("default", "sink", len(accepted), timeout=30)
        assert counts == {"delivered": len(accepted)}, counts  # nothing stuck in flight until a restart
        assert sorted(set(hook.ids())) == sorted(accepted)  # and nothing refused was delivered
    finally:
        hook.stop()
