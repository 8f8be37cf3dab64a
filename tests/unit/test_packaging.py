"""The package: its pins are the image's, and the command's flags set the settings they name."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from broker.cli import FLAGS, environment, parse_args
from broker.config import ENV

REPO = Path(__file__).resolve().parents[2]


def _pins(lines) -> set[str]:
    return {line.split("#")[0].strip().replace('"', "'") for line in lines if line.split("#")[0].strip() and not line.startswith("-r")}


def test_the_packages_dependencies_are_the_broker_images_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _pins(project["dependencies"]) == _pins((REPO / "requirements" / "broker.txt").read_text().splitlines())


def test_flags_win_over_the_environment_and_leave_the_rest_alone():
    args = parse_args(["--port", "6000", "--time-scale", "0.01", "--data-dir", "/tmp/x"])
    env = environment(args, {"BROKER_PORT": "5000", "BROKER_DEFAULT_TOPIC": "orders"})
    assert env["BROKER_PORT"] == "6000" and env["BROKER_TIME_SCALE"] == "0.01" and env["BROKER_DATA_DIR"] == "/tmp/x"
    assert env["BROKER_DEFAULT_TOPIC"] == "orders" and "BROKER_HOST" not in env


def test_the_storage_and_tls_flags_set_their_variables():
    args = parse_args(["--storage", "UseDevelopmentStorage=true", "--cert", "c.pem", "--key", "k.pem", "--allowed-hosts", "eg"])
    env = environment(args, {})
    assert (env["BROKER_STORAGE_CONNECTION_STRING"], env["BROKER_TLS_CERT"], env["BROKER_TLS_KEY"], env["BROKER_ALLOWED_HOSTS"]) == (
        "UseDevelopmentStorage=true", "c.pem", "k.pem", "eg")


def test_every_flag_sets_a_documented_setting():
    assert set(FLAGS.values()) <= set(ENV)
    assert set(FLAGS) <= set(vars(parse_args([]))) and isinstance(parse_args([]), argparse.Namespace)
