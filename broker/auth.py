"""Publisher authentication with topic access keys and shared access signatures (SAS).

Azure Event Grid topics accept:

* ``aeg-sas-key: <access key>`` (also as the ``aeg-sas-key`` query parameter);
* ``aeg-sas-token: r=<resource>&e=<expiry>&s=<signature>``;
* ``Authorization: SharedAccessSignature r=...&e=...&s=...``.

The emulator also takes ``Authorization: SharedAccessKey <key>``, which is how the Azure SDK sends
an AzureKeyCredential to Event Grid namespaces.

A SAS signature is ``base64(HMAC-SHA256(base64decode(key), "r=<r>&e=<e>"))`` over the two fields
exactly as they appear (still URL-encoded) in the token, which is what azure.eventgrid.generate_sas,
the C# sample and the Python sample in Azure's documentation all sign. Verifying the literal text
makes the check independent of how a client chose to percent-encode (%3a vs %3A, + vs %20).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import quote, unquote, unquote_plus, urlsplit

# azure.eventgrid's constants.SAFE_ENCODE: characters generate_sas leaves unescaped.
_SDK_SAFE = "~()*!.'"


class AuthError(Exception):
    """The request is not authenticated.

    `status` is 401, except for a token that is not of the form r=...&e=...&s=..., which Azure
    answers with 400 ("Invalid key in aeg-sas-token. Valid format :r=UrlEncodedResource&
    e=UrlEncodedUtcExpiration&s=UrlEncodedSignature.").
    """

    def __init__(self, message: str, *, code: str = "Unauthorized", status: int = 401):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": [{"code": self.code, "message": self.message}]}}


def generate_key() -> str:
    """A new access key: 32 random bytes, base64 (the shape of an Azure topic key)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key_bytes(key: str) -> bytes:
    # Keys are base64 and the signature uses the decoded bytes (as the SDK does). A configured key
    # that is not base64 (e.g. "local-dev-key") is used as its UTF-8 bytes instead of failing.
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return key.encode("utf-8")


def _sign(key: str, unsigned: str) -> bytes:
    return hmac.new(_key_bytes(key), unsigned.encode("utf-8"), hashlib.sha256).digest()


def generate_sas_token(resource: str, key: str, expiry: datetime) -> str:
    """A SAS token in the format of azure.eventgrid.generate_sas.

    generate_sas(endpoint, key, expiry) equals generate_sas_token(endpoint + "?apiVersion=2018-01-01",
    key, expiry): the SDK appends its API version to the endpoint before signing.
    """
    unsigned = f"r={quote(resource, safe=_SDK_SAFE)}&e={quote(str(expiry), safe=_SDK_SAFE)}"
    signature = base64.b64encode(_sign(key, unsigned)).decode("ascii")
    return f"{unsigned}&s={quote(signature, safe=_SDK_SAFE)}"


# --------------------------------------------------------------------------------------------------


def authenticate(
    headers: Mapping[str, str],
    keys: Sequence[str],
    resource_path: str,
    now: datetime | None = None,
    query: Mapping[str, str] | None = None,
) -> None:
    """Raise `AuthError` unless the request carries a valid key or SAS for `resource_path`.

    `keys` are the topic's access keys (key1, key2); none configured means anonymous access
    (the local-development default). `resource_path` is the path the request was sent to, e.g.
    "/api/events" or "/topics/orders/api/events". `query` (optional) holds the URL query
    parameters, for the documented ``?aeg-sas-key=`` form.
    """
    keys = [k for k in keys if k]
    if not keys:
        return
    lowered = {str(k).lower(): v for k, v in headers.items()}

    key = lowered.get("aeg-sas-key")
    if key is None and query is not None:
        key = query.get("aeg-sas-key")
    if key is not None:
        _check_key(key, keys)
        return

    token = lowered.get("aeg-sas-token")
    if token is not None:
        _check_token(token, keys, resource_path, now)
        return

    authorization = lowered.get("authorization")
    if authorization:
        scheme, _, credential = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "sharedaccesssignature":
            _check_token(credential.strip(), keys, resource_path, now)
            return
        if scheme == "sharedaccesskey":
            _check_key(credential.strip(), keys)
            return
        raise AuthError(
            f"The Authorization scheme '{scheme}' is not supported by the emulator; use the aeg-sas-key "
            "or aeg-sas-token header, or 'Authorization: SharedAccessSignature <token>'."
        )

    raise AuthError(
        "The request is not authorized: it carries no credentials. Send the topic access key in the "
        "aeg-sas-key header, or a shared access signature in the aeg-sas-token header or as "
        "'Authorization: SharedAccessSignature r=...&e=...&s=...'."
    )


def _check_key(candidate: str, keys: Sequence[str]) -> None:
    given = candidate.strip().encode("utf-8")
    matched = False
    for key in keys:  # compare against every key so the timing does not reveal which one matched
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    if not matched:
        raise AuthError("The request authorization key is not valid for this topic (aeg-sas-key).")


def _split_token(token: str) -> tuple[str, str, str]:
    fields: dict[str, str] = {}
    for part in token.strip().split("&"):
        name, sep, value = part.partition("=")
        if sep and name in ("r", "e", "s") and name not in fields:
            fields[name] = value
    if set(fields) != {"r", "e", "s"} or not all(fields.values()):
        raise AuthError(
            "Invalid shared access signature. Valid format: "
            "r=UrlEncodedResource&e=UrlEncodedUtcExpiration&s=UrlEncodedSignature.",
            code="BadRequest",
            status=400,
        )
    return fields["r"], fields["e"], fields["s"]


def _check_token(token: str, keys: Sequence[str], resource_path: str, now: datetime | None) -> None:
    r, e, s = _split_token(token)

    try:
        signature = base64.b64decode(unquote(s), validate=True)
    except (binascii.Error, ValueError):
        raise AuthError("The shared access signature is not valid: the signature is not base64.") from None
    unsigned = f"r={r}&e={e}"
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(signature, _sign(key, unsigned))
    if not matched:
        raise AuthError("The shared access signature is not valid: the signature does not match a key of this topic.")

    expiry = parse_expiry(unquote_plus(e))
    if expiry is None:
        raise AuthError(f"The shared access signature is not valid: cannot read the expiry '{unquote_plus(e)}'.")
    current = now or datetime.now(timezone.utc)
    if current.tzinfo is None:
        current = current.replace(tzinfo=timezone.utc)
    if expiry <= current:
        raise AuthError(f"The shared access signature expired at {expiry.isoformat()}.")

    signed_path = resource_path_of(unquote_plus(r))
    if not path_covers(signed_path, resource_path):
        raise AuthError(
            f"The shared access signature is for resource '{unquote_plus(r)}', which does not cover "
            f"'{resource_path}'."
        )


def parse_expiry(text: str) -> datetime | None:
    """The UTC expiry instant of a SAS `e` field, or None when unreadable.

    Accepted forms: ISO-8601 / str(datetime) (azure.eventgrid.generate_sas and the Python sample
    in Azure's docs), the en-US DateTime.ToString() form of the C# sample ("6/15/2017 6:20:15 PM"),
    and Unix epoch seconds. A time without an offset is UTC.
    """
    text = text.strip()
    value: datetime | None = None
    if text.isdigit():
        try:
            return datetime.fromtimestamp(int(text), tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        for fmt in ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S"):
            try:
                value = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def resource_path_of(resource: str) -> str:
    """The path of a SAS resource URL, without scheme, host, port, query or fragment."""
    if "://" in resource:
        return urlsplit(resource).path
    # A resource without a scheme: "host[:port]/path" or just "/path".
    resource = resource.split("?", 1)[0].split("#", 1)[0]
    if resource.startswith("/"):
        return resource
    return "/" + resource.split("/", 1)[1] if "/" in resource else "/"


def _normalize(path: str) -> list[str]:
    return [segment for segment in unquote(path).lower().split("/") if segment]


def path_covers(signed_path: str, resource_path: str) -> bool:
    """Whether a SAS signed for `signed_path` is valid for a request to `resource_path`.

    Deviation, on purpose: Azure matches the whole resource URL, host included. The emulator is
    reached as localhost, 127.0.0.1 or a compose service name, so only the paths are compared
    (case-insensitively, ignoring a trailing slash). As Azure documents, "A SAS token is valid for
    all resources prefixed with the resource URI used in the signature string", so the signed path
    may be a whole-segment prefix of the request path.
    """
    # A namespace operation names its resource and its action in one segment (`topics/t:publish`):
    # the token of the resource covers its actions.
    signed, requested = ([part for segment in _normalize(p) for part in _resource_and_action(segment)] for p in (signed_path, resource_path))
    return requested[: len(signed)] == signed


def _resource_and_action(segment: str) -> tuple[str, ...]:
    name, colon, action = segment.partition(":")
    return (name, colon + action) if colon and name else (segment,)
