"""Unit-test fixtures: a fresh broker app on its own temporary store for every test, with the
background threads off, so tests drive the dispatcher by hand and never touch the network."""

from __future__ import annotations

import pytest

from broker import create_app
from broker.config import Config


class ManualClock:
    """A clock tests move by hand; waits are scaled like the real one."""

    def __init__(self, now: float = 1_700_000_000.0, time_scale: float = 1.0) -> None:
        self.t = now
        self.time_scale = time_scale

    def now(self) -> float:
        return self.t

    def scaled(self, seconds: float) -> float:
        return seconds * self.time_scale

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def config(tmp_path):
    return Config.from_env({}, data_dir=tmp_path)


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def app(config, clock):
    app = create_app(config, start=False, clock=clock)
    yield app
    app.extensions["broker"].stop()


@pytest.fixture
def engine(app):
    return app.extensions["broker"]


@pytest.fixture
def client(app):
    return app.test_client()
