"""Who may talk to the broker: the host allow-list, cross-site writes and the management key, as a
pure function and through the app."""

from __future__ import annotations

import pytest

from broker import create_app
from broker.config import Config
from broker.security import COOKIE, Guard, own_names

GUARD = Guard(own_names("broker, my-laptop.lan", "http://events.test:5000"))


@pytest.mark.parametrize("host, allowed", [
    ("localhost:5000", True), ("LOCALHOST", True), ("127.0.0.1:5000", True), ("[::1]:5000", True), ("10.1.2.3", True),
    ("app.localhost:5000", True), ("broker:5000", True), ("my-laptop.lan", True), ("events.test", True),
    ("evil.example:5000", False), ("localhost.evil.example", False), ("brokers", False), (None, True),
])
def test_only_the_brokers_own_names_and_ip_literals_are_served(host, allowed):
    headers = {"host": host} if host is not None else {}
    assert (GUARD.check("GET", "/topics", headers, data_plane=False) is None) is allowed


@pytest.mark.parametrize("headers, refused", [
    ({"sec-fetch-site": "cross-site"}, True),
    ({"sec-fetch-site": "same-site"}, True),
    ({"sec-fetch-site": "same-origin"}, False),
    ({"origin": "http://evil.example"}, True),
    ({"origin": "null"}, True),
    ({"origin": "http://localhost:5000"}, False),  # the dashboard's own fetch
    ({}, False),  # an SDK or curl: neither header
])
def test_writes_from_another_sites_page_are_refused(headers, refused):
    found = GUARD.check("POST", "/api/events", {"host": "localhost:5000", **headers}, data_plane=True)
    assert (found is not None and found.status == 403) is refused
    assert GUARD.check("GET", "/topics", {"host": "localhost:5000", **headers}, data_plane=False) is None  # reads pass


@pytest.mark.parametrize("content_type, length, status", [
    ("text/plain", "20", 415), ("application/x-www-form-urlencoded", "5", 415), ("application/json", "20", None),
    ("application/merge-patch+json", "2", None), ("", "0", None), (None, None, None),
])
def test_a_management_write_with_a_body_must_be_json(content_type, length, status):
    headers = {"host": "localhost"}
    if content_type is not None:
        headers["content-type"] = content_type
    if length is not None:
        headers["content-length"] = length
    found = GUARD.check("PUT", "/topics/orders", headers, data_plane=False)
    assert (found.status if found else None) == status


def test_the_management_key_guards_management_and_dashboard_but_not_data_plane_or_health():
    guard = Guard(own_names(), "s3cret")
    host = {"host": "localhost"}
    assert guard.check("GET", "/topics", host, data_plane=False).status == 401
    assert guard.check("GET", "/dashboard/api/topics", host, data_plane=False).status == 401
    assert guard.check("GET", "/topics", {**host, "authorization": "Bearer s3cret"}, data_plane=False) is None
    assert guard.check("GET", "/", {**host, "cookie": f"a=b; {COOKIE}=s3cret"}, data_plane=False) is None
    assert guard.check("GET", "/topics", {**host, "authorization": "Bearer wrong"}, data_plane=False).status == 401
    for open_path in ("/healthz", "/readyz", "/metrics", "/validate", "/dashboard/static/dashboard.js"):
        assert guard.check("GET", open_path, host, data_plane=False) is None
    assert guard.check("POST", "/api/events", host, data_plane=True) is None


def test_the_dashboard_opened_with_its_key_remembers_it_in_a_strict_cookie(tmp_path):
    app = create_app(Config.from_env({"BROKER_MANAGEMENT_KEY": "s3cret"}, data_dir=tmp_path), start=False)
    try:
        client = app.test_client()
        assert client.get("/").status_code == 401
        opened = client.get("/?key=s3cret")
        assert opened.status_code == 200
        cookie = opened.headers["Set-Cookie"]
        assert f"{COOKIE}=s3cret" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert client.get("/dashboard/api/topics").status_code == 200  # the test client sends the cookie back
        assert app.test_client().get("/?key=wrong").status_code == 401
    finally:
        app.extensions["broker"].stop()


def test_a_text_plain_form_post_to_subscribe_changes_nothing(client, engine):
    resp = client.post("/subscribe", data='{"eventType": "A", "endpoint": "http://evil.example/x"}', content_type="text/plain")
    assert resp.status_code == 415 and engine.registry.subscriptions() == ()
    forged = client.post("/subscribe", json={"eventType": "A", "endpoint": "http://evil.example/x"},
                         headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403 and engine.registry.subscriptions() == ()
