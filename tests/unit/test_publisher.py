"""The publisher: pure generation of orders and events, and batching through a fake SDK client."""

from __future__ import annotations

import datetime as dt
import io
import random
from decimal import Decimal

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent

from publisher.cli import main
from publisher.events import new_order_events
from publisher.orders import DEFAULT_ORDER_ID, generate_orders, order_ids
from publisher.sending import Progress, PublishResult, publish
from servicekit.order import parse_order

NOW = dt.datetime(2026, 1, 31, 12, 0, tzinfo=dt.UTC)


class FakeClient:
    """Records each send call like EventGridPublisherClient would receive it; fails on cue."""

    def __init__(self, failures: dict[int, Exception] | None = None) -> None:
        self.calls: list[tuple[list, dict]] = []
        self.failures = failures or {}
        self.closed = False

    def send(self, events, **kwargs):
        self.calls.append((events, kwargs))
        error = self.failures.get(len(self.calls))
        if error is not None:
            raise error

    def close(self):
        self.closed = True


def refused(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"status {status}")
    error.status_code = status
    return error


class Ticks:
    """A clock that advances one second per reading, so timings in output are predictable."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


# --- generation ---------------------------------------------------------------------------------


def test_generated_orders_pass_the_subscribers_validation():
    for data in generate_orders(200, rng=random.Random(1), now=NOW):
        order = parse_order(data)
        assert order.customer_email.endswith("@example.com")
        assert 1 <= len(order.lines) <= 4
        assert data["createdAt"] == "2026-01-31T12:00:00.000Z"


def test_generated_total_equals_the_sum_of_its_lines_exactly():
    for data in generate_orders(200, rng=random.Random(2), now=NOW):
        lines = sum(Decimal(str(item["unitPrice"])) * item["quantity"] for item in data["items"])
        assert Decimal(str(data["total"])) == lines


def test_a_single_order_is_12345_unless_told_otherwise():
    assert next(generate_orders(1, rng=random.Random(), now=NOW))["orderId"] == DEFAULT_ORDER_ID == "12345"
    assert next(generate_orders(1, rng=random.Random(), first_order_id="A-7", now=NOW))["orderId"] == "A-7"


@pytest.mark.parametrize("first", [None, "500", "ORD"])
def test_many_orders_get_distinct_ids(first):
    ids = order_ids(1000, rng=random.Random(3), first=first)

    assert len(set(ids)) == 1000
    if first == "500":
        assert ids[:3] == ["500", "501", "502"]


def test_events_get_distinct_ids_and_a_seed_repeats_them():
    def run(seed):
        rng = random.Random(seed)
        return list(new_order_events(generate_orders(500, rng=rng, now=NOW), schema="eventgrid", rng=rng))

    first, again, other = run(9), run(9), run(10)

    assert len({event.id for event in first}) == 500
    assert [event.id for event in first] == [event.id for event in again]
    assert first[0].id != other[0].id


def test_eventgrid_event_has_the_new_order_shape():
    rng = random.Random(4)
    [order] = generate_orders(1, rng=rng, now=NOW)
    [event] = new_order_events([order], schema="eventgrid", rng=rng)

    assert isinstance(event, EventGridEvent)
    assert (event.event_type, event.subject, event.data_version) == ("NewOrder", "orders/12345", "1.0")
    assert event.data == order


def test_cloudevent_has_the_new_order_shape():
    rng = random.Random(5)
    [order] = generate_orders(1, rng=rng, now=NOW)
    [event] = new_order_events([order], schema="cloudevents", rng=rng)

    assert isinstance(event, CloudEvent)
    assert (event.type, event.subject, event.source) == ("NewOrder", "orders/12345", "/shop/checkout")
    assert event.specversion == "1.0"
    assert event.data == order


# --- sending ------------------------------------------------------------------------------------


def test_events_are_sent_in_batches_of_the_given_size():
    client = FakeClient()

    result = publish(client, range(250), total=250, batch_size=100, send_options={"retry_total": 0})

    assert [len(events) for events, _ in client.calls] == [100, 100, 50]
    assert client.calls[0][1] == {"retry_total": 0}
    assert (result.accepted, result.failed) == (250, 0)


def test_a_refused_batch_counts_as_failed_and_the_next_batches_are_still_sent():
    client = FakeClient(failures={2: refused(400)})

    result = publish(client, range(250), total=250, batch_size=100)

    assert len(client.calls) == 3
    assert (result.accepted, result.failed) == (150, 100)
    assert result.errors == ["HTTP 400: status 400"]


def test_an_unreachable_endpoint_fails_the_rest_without_trying_each_batch():
    client = FakeClient(failures={2: ServiceRequestError("Connection refused")})

    result = publish(client, range(500), total=500, batch_size=100)

    assert len(client.calls) == 2
    assert (result.accepted, result.failed) == (100, 400)


def test_summary_reports_accepted_failed_seconds_and_rate():
    result = publish(FakeClient(), range(300), total=300, batch_size=100, clock=Ticks())

    # Ticks: start at 1 s, after the third batch 4 s: 3 s for 300 events.
    assert result.summary() == "summary: accepted=300 failed=0 seconds=3.00 events/s=100.0"
    assert PublishResult().summary() == "summary: accepted=0 failed=0 seconds=0.00 events/s=0.0"


def test_progress_prints_a_line_per_tenth_of_the_events():
    stream = io.StringIO()

    publish(FakeClient(), range(1000), total=1000, batch_size=50, progress=Progress(1000, stream, clock=Ticks()))

    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("progress: 100/1000 events (10%), 0 failed")
    assert lines[-1].startswith("progress: 1000/1000 events (100%)")


def test_progress_prints_once_when_a_batch_jumps_several_tenths():
    stream = io.StringIO()

    publish(FakeClient(), range(100), total=100, batch_size=40, progress=Progress(100, stream, clock=Ticks()))

    assert [line.split(" events")[0] for line in stream.getvalue().splitlines()] == [
        "progress: 40/100",
        "progress: 80/100",
        "progress: 100/100",
    ]


# --- the command line ---------------------------------------------------------------------------


def run_cli(argv, client, environ=None):
    out, err, made = io.StringIO(), io.StringIO(), []

    def factory(endpoint, key):
        made.append((endpoint, key))
        return client

    code = main(argv, environ=environ or {}, client_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue(), made


def test_cli_publishes_one_order_12345_by_default_and_exits_zero():
    client = FakeClient()

    code, out, err, made = run_cli([], client)

    assert code == 0
    assert made == [("http://localhost:5000/api/events", "local-dev-key")]
    [(events, options)] = client.calls
    assert events[0].data["orderId"] == "12345"
    assert options == {"retry_total": 3, "connection_timeout": 30.0, "read_timeout": 30.0}
    assert out.startswith("summary: accepted=1 failed=0 ")
    assert err == ""
    assert client.closed


def test_cli_takes_endpoint_and_key_from_the_environment():
    environ = {"PUBLISHER_ENDPOINT": "http://broker:5000/api/events", "PUBLISHER_KEY": "secret"}

    _, out, _, made = run_cli([], FakeClient(), environ)

    assert made == [("http://broker:5000/api/events", "secret")]
    assert "endpoint=http://broker:5000/api/events" in out


def test_cli_exits_non_zero_and_explains_when_any_event_failed():
    code, out, err, _ = run_cli(["--count", "300", "--batch-size", "100"], FakeClient(failures={3: refused(503)}))

    assert code == 1
    assert "accepted=200 failed=100" in out
    assert "error: HTTP 503" in err
    assert "progress: " in err


def test_cli_sends_cloudevents_with_unique_order_ids_when_asked():
    client = FakeClient()

    run_cli(["--count", "20", "--schema", "cloudevents", "--batch-size", "7"], client)

    events = [event for batch, _ in client.calls for event in batch]
    assert all(isinstance(event, CloudEvent) for event in events)
    assert len({event.data["orderId"] for event in events}) == 20
    assert [len(batch) for batch, _ in client.calls] == [7, 7, 6]


@pytest.mark.parametrize(
    "argv", [["--count", "0"], ["--batch-size", "-1"], ["--schema", "avro"], ["--retries", "-1"], ["--timeout", "0"]]
)
def test_cli_rejects_nonsense_options(argv):
    with pytest.raises(SystemExit) as stopped:
        run_cli(argv, FakeClient())

    assert stopped.value.code == 2
