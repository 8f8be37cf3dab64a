"""Delivery property headers: which names a subscription may set, and what a value may hold.

A subscription's `deliveryAttributeMappings` become HTTP headers on every delivery. The names are
checked once, when the subscription is written (a 400 names the mapping); static values too. A
dynamic value comes from the event and can hold anything, so it is cleaned on each delivery rather
than refused: the event is still delivered, with a header that cannot split or reframe the request.
"""

from __future__ import annotations

import re

# Azure's limit on one delivery property's value.
MAX_VALUE_BYTES = 4096

# RFC 9110 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Headers that frame the request or that the broker sets itself: a second, conflicting copy would
# make the subscriber (or a proxy on the way) read a different request than the one sent.
RESERVED = frozenset(
    {
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "webhook-request-origin",
        "webhook-request-callback",
        "webhook-request-rate",
    }
)
RESERVED_PREFIXES = ("aeg-",)

# Control characters other than tab end or corrupt a header line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a delivery property header, or None when it can."""
    if not _TOKEN.fullmatch(name):
        return "must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    lowered = name.lower()
    if lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES):
        return "is a header the broker sets itself"
    return None


def value_problem(value: str) -> str | None:
    """Why a static `value` cannot be sent as a header value, or None when it can."""
    if _CONTROL.search(value):
        return "must not contain control characters (CR, LF, NUL)"
    if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
        return f"must be at most {MAX_VALUE_BYTES} bytes"
    return None


def wire_value(value: str) -> str:
    """`value` as it can travel in a header: control characters become spaces, text outside
    Latin-1 travels as its UTF-8 bytes, at most MAX_VALUE_BYTES of it, and no whitespace at its
    ends. The result encodes as Latin-1 to exactly the bytes sent."""
    value = _CONTROL.sub(" ", value).strip(" \t")
    try:
        raw = value.encode("latin-1")[:MAX_VALUE_BYTES]
    except UnicodeEncodeError:  # cut at a character boundary
        raw = value.encode("utf-8")[:MAX_VALUE_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return raw.decode("latin-1").rstrip(" \t")
