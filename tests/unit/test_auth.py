"""Unit tests for broker.auth: access keys and shared access signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus, urlsplit

import pytest

from broker.auth import AuthError, authenticate, generate_key, generate_sas_token, parse_expiry, path_covers

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
KEY1 = generate_key()
KEY2 = generate_key()
OTHER = generate_key()
PATH = "/topics/orders/api/events"
ENDPOINT = "http://localhost:8080" + PATH


def token(resource=ENDPOINT, key=KEY1, expiry=NOW + timedelta(hours=1)):
    return generate_sas_token(resource, key, expiry)


def doc_style_token(resource: str, key: str, expiry_text: str) -> str:
    """A token built the way the C# sample in Azure's docs does: HttpUtility.UrlEncode (lower-case
    escapes, '+' for spaces) of the resource and of DateTime.ToString(en-US)."""

    def lower_escapes(text: str) -> str:
        out, i = [], 0
        while i < len(text):
            if text[i] == "%":
                out.append(text[i : i + 3].lower())
                i += 3
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    unsigned = f"r={lower_escapes(quote_plus(resource))}&e={lower_escapes(quote_plus(expiry_text))}"
    signature = base64.b64encode(hmac.new(base64.b64decode(key), unsigned.encode(), hashlib.sha256).digest()).decode()
    return f"{unsigned}&s={lower_escapes(quote_plus(signature))}"


def auth_error(headers, keys=(KEY1, KEY2), path=PATH, now=NOW, query=None) -> AuthError:
    with pytest.raises(AuthError) as info:
        authenticate(headers, list(keys), path, now=now, query=query)
    return info.value


@pytest.fixture
def sdk_request():
    """Build a publish request with the real azure-eventgrid client and capture it before it is sent."""

    def capture(credential, endpoint=ENDPOINT):
        from azure.eventgrid import EventGridEvent, EventGridPublisherClient

        captured = {}

        class Captured(Exception):
            pass

        def hook(pipeline_request):
            captured.update(headers=dict(pipeline_request.http_request.headers), url=pipeline_request.http_request.url)
            raise Captured

        client = EventGridPublisherClient(endpoint, credential)
        with pytest.raises(Captured):
            client.send([EventGridEvent(subject="s", event_type="T", data={}, data_version="1")], raw_request_hook=hook)
        return captured["headers"], captured["url"]

    return capture


# ------------------------------------------------------------------------------------------------
# Keys and token generation


def test_generated_key_is_32_random_bytes_in_base64():
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


@pytest.mark.parametrize(
    "expiry",
    [NOW, datetime(2031, 6, 15, 18, 20, 15, 123456, tzinfo=timezone.utc), datetime(2031, 6, 15, 18, 20, 15)],
    ids=["aware", "aware-micro", "naive"],
)
def test_generated_token_is_identical_to_the_sdk_generate_sas(expiry):
    from azure.eventgrid import generate_sas

    # The SDK signs "<endpoint>?apiVersion=<version>".
    assert generate_sas_token(ENDPOINT + "?apiVersion=2018-01-01", KEY1, expiry) == generate_sas(ENDPOINT, KEY1, expiry)


# ------------------------------------------------------------------------------------------------
# Accepted credentials


def test_no_configured_keys_allows_anonymous_requests():
    authenticate({}, [], PATH, now=NOW)
    authenticate({"aeg-sas-key": "anything"}, ["", ""], PATH, now=NOW)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"aeg-sas-key": KEY1}, None),
        ({"aeg-sas-key": KEY2}, None),
        ({"AEG-SAS-KEY": KEY1}, None),
        ({}, {"aeg-sas-key": KEY2}),
        ({"Authorization": f"SharedAccessKey {KEY1}"}, None),
        ({"aeg-sas-token": token()}, None),
        ({"aeg-sas-token": token(key=KEY2)}, None),
        ({"Authorization": f"SharedAccessSignature {token()}"}, None),
        ({"authorization": f"sharedaccesssignature {token()}"}, None),
    ],
    ids=["key1", "key2", "header-case", "query-key", "sharedaccesskey", "token", "token-key2", "authorization", "authorization-case"],
)
def test_valid_credentials_are_accepted(headers, query):
    authenticate(headers, [KEY1, KEY2], PATH, now=NOW, query=query)


def test_azure_sdk_key_credential_authenticates(sdk_request):
    from azure.core.credentials import AzureKeyCredential

    headers, _ = sdk_request(AzureKeyCredential(KEY2))

    assert headers["aeg-sas-key"] == KEY2  # what the SDK's key policy sends to a topic
    authenticate(headers, [KEY1, KEY2], PATH, now=NOW)
    assert "not valid" in auth_error(headers, keys=[KEY1]).message


def test_azure_sdk_sas_credential_with_generate_sas_authenticates(sdk_request):
    from azure.core.credentials import AzureSasCredential
    from azure.eventgrid import generate_sas

    sas = generate_sas(ENDPOINT, KEY1, datetime.now(timezone.utc) + timedelta(hours=1))
    headers, url = sdk_request(AzureSasCredential(sas))

    assert headers["aeg-sas-token"] == sas
    authenticate(headers, [KEY1, KEY2], urlsplit(url).path)


@pytest.mark.parametrize(
    "expiry_text",
    ["6/15/2031 6:20:15 PM", "2031-06-15T18:20:15", "2031-06-15T18:20:15.1234567Z", "2031-06-15 18:20:15+00:00", "1939314015"],
    ids=["csharp-en-us", "python-isoformat", "iso-z", "str-datetime", "epoch"],
)
def test_documented_token_encodings_and_expiry_forms_are_accepted(expiry_text):
    sas = doc_style_token("https://orders.westus2-1.eventgrid.azure.net/topics/orders/api/events", KEY1, expiry_text)

    authenticate({"aeg-sas-token": sas}, [KEY1], PATH, now=NOW)
    assert "expired" in auth_error({"aeg-sas-token": sas}, keys=[KEY1], now=datetime(2032, 1, 1, tzinfo=timezone.utc)).message


def test_non_base64_key_still_signs_and_verifies():
    key = "local-dev-key"
    authenticate({"aeg-sas-token": token(key=key)}, [key], PATH, now=NOW)


def test_naive_now_is_treated_as_utc():
    authenticate({"aeg-sas-token": token()}, [KEY1], PATH, now=NOW.replace(tzinfo=None))


# ------------------------------------------------------------------------------------------------
# Rejected credentials


def _tampered_resource() -> str:
    real = token()
    return real.replace("orders", "refunds", 1)


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "no credentials"),
        ({"aeg-sas-key": OTHER}, "key is not valid"),
        ({"aeg-sas-key": ""}, "key is not valid"),
        ({"Authorization": f"SharedAccessKey {OTHER}"}, "key is not valid"),
        ({"aeg-sas-token": token(key=OTHER)}, "signature does not match"),
        ({"Authorization": f"SharedAccessSignature {token(key=OTHER)}"}, "signature does not match"),
        ({"aeg-sas-token": _tampered_resource()}, "signature does not match"),
        ({"aeg-sas-token": token(expiry=NOW - timedelta(seconds=1))}, "expired"),
        ({"aeg-sas-token": token(expiry=NOW)}, "expired"),
        ({"aeg-sas-token": token(resource="http://localhost:8080/topics/refunds/api/events")}, "does not cover"),
        ({"aeg-sas-token": token(resource="http://localhost:8080/topics/ord")}, "does not cover"),
        ({"aeg-sas-token": token(resource="http://localhost:8080/api/events")}, "does not cover"),
        ({"aeg-sas-token": doc_style_token(ENDPOINT, KEY1, "next tuesday")}, "cannot read the expiry"),
        ({"aeg-sas-token": token()[:-3] + "!!!"}, "not base64"),
        ({"Authorization": "Bearer eyJhbGciOi"}, "not supported"),
    ],
    ids=[
        "missing",
        "wrong-key",
        "empty-key",
        "wrong-sharedaccesskey",
        "token-wrong-key",
        "authorization-wrong-key",
        "tampered-resource",
        "expired",
        "expires-now",
        "other-topic",
        "partial-segment",
        "other-path",
        "unreadable-expiry",
        "signature-not-base64",
        "bearer",
    ],
)
def test_invalid_credentials_are_rejected_with_401(headers, fragment):
    err = auth_error(headers)

    assert err.status == 401
    assert err.code == "Unauthorized"
    assert fragment in err.message
    assert err.to_body()["error"]["code"] == "Unauthorized"


@pytest.mark.parametrize("bad", ["lrPUpeSQUJEMj3paatULJ1ejvtgMvU4PIy3o+sypQ0w=", "r=x&e=y", "e=1&s=2", "r=&e=1&s=2"])
def test_malformed_token_is_400_like_azure(bad):
    err = auth_error({"aeg-sas-token": bad})
    assert err.status == 400
    assert "r=UrlEncodedResource&e=UrlEncodedUtcExpiration&s=UrlEncodedSignature" in err.message


def test_a_sas_key_header_is_checked_even_when_a_token_is_also_sent():
    assert "key is not valid" in auth_error({"aeg-sas-key": OTHER, "aeg-sas-token": token()}).message


# ------------------------------------------------------------------------------------------------
# Resource matching (emulator deviation: compare paths only)


@pytest.mark.parametrize(
    ("resource", "request_path", "covered"),
    [
        ("http://localhost:8080/topics/orders/api/events", PATH, True),
        ("https://eventgrid-emulator:8443/topics/orders/api/events?apiVersion=2018-01-01", PATH, True),
        ("http://127.0.0.1/TOPICS/Orders/api/events/", PATH, True),
        ("localhost:8080/topics/orders/api/events", PATH, True),
        ("/topics/orders/api/events", PATH + "/", True),
        ("http://localhost:8080/topics/orders", PATH, True),  # "valid for all resources prefixed with" r
        ("http://localhost:8080", PATH, True),
        ("http://localhost:8080/topics/orders/api/events", "/topics/orders", False),
        ("http://localhost:8080/topics/ord", PATH, False),
        ("http://localhost:8080/api/events", PATH, False),
        ("http://localhost:8080/api/events", "/api/events", True),
        ("http://ns.local/namespaces/ns/topics/orders?apiVersion=2018-01-01", "/namespaces/ns/topics/orders:publish", True),
        ("http://ns.local/namespaces/ns/topics/orders", "/namespaces/ns/topics/orders/eventsubscriptions/s:receive", True),
        ("http://ns.local/namespaces/ns/topics/orders:publish", "/namespaces/ns/topics/orders:publish", True),
        ("http://ns.local/namespaces/ns/topics/ord", "/namespaces/ns/topics/orders:publish", False),
        ("http://ns.local/namespaces/ns/topics/orders", "/namespaces/ns/topics/other:publish", False),
    ],
)
def test_signed_resource_path_covers_request_path(resource, request_path, covered):
    from broker.auth import resource_path_of

    assert path_covers(resource_path_of(resource), request_path) is covered
    sas = token(resource=resource)
    if covered:
        authenticate({"aeg-sas-token": sas}, [KEY1], request_path, now=NOW)
    else:
        assert "does not cover" in auth_error({"aeg-sas-token": sas}, keys=[KEY1], path=request_path).message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6/15/2017 6:20:15 PM", datetime(2017, 6, 15, 18, 20, 15, tzinfo=timezone.utc)),
        ("2017-06-15 18:20:15+02:00", datetime(2017, 6, 15, 16, 20, 15, tzinfo=timezone.utc)),
        ("2017-06-15T18:20:15Z", datetime(2017, 6, 15, 18, 20, 15, tzinfo=timezone.utc)),
        ("1438205742", datetime(2015, 7, 29, 21, 35, 42, tzinfo=timezone.utc)),
        ("garbage", None),
    ],
)
def test_expiry_forms_parse_to_utc(text, expected):
    assert parse_expiry(text) == expected


def test_expiry_without_offset_is_utc_whatever_the_local_zone(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_expiry("2017-06-15T18:20:15") == datetime(2017, 6, 15, 18, 20, 15, tzinfo=timezone.utc)
        assert parse_expiry("6/15/2017 6:20:15 PM") == datetime(2017, 6, 15, 18, 20, 15, tzinfo=timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()
