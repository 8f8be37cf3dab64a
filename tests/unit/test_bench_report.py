"""The bench's verdicts: a row's target, its factor over the prototype, or both."""

from __future__ import annotations

from bench.report import target_text, verdict
from bench.scenarios import BY_NAME, Row, merge_rounds, sustained_rate
from bench.settings import Settings


def metrics(broker: float, baseline: float) -> dict:
    return {"broker": {"events_per_s": broker}, "baseline": {"events_per_s": baseline}, "ceiling": {"events_per_s": 9000.0}}


def test_a_row_with_only_a_factor_compares_with_the_baseline():
    row = Row("events_per_s", "ingress events/s", "ev/s", True, baseline_factor=15)
    assert target_text(row) == ">= 15x base"
    assert verdict(row, metrics(1500.0, 100.0)) is True
    assert verdict(row, metrics(1499.0, 100.0)) is False
    assert verdict(row, {"broker": {"events_per_s": 1500.0}, "baseline": {"error": "boom"}}) is False


def test_a_row_with_a_target_and_a_factor_needs_both():
    row = Row("events_per_s", "ingress events/s", "ev/s", True, 3000, 15)
    assert target_text(row) == ">= 3,000, >= 15x base"
    assert verdict(row, metrics(3000.0, 200.0)) is True
    assert verdict(row, metrics(3000.0, 201.0)) is False
    assert verdict(row, metrics(2999.0, 100.0)) is False


def test_a_row_without_target_has_no_verdict():
    assert verdict(Row("p50_ms", "publish p50", "ms", False), {"broker": {"p50_ms": 1.0}}) is None


def test_the_15x_target_is_judged_on_the_run_with_the_examples_subscribers():
    single = BY_NAME["ingress-single"].rows[0]
    subscribed = BY_NAME["ingress-subscribed"].rows[0]
    assert (single.target, single.baseline_factor) == (3000, None)
    assert (subscribed.target, subscribed.baseline_factor) == (None, 15)


def test_ingress_with_subscribers_reports_only_what_was_also_delivered():
    ahead = {"events_per_s": 1758.0, "sink_events_per_s": 3022.0}  # accepted faster than delivered
    assert sustained_rate(ahead, 2) == 1511.0
    assert ahead["delivered_events_per_s"] == 1511.0
    assert sustained_rate({"events_per_s": 1600.0, "sink_events_per_s": 3400.0}, 2) == 1600.0
    assert sustained_rate({"events_per_s": 9000.0}, 2) == 9000.0  # the ceiling: no sinks watched


def test_rounds_are_merged_into_the_mean_of_each_number():
    rounds = [{"events_per_s": 1500.0, "p99_ms": 8.0, "all_delivered": True, "load": {"n": 1}},
              {"events_per_s": 1800.0, "p99_ms": 10.0, "all_delivered": True, "load": {"n": 2}}]
    merged = merge_rounds(rounds)
    assert merged["events_per_s"] == 1650.0 and merged["p99_ms"] == 9.0
    assert merged["rounds"] == 2 and merged["load"] == [{"n": 1}, {"n": 2}] and merged["all_delivered"] is True
    assert merge_rounds(rounds[:1]) is rounds[0]
    assert merge_rounds([rounds[0], {"error": "boom"}]) == {"error": "boom"}


def test_a_round_that_did_not_drain_leaves_no_mean_time_to_drain():
    rounds = [{"drain_s": 0.5, "backlog_at_end": 10}, {"drain_s": None, "backlog_at_end": 30}]
    merged = merge_rounds(rounds)
    assert merged["drain_s"] is None and merged["backlog_at_end"] == 20


def test_a_flood_runs_each_round_for_the_whole_duration():
    flood = BY_NAME["flood"]
    assert flood.rounds == 3 and flood.span == flood.rounds


def test_the_15x_row_takes_the_targets_in_turn():
    assert BY_NAME["ingress-subscribed"].rounds > 1
    assert Settings().duration / BY_NAME["ingress-subscribed"].rounds >= 1.0  # each round still measures a second or more
