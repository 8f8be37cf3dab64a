"""The pytest plugin installed with the package (entry point `pytest11`): the `eventgrid_emulator`
fixture, one emulator for the test session, with a recording webhook.

    def test_order_is_delivered(eventgrid_emulator):
        topic = eventgrid_emulator.create_topic("orders", keys=True)
        eventgrid_emulator.subscribe("orders", "recorder")          # to eventgrid_emulator.webhook
        EventGridPublisherClient(topic["endpoint"], AzureKeyCredential(topic["key1"])).send([...])
        [event] = eventgrid_emulator.webhook.wait_for(eventType="NewOrder")

Only broker.testing is imported (the standard library): nothing of the broker's server loads
into the test process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import Emulator


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eventgrid-emulator")
    group.addoption("--eventgrid-time-scale", type=float, default=1.0,
                    help="BROKER_TIME_SCALE of the eventgrid_emulator fixture (e.g. 0.001: retries in milliseconds)")


@pytest.fixture(scope="session")
def eventgrid_emulator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """An Event Grid emulator on a free loopback port for the whole test session."""
    emulator = Emulator.start(tmp_path_factory.mktemp("eventgrid-emulator"),
                              time_scale=request.config.getoption("--eventgrid-time-scale"))
    try:
        yield emulator
    finally:
        emulator.stop()
