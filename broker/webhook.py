"""The HTTP client every delivery and validation handshake goes through: pooled keep-alive
connections (urllib3), one request per call, never an exception for a failed request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout


@dataclass(slots=True)
class Response:
    status: int | None  # None: no HTTP response (connection error or timeout)
    latency_ms: float
    body: bytes = b""
    headers: dict[str, str] | None = None
    error: str | None = None
    timed_out: bool = False


class WebhookClient:
    def __init__(self, pool_size: int = 8) -> None:
        # Local subscribers often use self-signed certificates; like Azure's own local tooling we do
        # not verify them, since the emulator only ever talks to the developer's machine/network.
        self.pool = urllib3.PoolManager(
            num_pools=64, maxsize=pool_size, block=False, retries=False, cert_reqs="CERT_NONE"
        )
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Response:
        started = time.perf_counter()
        try:
            resp = self.pool.request(
                method, url, body=body, headers=headers, timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
                redirect=False, preload_content=True,
            )
            latency = (time.perf_counter() - started) * 1000
            return Response(resp.status, latency, resp.data[:65536], dict(resp.headers))
        except NewConnectionError as exc:  # urllib3 2.x makes it a ConnectTimeoutError subclass: not a timeout
            return Response(None, (time.perf_counter() - started) * 1000, error=f"connection failed: {exc}")
        except Urllib3Timeout as exc:
            return Response(None, (time.perf_counter() - started) * 1000, error=f"timed out: {exc}", timed_out=True)
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            timed_out = isinstance(reason, Urllib3Timeout)
            return Response(None, (time.perf_counter() - started) * 1000, error=str(reason), timed_out=timed_out)
        except (OSError, ValueError) as exc:
            return Response(None, (time.perf_counter() - started) * 1000, error=str(exc))

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        return self.request("POST", url, body, headers, timeout)

    def close(self) -> None:
        self.pool.clear()
