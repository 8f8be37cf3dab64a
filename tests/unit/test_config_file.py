"""BROKER_CONFIG declares topics, domains (with their topics) and namespaces (with theirs), each
with its subscriptions, applied at start-up and again on every start."""

from __future__ import annotations

import json

import pytest

from broker import create_app
from broker.config import Config
from broker.resources import DOMAIN, DOMAIN_TOPIC, NAMESPACE, NAMESPACE_TOPIC

HOOK = {"endpointType": "WebHook", "properties": {"endpointUrl": "http://127.0.0.1:9/hook", "skipValidation": True}}

DECLARED = {
    "topics": [{"name": "orders", "inputSchema": "CloudEventSchemaV1_0", "subscriptions": [{"name": "mailer", "properties": {"destination": HOOK}}]}],
    "domains": [{"name": "shop", "keys": ["shop-key"],
                 "topics": [{"name": "europe", "subscriptions": [{"name": "eu-mail", "properties": {"destination": HOOK}}]}],
                 "subscriptions": [{"name": "audit", "properties": {"destination": HOOK}}]}],
    "namespaces": [{"name": "warehouse", "topics": [{"name": "parcels", "subscriptions": [{"name": "packer", "properties": {
        "deliveryConfiguration": {"deliveryMode": "Queue", "queue": {"receiveLockDurationInSeconds": 120}}}}]}]}],
}


def started(tmp_path, declared):
    path = tmp_path / "broker.json"
    path.write_text(json.dumps(declared))
    return create_app(Config.from_env({}, data_dir=tmp_path / "data", config_file=path), start=False)


def test_a_config_file_declares_every_kind_with_its_subscriptions(tmp_path):
    app = started(tmp_path, DECLARED)
    reg = app.extensions["broker"].registry
    try:
        assert reg.topic("orders").input_schema == "CloudEventSchemaV1_0" and reg.subscription("orders", "mailer") is not None
        shop = reg.get(DOMAIN, "shop")
        assert shop.keys == ["shop-key"] and [s.name for s in shop.subscriptions] == ["audit"]
        assert [s.name for s in reg.get(DOMAIN_TOPIC, "europe", shop).subscriptions] == ["eu-mail"]
        parcels = reg.get(NAMESPACE_TOPIC, "parcels", reg.get(NAMESPACE, "warehouse"))
        [packer] = parcels.subscriptions
        assert (packer.mode, packer.lock_seconds) == ("queue", 120)
        assert len(reg.get(NAMESPACE, "warehouse").keys) == 2  # a namespace always has keys
    finally:
        app.extensions["broker"].stop()
    again = started(tmp_path, DECLARED)  # the next start finds them stored and changes nothing
    try:
        assert len(again.extensions["broker"].registry.subscriptions()) == 4
    finally:
        again.extensions["broker"].stop()


@pytest.mark.parametrize("declared", [
    {"domains": [{"topics": []}]},
    {"namespaces": [{"name": "warehouse", "topics": [{"name": "x"}]}]},
    {"topics": "orders"},
])
def test_a_bad_config_file_stops_the_broker_with_the_reason(tmp_path, declared):
    with pytest.raises(SystemExit) as stopped:
        started(tmp_path, declared)
    assert "BROKER_CONFIG" in str(stopped.value)
