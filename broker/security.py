"""Who may talk to the broker: the checks every request passes before anything else, on both of its
paths (the Flask app, and the publish and queue fast path in ingress.py).

The broker is a development tool on the developer's own machine, and the attacker that matters is
a web page in the developer's browser (docs/security.md):

* **Host allow-list** (DNS rebinding): a page on `evil.example` can make its name resolve to
  127.0.0.1 and then read the broker's answers as same-origin. Such a request carries
  `Host: evil.example`, so only host names the broker is known by are served: loopback names, the
  machine's and container's own names, the host of BROKER_PUBLIC_URL and BROKER_ALLOWED_HOSTS. An IP
  literal is always served: rebinding needs a name.
* **No cross-site writes**: a page can post a form (text/plain, no preflight) to any address. A
  write whose `Sec-Fetch-Site` says cross-site or same-site, or whose `Origin` is not the broker's
  own, is refused; a management write with a body must be JSON (a form cannot send that without
  CORS, which the broker never allows). SDKs and curl send neither header, and are never refused.
* **Management key** (BROKER_MANAGEMENT_KEY, off by default): the management API and the dashboard
  then need `Authorization: Bearer <key>` (a management SDK credential whose token is the key) or
  the cookie a browser gets by opening `/?key=<key>` once. Publishing and receiving keep their own
  keys; health, metrics and the validation URL stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ApiError

COOKIE = "eventgrid_management_key"
_OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/validate")
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _host_name(value: str) -> str:
    """The host of a Host header or an origin's netloc, without its port, lower case."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:5000
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def own_names(extra: str = "", public_url: str = "") -> frozenset[str]:
    """The host names the broker answers to."""
    names = {"localhost", "127.0.0.1", "::1"}  # found by a set lookup before any address is parsed
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    public = urlsplit(public_url).hostname if public_url else None
    if public:
        names.add(public.lower())
    names |= {n.strip().lower() for n in extra.split(",") if n.strip()}
    return frozenset(names)


@dataclass(frozen=True)
class Guard:
    allowed: frozenset[str]  # host names; "*" allows any
    management_key: str = ""

    @classmethod
    def from_config(cls, config) -> Guard:
        return cls(own_names(config.allowed_hosts, config.public_url), config.management_key)

    def host_allowed(self, host: str | None) -> bool:
        if not host or "*" in self.allowed:
            return True  # (HTTP/1.0 without Host: no browser sends that)
        name = _host_name(host)
        return name in self.allowed or _is_ip(name) or name.endswith(".localhost")

    def check(self, method: str, path: str, headers: dict[str, str], data_plane: bool) -> ApiError | None:
        """The refusal a request gets, or None. `headers` by lower-case name."""
        host = headers.get("host")
        if not self.host_allowed(host):
            # 403 rather than 400: the request is well formed; it is addressed to a name this broker
            # does not answer to (what a DNS-rebinding page sends).
            return ApiError(403, "HostNotAllowed", f"This broker does not answer to the host name '{_host_name(host or '')}'. "
                            "Add it to BROKER_ALLOWED_HOSTS if you reach the broker by that name.")
        if method in _WRITES:
            site = headers.get("sec-fetch-site", "").lower()
            origin = headers.get("origin")
            if site in ("cross-site", "same-site") or (origin is not None and not _same_origin(origin, host)):
                return ApiError(403, "CrossSiteRequestRefused", "A write from another site's web page is refused: the broker "
                                "takes writes from programs and from its own dashboard only.")
            if not data_plane and _has_body(headers) and not _is_json(headers.get("content-type", "")):
                return ApiError(415, "UnsupportedMediaType", "A management request's body must be JSON (Content-Type: application/json).")
        if self.management_key and not data_plane and not path.startswith(_OPEN_PATHS) and not path.startswith("/dashboard/static/"):
            if not self._has_key(headers, path):
                return ApiError(401, "Unauthorized", "This broker's management API and dashboard need its management key "
                                "(BROKER_MANAGEMENT_KEY): send 'Authorization: Bearer <key>', or open /?key=<key> in the browser.")
        return None

    def _has_key(self, headers: dict[str, str], path: str) -> bool:
        key = self.management_key.encode()
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), key):
                return True
        return False

    def key_in_query(self, query_key: str | None) -> bool:
        return bool(self.management_key and query_key) and hmac.compare_digest(query_key.encode(), self.management_key.encode())


def _same_origin(origin: str, host: str | None) -> bool:
    if origin == "null" or host is None:
        return False
    parts = urlsplit(origin)
    return parts.netloc.lower() == host.strip().lower()


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length", "")
    return (length.isdigit() and int(length) > 0) or "transfer-encoding" in headers


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def init_app(app, guard: Guard) -> None:
    """Check every request the Flask app serves (the fast path checks its own: ingress.py)."""
    from flask import g, request

    from .errors import response
    from .ingress import is_data_plane

    @app.before_request
    def _guard():
        if request.path == "/" and request.method == "GET" and guard.key_in_query(request.args.get("key")):
            g.set_key_cookie = True  # the dashboard opened with its key: remembered in a cookie
            return None
        headers = {k.lower(): v for k, v in request.headers.items()}
        refused = guard.check(request.method, request.path, headers, is_data_plane(request.path))
        return response(refused) if refused is not None else None

    @app.after_request
    def _cookie(resp):
        if g.get("set_key_cookie"):
            resp.set_cookie(COOKIE, guard.management_key, httponly=True, samesite="Strict")
        return resp
