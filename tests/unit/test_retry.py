import random

import pytest

from broker.retry import EVERY_AFTER_SECONDS, SCHEDULE_SECONDS, Clock, RetryPolicy, classify


@pytest.mark.parametrize(
    "attempts, expected",
    [(1, 10), (2, 30), (3, 60), (4, 300), (5, 600), (6, 1800), (7, 3600), (8, 3 * 3600), (9, 6 * 3600), (10, 12 * 3600), (29, 12 * 3600)],
)
def test_delay_follows_azures_schedule_within_jitter(attempts, expected):
    delay = RetryPolicy().delay_after(attempts, random.Random(attempts))
    assert expected * 0.9 <= delay <= expected * 1.1


def test_schedule_is_azures_documented_one():
    assert SCHEDULE_SECONDS == (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)
    assert EVERY_AFTER_SECONDS == 43200


def test_delays_are_randomised_so_failures_do_not_stampede():
    rng = random.Random(1)
    assert len({round(RetryPolicy().delay_after(1, rng), 6) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    "status, verdict",
    [(200, "delivered"), (201, "delivered"), (202, "delivered"), (204, "delivered"), (205, "retry"), (301, "retry"),
     (400, "reject"), (401, "reject"), (403, "reject"), (413, "reject"), (404, "retry"), (408, "retry"), (429, "retry"),
     (500, "retry"), (503, "retry"), (None, "retry")],
)
def test_classify_status(status, verdict):
    assert classify(status) == verdict


def test_time_scale_divides_waits():
    assert Clock(0.001).scaled(10) == pytest.approx(0.01)
    assert Clock(1).scaled(10) == 10


def test_ttl_in_seconds():
    assert RetryPolicy(event_ttl_minutes=5).ttl_seconds == 300
