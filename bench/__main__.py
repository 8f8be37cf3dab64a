"""Benchmark the broker against the prototype baseline and a raw-HTTP ceiling, on loopback.

`python -m bench [SCENARIO ...] [--quick]` prints a JSON line per scenario as it finishes and the
table at the end; progress goes to stderr. Exit status 1 if any run failed (a missed target is a
result, not a failure)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import orjson

from . import report
from .procs import Stack
from .scenarios import BY_NAME, SCENARIOS, merge_rounds
from .settings import Settings
from .targets import TARGETS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     epilog="See docs/performance.md for what each scenario measures.")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of: {', '.join(BY_NAME)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: half-second runs, tiny counts (seconds per scenario)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of broker,baseline,ceiling")
    parser.add_argument("--duration", type=float, help="measured seconds per throughput run")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each throughput run")
    parser.add_argument("--connections", type=int, help="concurrent publishing clients (default 8)")
    parser.add_argument("--drain-events", type=int, help="backlog size of the drain scenario (default 100000)")
    parser.add_argument("--memory-events", type=int, help="events stored in the memory scenario (default 1000000)")
    parser.add_argument("--latency-rate", type=int, help="events/s of the end-to-end latency scenario (default 1000)")
    parser.add_argument("--drain-deadline", type=float, help="seconds the drain is waited for (default 120)")
    parser.add_argument("--window", type=int, help="events published ahead of delivery in the fan-out scenarios (default 2000)")
    parser.add_argument("--ingress-window", type=int, help="the same for ingress with subscribers (default 200)")
    parser.add_argument("--broker-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra broker setting, e.g. BROKER_SYNC=full (repeatable)")
    parser.add_argument("--py-spy", metavar="PATH", help="py-spy binary: profile each server process while it is loaded")
    parser.add_argument("--profile-gil", action="store_true", help="with --py-spy: sample only the thread holding the GIL")
    parser.add_argument("--profile-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-profiles",
                        help="where --py-spy writes collapsed stacks (default: bench-profiles in the temp directory)")
    parser.add_argument("--workdir", type=Path, help="keep logs and stores here instead of a temporary directory")
    parser.add_argument("--json", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    bad = [t for t in args.targets.split(",") if t not in TARGETS]
    if bad:
        parser.error(f"unknown target {', '.join(bad)}")
    return args


def settings(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name) for name in ("duration", "warmup", "connections", "drain_events", "drain_deadline", "memory_events",
                                                "window", "ingress_window", "latency_rate")
        if getattr(args, name) is not None
    }
    overrides["broker_env"] = dict(item.split("=", 1) for item in args.broker_env)
    if args.py_spy:
        overrides |= {"py_spy": args.py_spy, "profile_dir": args.profile_dir.resolve(), "profile_gil": args.profile_gil}
    return Settings.quick(**overrides) if args.quick else dataclasses.replace(Settings(), **overrides)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings(args)
    chosen = [BY_NAME[n] for n in args.scenarios] or list(SCENARIOS)
    targets = args.targets.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-"))
    info = report.machine()
    records, failed = [], False
    try:
        for scenario in chosen:
            began = time.monotonic()
            runs: dict[str, list[dict]] = {target: [] for target in targets}
            each = dataclasses.replace(s, duration=s.duration * scenario.span / scenario.rounds)
            for n in range(scenario.rounds):
                for target in targets:
                    if runs[target] and "error" in runs[target][-1]:
                        continue
                    round_note = f" (round {n + 1} of {scenario.rounds})" if scenario.rounds > 1 else ""
                    print(f"[bench] {scenario.name}: {target}{round_note} ...", file=sys.stderr, flush=True)
                    try:
                        with Stack(workdir / scenario.name / (target if scenario.rounds == 1 else f"{target}-{n + 1}")) as stack:
                            runs[target].append(scenario.run(target, stack, each))
                    except Exception as exc:  # report it and go on: one broken run must not hide the rest
                        failed = True
                        runs[target].append({"error": f"{type(exc).__name__}: {exc}"})
                        traceback.print_exc(file=sys.stderr)
            metrics = {target: merge_rounds(results) for target, results in runs.items()}
            record = report.scenario_record(scenario, metrics, time.monotonic() - began)
            record["machine"] = info
            record["loadavg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine skews a run
            records.append(record)
            line = orjson.dumps(record).decode()
            print(line, flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(line + "\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report.table(records, info), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
