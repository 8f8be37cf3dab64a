from pathlib import Path

import pytest

from broker.config import ENV, Config


def test_documented_defaults_match_the_dataclass_defaults():
    assert Config.from_env({}) == Config()


def test_environment_overrides_and_types():
    config = Config.from_env({"BROKER_PORT": "6000", "BROKER_TIME_SCALE": "0.001", "BROKER_AUTO_CREATE_TOPICS": "false",
                              "BROKER_DATA_DIR": "/tmp/x", "BROKER_HTTPS_PORT": "5443"})
    assert (config.port, config.time_scale, config.auto_create_topics, config.data_dir, config.https_port) == (
        6000, 0.001, False, Path("/tmp/x"), 5443)


@pytest.mark.parametrize("env", [{"BROKER_PORT": "abc"}, {"BROKER_TIME_SCALE": "0"}, {"BROKER_SYNC": "sometimes"},
                                 {"BROKER_AUTO_CREATE_TOPICS": "maybe"}, {"BROKER_CPU": "fastest"}])
def test_invalid_values_are_refused_with_the_variable_named(env):
    with pytest.raises(ValueError):
        Config.from_env(env)


def test_every_field_has_an_environment_variable():
    assert {name for name, _d, _doc in ENV.values()} == set(Config.__dataclass_fields__)


@pytest.mark.parametrize(("setting", "allowed", "chosen"), [
    ("auto", {0, 1}, 1), ("auto", {2, 5, 7}, 7), ("auto", {3}, None), ("all", {0, 1}, None), ("0", {0, 1}, 0)])
def test_the_broker_keeps_its_threads_on_one_cpu_unless_told_otherwise(setting, allowed, chosen):
    from broker.cli import choose_cpu

    assert choose_cpu(setting, allowed) == chosen


def test_a_cpu_the_process_may_not_use_is_refused():
    from broker.cli import choose_cpu

    with pytest.raises(ValueError, match="BROKER_CPU=4"):
        choose_cpu("4", {0, 1})
