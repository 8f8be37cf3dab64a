"""The bench's output: the machine it ran on, one JSON line per scenario and the summary table."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from .scenarios import BY_NAME, Row, Scenario


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "revision": revision(),
    }


def revision() -> str:
    """The commit the broker was measured at, "+dirty" when broker/ has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "broker"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def value(metrics: dict, target: str, key: str) -> float | None:
    v = metrics.get(target, {}).get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def verdict(row: Row, metrics: dict) -> bool | None:
    """Whether the broker meets the row's target; None where the row has none or no number."""
    broker = value(metrics, "broker", row.key)
    if (row.target is None and row.baseline_factor is None) or broker is None:
        return None
    met = row.target is None or (broker >= row.target if row.higher_is_better else broker <= row.target)
    if row.baseline_factor is not None:
        base = value(metrics, "baseline", row.key)
        met = met and base is not None and broker >= row.baseline_factor * base
    return met


def scenario_record(scenario: Scenario, metrics: dict, seconds: float) -> dict:
    rows = {}
    for row in scenario.rows:
        broker = value(metrics, "broker", row.key)
        rows[row.key] = {
            "unit": row.unit, "broker": broker, "baseline": value(metrics, "baseline", row.key),
            "ceiling": value(metrics, "ceiling", row.key),
            "broker_over_baseline": ratio(broker, value(metrics, "baseline", row.key)),
            "broker_over_ceiling": ratio(broker, value(metrics, "ceiling", row.key)),
            "target": target_text(row), "met": verdict(row, metrics),
        }
    return {"bench": scenario.name, "title": scenario.title, "rows": rows, "targets": metrics, "seconds": round(seconds, 1)}


def target_text(row: Row) -> str:
    parts = [] if row.target is None else [f"{'>=' if row.higher_is_better else '<='} {_num(row.target)}"]
    if row.baseline_factor is not None:
        parts.append(f">= {row.baseline_factor:g}x base")
    return ", ".join(parts)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def _x(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1f}x" if v >= 10 else f"{v:.2f}x")


def table(records: list[dict], info: dict) -> str:
    head = ("scenario", "metric", "target", "broker", "baseline", "ceiling", "brk/base", "brk/ceil", "met")
    lines = [head]
    for rec in records:
        for key, r in rec["rows"].items():
            label = next((row.label for row in BY_NAME[rec["bench"]].rows if row.key == key), key)
            met = {True: "yes", False: "NO", None: ""}[r["met"]]
            lines.append((rec["bench"], f"{label} ({r['unit']})", r["target"], _num(r["broker"]), _num(r["baseline"]),
                          _num(r["ceiling"]), _x(r["broker_over_baseline"]), _x(r["broker_over_ceiling"]), met))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, {info['date']}, broker at {info['revision']}"]
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    for rec in records:
        for target, m in rec["targets"].items():
            if "error" in m:
                out.append(f"! {rec['bench']} / {target}: {m['error']}")
            elif "skipped" in m:
                out.append(f"  {rec['bench']} / {target}: skipped, {m['skipped']}")
    return "\n".join(out)

