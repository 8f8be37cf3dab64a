"""`make demo-retry` keeps showing what the README promises: retries, then a dead letter, then a redelivery."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_demo_shows_the_schedule_the_dead_letter_and_the_redelivery():
    done = subprocess.run([sys.executable, "-m", "demo.retry"], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    counts = [int(c) for c in re.findall(r"aeg-delivery-count=(\d+) .*-> answering 503", out)]
    assert counts == [0, 1, 2, 3, 4, 5]  # maxDeliveryAttempts 6, each attempt numbered
    assert '"deadLetterReason": "MaxDeliveryAttemptsExceeded"' in out and '"deliveryAttempts": 6' in out
    assert re.search(r"blob file: deadletter/demo/FLAKY/\d{4}/\d{1,2}/\d{1,2}/\d{1,2}/[0-9a-f-]+\.json", out)
    assert re.search(r"aeg-delivery-count=0 .*-> answering 200", out) and "delivered." in out
