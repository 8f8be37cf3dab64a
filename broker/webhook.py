"""The HTTP client every delivery and validation handshake goes through.

All requests run on one asyncio event loop (uvloop's, where it is built) in a thread of its own,
over keep-alive connections kept per subscriber origin; responses are parsed by httptools (llhttp,
the parser behind uvicorn and Node.js), so chunked bodies, `Connection: close` and HTTP/1.0
answers are handled by a well-tested parser, not by us. A request never raises: it returns a
`Response`, whose `status` is None when no HTTP answer came (refused, reset, timed out).

Why not a thread per request (the second version, on http.client): profiled under fan-out,
http.client's header building and email-based response parsing, two send() calls per request and
the GIL hand-offs between worker threads took over 40 % of the broker's CPU. One loop writes each
request with one send() and parses the answer in C. (The first version, urllib3's PoolManager, was
slower still.)

The dispatcher awaits `deliver()` on `loop`; threads that are not on the loop (the validator) call
the blocking `request()` / `post()`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

try:  # libuv's event loop: half the CPU per request of asyncio's own (measured under fan-out)
    import uvloop
except ImportError:  # not built for this platform (Windows): asyncio's loop does the same work
    uvloop = None

MAX_BODY_KEPT = 65536
MAX_HEADER_BYTES = 65536  # of a subscriber's answer: more is a failed attempt, and the connection goes
MAX_HEADS_KEPT = 4096  # distinct request heads remembered (a dynamic header value can make every one new)
MAX_HEADS_BYTES = 4 << 20  # and their bytes (delivery attributes may hold 4 KB each)
WATCH_SECONDS = 0.05  # how often requests in flight are checked against their deadline
_FRAMING = (b"content-length", b"transfer-encoding")  # headers that say where an answer's body ends


@dataclass(slots=True)
class Response:
    status: int | None  # None: no HTTP response (connection error or timeout)
    latency_ms: float
    body: bytes = b""
    raw_headers: list[tuple[bytes, bytes]] | None = None  # as received; `headers` decodes them
    error: str | None = None
    timed_out: bool = False

    @property
    def headers(self) -> dict[str, str] | None:
        """The answer's headers by name (decoded on demand: a delivery only needs its status)."""
        if self.raw_headers is None:
            return None
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in self.raw_headers}


class _HeadersTooLarge(Exception):
    """A subscriber's answer carries more header bytes than MAX_HEADER_BYTES."""


