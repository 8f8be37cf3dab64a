"""Smoke run of the benchmark harness (`python -m bench --quick`): it must run every target and
report, not meet any number -- a loaded CI machine measures whatever it measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = ("fanout-batched", "e2e-latency", "queue-cycle", "flood")


def test_quick_bench_runs_broker_baseline_and_ceiling_and_reports_json_lines_and_a_table(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *SCENARIOS, "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, f"bench failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"

    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"bench"')]
    assert [r["bench"] for r in records] == list(SCENARIOS)
    for record in records:
        for target in ("broker", "baseline", "ceiling"):
            assert "error" not in record["targets"][target], record["targets"][target]
        # The prototype has no queues: the queue scenario compares the broker with the ceiling only.
        measured = [t for t in ("broker", "baseline", "ceiling") if "skipped" not in record["targets"][t]]
        assert {"broker", "ceiling"} <= set(measured)
        first = next(iter(record["rows"].values()))
        assert all(isinstance(first[t], (int, float)) and first[t] > 0 for t in measured), first
        assert first["broker_over_ceiling"] is not None
        assert ("baseline" not in measured) or first["broker_over_baseline"] is not None
        assert record["machine"]["nproc"] >= 1

    table = run.stdout[run.stdout.index("machine:"):]
    assert "brk/base" in table and "brk/ceil" in table
    for name in SCENARIOS:
        assert f"\n{name} " in table
