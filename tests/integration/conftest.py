"""Fixtures of the integration tier: real broker and subscriber processes on loopback ports, an
in-test webhook and SMTP server, and the tails of every process log attached to a failing test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.processes import Processes, SmtpSink, Webhook
from tests.integration.sdk_support import LiveBroker, RecordingSubscriber, recording_subscriber, start_broker

# Processes objects alive right now (kept in the pytest config's stash, not at module level), so the
# report of a failing test can show what each server logged.
LIVE = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[LIVE] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for procs in item.config.stash.get(LIVE, []):
            for name, tail in procs.tails():
                report.sections.append((f"{name} log (last lines)", tail))
    return report


def _processes(config: pytest.Config, workdir: Path) -> Iterator[Processes]:
    procs = Processes(workdir)
    config.stash[LIVE].append(procs)
    try:
        yield procs
    finally:
        procs.close()
        config.stash[LIVE].remove(procs)


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Start services for this test; all are killed (whole process tree) when it ends."""
    yield from _processes(request.config, tmp_path)


@pytest.fixture(scope="module")
def module_processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """Services shared by a module's tests (one broker per time scale keeps the tier fast)."""
    yield from _processes(request.config, tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]))


@pytest.fixture
def webhook() -> Iterator[Callable[..., Webhook]]:
    """Factory of started recording webhooks, all stopped at teardown."""
    hooks: list[Webhook] = []

    def make(*args, start: bool = True, **kwargs) -> Webhook:
        hook = Webhook(*args, **kwargs)
        hooks.append(hook)
        return hook.start() if start else hook

    yield make
    for hook in hooks:
        hook.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def subscriber() -> Iterator[RecordingSubscriber]:
    """A recording webhook (sdk_support.RecordingSubscriber) shared by a module's SDK tests."""
    with recording_subscriber() as s:
        yield s


@pytest.fixture(scope="module")
def sdk_broker(subscriber, module_processes) -> Iterator[LiveBroker]:
    """The broker of a module's SDK tests, with its HTTPS port. Set up after the subscriber, so torn
    down before it: the broker closes its connections first."""
    broker = start_broker(module_processes, https=True)
    yield broker
    broker.http.close()