class _Stale(ConnectionError):
    """A reused keep-alive connection was closed by the subscriber before it answered anything."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # looked up once: each lookup asks the kernel for the pid
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self._received = False
        self.deadline = 0.0  # loop time by which the answer must have come
        self._reset()

    def _reset(self) -> None:
        self._until_close = False  # the answer has no length: its body ends with the connection
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._kept = 0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            too_big = isinstance(exc.__context__, _HeadersTooLarge) or self._header_bytes > MAX_HEADER_BYTES
            self._fail(ConnectionError(f"the answer's headers are larger than {MAX_HEADER_BYTES} bytes" if too_big
                                       else f"invalid HTTP response: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._until_close:  # headers came without a length: the body ran to the end of the connection
            self._finish(keep_alive=False)
        elif not self._received:
            self._fail(_Stale("the connection was closed before any answer"))
        else:
            self._fail(ConnectionError(f"the connection was closed mid-answer: {exc!r}"))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:  # (raised out of feed_data: data_received fails the request)
            raise _HeadersTooLarge()
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._until_close = not any(name.lower() in _FRAMING for name, _ in self._headers)

    def on_body(self, body: bytes) -> None:
        if self._kept < MAX_BODY_KEPT:
            self._body.append(body)
            self._kept += len(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # an interim answer (100 Continue): the real one follows
            self._reset()
            return
        self._finish(self._parser.should_keep_alive())

    # -- use -------------------------------------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), self._headers, b"".join(self._body)[:MAX_BODY_KEPT], keep_alive))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def exchange(self, data: bytes, deadline: float) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        """Send one request; return (status, headers, body, keep_alive). Raises TimeoutError when
        the client's watchdog finds it past `deadline`."""
        if self.closed:
            raise _Stale("the connection is closed")
        self.deadline = deadline
        self._reset()
        self._received = False
        self._waiter = self._loop.create_future()
        self.transport.write(data)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def expire(self) -> None:
        self._fail(TimeoutError("no answer in time"))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class WebhookClient:
    def __init__(self) -> None:
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._heads: dict[tuple, bytes] = {}  # request lines and headers by (method, target, *headers), see _head
        self._heads_bytes = 0
        self._busy: set[_Connection] = set()
        self._watchdog: asyncio.Task | None = None
        # Local subscribers often use self-signed certificates; the emulator only ever talks to the
        # developer's own machine or network, so https endpoints are not verified.
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- the loop --------------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop requests run on, started on first use (RuntimeError once closed)."""
        if self._loop is None:
            with self._start_lock:
                if self._closed:
                    raise RuntimeError("the webhook client is closed")
                if self._loop is None:
                    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
                    self._thread = threading.Thread(target=loop.run_forever, name="event-loop", daemon=True)
                    self._thread.start()
                    self._loop = loop
        return self._loop

    def on_loop(self) -> bool:
        """Whether the caller runs on the client's loop thread."""
        thread = self._thread
        return thread is not None and thread.ident == threading.get_ident()

    def close(self) -> None:
        """Abort every connection and request still in flight, and stop the loop."""
        with self._start_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            self._closed = True
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            if not thread.is_alive():
                loop.close()

    async def _shutdown(self) -> None:
        for conn in [c for conns in self._idle.values() for c in conns] + list(self._busy):
            conn.abort()
        self._idle.clear()
        self._busy.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:  # the watchdog, and deliveries a stopping dispatcher left in flight
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def open_connections(self) -> int:
        """Keep-alive connections currently held (idle or in use)."""
        return sum(len(c) for c in self._idle.values()) + len(self._busy)

    # -- requests --------------------------------------------------------------------------------

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")  # the query string, exactly
            default = port == (443 if parts.scheme == "https" else 80)
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            host_header = host if default else f"{host}:{port}"
            target = self._targets[url] = ((parts.scheme, parts.hostname, port), f"{path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1"))
        return target

    def _head(self, method: str, target: bytes, headers: dict[str, str], length: int | None) -> bytes:
        # A subscription sends the same headers request after request (only aeg-delivery-count and
        # aeg-data-version move, over a few values): the checked and encoded lines are kept.
        key = (method, target, *headers.items())
        lines = self._heads.get(key)
        if lines is None:
            text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
            # A CR, LF or NUL inside a name or value (a dynamic delivery attribute can carry anything)
            # would split the request: every line break must be one of ours.
            count = len(headers)
            if text.count("\n") != count or text.count("\r") != count or "\0" in text or ":" in "".join(headers):
                raise ValueError(f"illegal header in {list(headers)}")
            if len(self._heads) >= MAX_HEADS_KEPT or self._heads_bytes > MAX_HEADS_BYTES:
                self._heads.clear()
                self._heads_bytes = 0
            lines = self._heads[key] = b"%s %s%s" % (method.encode("ascii"), target, text.encode("latin-1"))  # UnicodeEncodeError is a ValueError
            self._heads_bytes += len(lines)
        return lines + (b"\r\n" if length is None else b"Content-Length: %d\r\n\r\n" % length)

    async def _open(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = {"ssl": self._tls, "server_hostname": host} if scheme == "https" else {}
        _, conn = await loop.create_connection(_Connection, host, port, **tls)
        return conn

    async def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Response:
        """One request on the client's loop; never raises."""
        started = time.perf_counter()
        try:
            origin, target = self._target(url)
            data = self._head(method, target, headers, len(body) if body is not None else (0 if method in ("POST", "PUT") else None))
        except ValueError as exc:
            return Response(None, 0.0, error=f"invalid request: {exc}")
        if body:
            data += body
        idle = self._idle.setdefault(origin, [])
        # One deadline for connecting and answering. A timer per request (asyncio.timeout) cost
        # ~6 % of the broker's CPU under fan-out; a watchdog checks every request in flight instead.
        deadline = asyncio.get_running_loop().time() + timeout
        for _ in range(2):
            conn, reused = None, False
            try:
                while idle and conn is None:
                    conn = idle.pop()
                    if conn.closed:
                        conn = None
                reused = conn is not None
                if conn is None:
                    async with asyncio.timeout_at(deadline):
                        conn = await self._open(origin)
                self._busy.add(conn)
                if self._watchdog is None:
                    self._watchdog = asyncio.get_running_loop().create_task(self._watch())
                status, answer_headers, answer, keep_alive = await conn.exchange(data, deadline)
            except _Stale:
                self._discard(conn)
                if reused:
                    continue  # the subscriber had closed it while idle: once more on a fresh one
                return Response(None, _since(started), error="connection failed: closed before any answer")
            except TimeoutError:
                self._discard(conn)
                return Response(None, _since(started), error=f"timed out after {timeout:g} s", timed_out=True)
            except (OSError, ssl.SSLError) as exc:
                self._discard(conn)
                return Response(None, _since(started), error=f"connection failed: {exc!r}")
            except asyncio.CancelledError:
                self._discard(conn)
                raise
            self._busy.discard(conn)
            if keep_alive and not conn.closed:
                idle.append(conn)
            else:
                conn.abort()
            return Response(status, _since(started), answer, answer_headers)
        return Response(None, _since(started), error="connection failed twice")

    async def _watch(self) -> None:
        """Time out requests past their deadline; runs while any request is in flight."""
        loop = asyncio.get_running_loop()
        try:
            while self._busy:
                await asyncio.sleep(WATCH_SECONDS)
                now = loop.time()
                for conn in [c for c in self._busy if c.deadline <= now]:
                    conn.expire()
        finally:
            self._watchdog = None

    def _discard(self, conn: _Connection | None) -> None:
        if conn is not None:
            self._busy.discard(conn)
            conn.abort()

    def deliver(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Coroutine[Any, Any, Response]:
        """`send` of a POST (the coroutine itself: one frame less to pass through on every resume)."""
        return self.send("POST", url, body, headers, timeout)

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float) -> Response:
        """The blocking form, for threads other than the loop's."""
        try:
            loop = self.loop
        except RuntimeError as exc:  # closed: the broker is stopping
            return Response(None, 0.0, error=str(exc))
        if threading.current_thread() is self._thread:
            raise RuntimeError("request() would block the client's own loop; await send() there")
        return asyncio.run_coroutine_threadsafe(self.send(method, url, body, headers, timeout), loop).result(timeout + 5)

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        return self.request("POST", url, body, headers, timeout)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
