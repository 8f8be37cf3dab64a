"""The HTTP server: waitress, polled by the delivery loop, with publish requests served right there.

Waitress reads requests on one I/O thread and hands each to a worker thread, which writes the
answer and wakes the I/O thread again. For a publish that is two thread hand-offs around ~150
microseconds of work, and on two cores the hand-offs cost more than the work: each wakes a thread
that must then wait for the GIL. A publish never blocks for long (it parses, commits one group to
SQLite and hands its deliveries to the dispatcher's loop), so it is served right where it was read.
Every other request (the dashboard's event stream, management calls, the prototype's API) still goes
to the worker threads, so a slow one cannot hold up the I/O thread.

The I/O thread is the webhook client's event loop (uvloop): `serve_on_loop` registers waitress's
sockets with it instead of running waitress's select() loop (`LoopPoller`). So a publish and the
deliveries it starts run on one thread -- the deliveries are queued on the loop without waking
another thread -- and one epoll wait serves publishers and subscribers alike. Measured at 1,000
single-event publishes/s with a subscriber: the broker's CPU 0.76 -> 0.65 cores, publish-to-delivery
p50 1.25 -> 0.9 ms.

The common publish -- one whole HTTP/1.1 request in one read, on a keep-alive connection with
nothing else in progress -- does not even become a waitress request: httptools parses the bytes and
the publish middleware's `respond` validates it. It answers through `later` once the publish is
stored: the publishes read in one pass of the loop share one commit (`Engine.accept_soon`), and the
loop never waits for the store meanwhile. What the connection sends before that answer is out is
held, and only then served (`_Channel.held`). Waitress's own request parser, WSGI environ, task
and response writer cost more than the publish itself (measured at 700 publishes/s: 520-740 ->
370-475 microseconds of the I/O thread per publish; single-event ingress ~3,600 -> ~4,500/s).
Whatever that path does not take -- pipelined or partial requests, HTTP/1.0, `Connection: close`,
`Expect`, percent-escaped paths, anything malformed -- waitress gets exactly as it was read, so its
behaviour is the reference for every edge case.

This uses hooks of waitress 3.0.2 (pinned; `WAITRESS_VERSION`, and any other version makes the
broker serve through plain waitress instead, with a warning: broker/cli.py):
`create_server(map=..., _dispatcher=...)`, the server's `channel_class`, `trigger` and
`pull_trigger`, every dispatcher's `readable()`/`writable()`, the channel's `received`, `request`,
`requests`, `parser_class`, `write_soon`, `outbuf_lock` and output buffers, and the parser's
`parse_header`. `tests/integration/test_serving.py` fails if they stop working.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httptools
import orjson
from waitress import create_server, wasyncore
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import build_http_date

# respond(method, path, query_string, headers(), body(), later) -> (status line, headers, body), None
# (not its request: waitress serves it) or LATER: the answer comes through later(answer), on the
# I/O thread and never before respond has returned, and what the connection sends meanwhile is
# served only after it.
Responder = Callable[..., "tuple[str, list, bytes] | object | None"]
LATER = object()
WAITRESS_VERSION = "3.0.2"  # the version whose internals this module uses


class _Parsed:
    """httptools' callbacks for one request read whole."""

    __slots__ = ("parser", "url", "headers", "body", "messages", "complete", "simple")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.messages = 0
        self.complete = False
        self.simple = False  # HTTP/1.1, kept alive, nothing to upgrade to, no 100-continue to send

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text  # as WSGI joins them

    def on_headers_complete(self) -> None:
        parser = self.parser  # (what it says of the request holds only until the message ends)
        self.simple = (parser.get_http_version() == "1.1" and parser.should_keep_alive() and not parser.should_upgrade()
                       and "expect" not in self.headers)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


# A connection awaiting a publish's answer holds what it sends meanwhile, up to this many bytes;
# past them the socket is not read until the answer is out (TCP then slows the sender down).
MAX_HELD_BYTES = 2 << 20
# A worker with more than waitress's outbuf_high_watermark (16 MB) queued for its client waits for
# the client to read; a client that reads nothing for this long (a dashboard tab left streaming
# behind a stalled connection) is dropped, which frees the worker.
STALL_SECONDS = 10.0
# Request bodies larger than these are refused from their headers, before they are read: a publish
# (1 MB, Azure's limit) and anything else (4 MB, Azure Resource Manager's).
MAX_PUBLISH_BODY = 1 << 20
MAX_OTHER_BODY = 4 << 20


class _Parser(HTTPRequestParser):
    """waitress's request parser, refusing what the fast path refuses: a request whose head arrived
    in pieces comes here, and waitress would let Transfer-Encoding win over Content-Length."""

    def parse_header(self, header_plus):
        super().parse_header(header_plus)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            # (answered 400 by waitress's error task, which closes the connection)
            raise ParsingError("A request may not have both Content-Length and Transfer-Encoding.")


class _Channel(HTTPChannel):
    """A connection whose publish requests run on the I/O thread, right after they are read."""

    parser_class = _Parser

    reader = 0  # the I/O thread's id while it is inside handle_read
    serve_here = False  # a request is ready and the dispatcher left it to us
    awaiting = False  # a publish read from the bytes will be answered later (LATER)
    held: list[bytes] | None = None  # what arrived meanwhile: served only after that answer
    held_bytes = 0

    def readable(self):
        # Stops reading a connection that sent too much while its publish awaits its answer.
        return (not self.awaiting or self.held_bytes < MAX_HELD_BYTES) and super().readable()

    def write_soon(self, data):
        # (Only a worker finds output queued here: waitress reads no request while output is
        # queued, so a request the I/O thread serves starts with an empty queue.)
        if data and self.total_outbufs_len > self.adj.outbuf_high_watermark:
            self._wait_for_the_client()
        return super().write_soon(data)

    def _wait_for_the_client(self) -> None:
        """On a worker: wait while more than the high-water mark is queued, as waitress does, but
        drop a client that reads nothing for STALL_SECONDS instead of waiting for it for ever."""
        with self.outbuf_lock:
            left, since = self.total_outbufs_len, time.monotonic()
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                self.server.pull_trigger()
                self.outbuf_lock.wait(0.5)
                if self.total_outbufs_len < left:
                    left, since = self.total_outbufs_len, time.monotonic()
                elif time.monotonic() - since >= STALL_SECONDS:
                    self.will_close = True
                    poller = self.server.poller
                    if poller is not None:  # closed by the I/O thread: the socket map is its own
                        poller.loop.call_soon_threadsafe(self._drop)
                    raise ClientDisconnected(f"the client read nothing of {left} bytes in {STALL_SECONDS:.0f} s")

    def _drop(self) -> None:
        if self.connected:
            self.handle_close()

    def handle_read(self):
        self.reader = self.server.io_thread = threading.get_ident()
        try:
            super().handle_read()
            # received() has released the channel's lock; service() takes it again. A pipelined
            # next request that is a publish sets serve_here again from within service().
            while self.serve_here:
                self.serve_here = False
                self.service()
        finally:
            self.reader = 0

    def received(self, data):
        if self.awaiting:  # the answer to the publish before it comes first
            if self.held is None:
                self.held = []
            self.held.append(data)  # (joined once, when served: not copied on every read)
            self.held_bytes += len(data)
            return True
        # The common publish -- one whole request in one read, on an idle keep-alive connection --
        # is answered straight from the bytes read. Anything else, or anything this does not
        # recognise, goes to waitress exactly as read.
        if self.request is None and not self.requests and not self.will_close and not self.close_when_flushed:
            if self.server.respond is not None and data.startswith(b"POST ") and self._answer(data):
                return True
            if self._refused(data):
                return True
        return super().received(data)

    def _refused(self, data: bytes) -> bool:
        """Answers (and closes) a request whose head alone earns a refusal; see _refusal."""
        end = data.find(b"\r\n\r\n", 0, 65536)
        if end < 0:
            return False  # a head split over reads: waitress's own limits apply
        parsed = _Parsed()
        try:
            parsed.parser.feed_data(data[:end + 4])
        except httptools.HttpParserError:
            return False
        finally:
            parsed.parser = None
        refusal = _refusal(data, parsed)
        if refusal is None:
            return False
        self._refuse(refusal)
        return True

    def _refuse(self, refusal: tuple[str, list, bytes]) -> None:
        self._send_answer(refusal)
        self.will_close = True  # (RFC 9112 6.1: a message with both framings is answered, then closed)
        self.close_when_flushed = True

    def _answer(self, data: bytes) -> bool:
        parsed = _Parsed()
        try:
            parsed.parser.feed_data(data)
        except httptools.HttpParserError:
            return False  # waitress answers it with its own 400
        finally:
            parsed.parser = None  # (parser and callbacks refer to each other: no garbage cycle per request)
        refusal = _refusal(data, parsed)
        if refusal is not None:
            self._refuse(refusal)
            return True
        if not (parsed.complete and parsed.messages == 1 and parsed.simple):
            return False
        try:
            url = httptools.parse_url(parsed.url)
        except httptools.HttpParserInvalidURLError:
            return False  # an absolute target that does not parse: waitress answers it
        if b"%" in url.path:  # percent-escapes: waitress decodes PATH_INFO
            return False
        answer = self.server.respond(
            "POST", url.path.decode("latin-1"), (url.query or b"").decode("latin-1"), lambda: parsed.headers,
            lambda: b"".join(parsed.body), self._later if self.server.poller is not None else None,
        )
        if answer is None:
            return False
        if answer is LATER:
            self.awaiting = True
        else:
            self._send_answer(answer)
        return True

    def _later(self, answer: tuple[str, list, bytes]) -> None:
        """The answer to the publish this connection awaits (on the I/O thread)."""
        self.awaiting = False
        if not self.connected:
            return
        self._send_answer(answer)
        if self.held:
            held, self.held, self.held_bytes = b"".join(self.held), None, 0
            self.received(held)
        poller = self.server.poller
        if poller is not None and self._fileno is not None:
            poller.sync(self._fileno)  # write what did not go out at once; read or not, as waitress wants

    def _send_answer(self, answer: tuple[str, list, bytes]) -> None:
        date = self.server.http_date()
        last = self.server.last_answer  # (answer, date, bytes): most answers are the same 200
        if last[0] is answer and last[1] == date:
            self._write(last[2])
            return
        status, headers, body = answer
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        data = f"HTTP/1.1 {status}\r\n{head}Date: {date}\r\nServer: {self.adj.ident}\r\n\r\n".encode("latin-1") + body
        self.server.last_answer = (answer, date, data)
        self._write(data)

    def _write(self, response: bytes) -> None:
        if not self.total_outbufs_len:  # nothing queued before it: most answers go out right here
            response = response[self.send(response):]
            if not response or not self.connected:
                return
        with self.outbuf_lock:  # the rest after what is queued; handle_write sends it when it can
            self.outbufs[-1].append(response)
            self.current_outbuf_count += len(response)
            self.total_outbufs_len += len(response)


def _refusal(data: bytes, parsed: _Parsed) -> tuple[str, list, bytes] | None:
    """An answer for a request refused from its head alone: both Content-Length and
    Transfer-Encoding (RFC 9112 6.1: ambiguous framing, a request-smuggling vector), or a body
    larger than its path's limit (refused before it is read). None for anything else."""
    headers = parsed.headers
    if not headers:
        return None
    if "content-length" in headers and "transfer-encoding" in headers:
        return _json_error(400, "BadRequest", "A request may not have both Content-Length and Transfer-Encoding.")
    length = headers.get("content-length", "")
    if length.isdigit():
        path = data.split(b" ", 2)[1].split(b"?", 1)[0].decode("latin-1") if data.count(b" ") >= 2 else ""
        limit = MAX_PUBLISH_BODY if _data_plane(path) else MAX_OTHER_BODY
        if int(length) > limit:
            return _json_error(413, "RequestEntityTooLarge", f"The request body is {length} bytes; the limit here is {limit} bytes.")
    return None


def _data_plane(path: str) -> bool:
    from .ingress import is_data_plane  # (ingress imports this module)

    return is_data_plane(path)


def _json_error(status: int, code: str, message: str) -> tuple[str, list, bytes]:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    reason = {400: "Bad Request", 413: "Payload Too Large"}[status]
    return f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")], body


class _Dispatcher(ThreadedTaskDispatcher):
    def __init__(self, inline: Callable[[str, str], bool]) -> None:
        super().__init__()
        self.inline = inline

    def add_task(self, channel):
        # Called with the channel's request lock held, so the request cannot be served from here.
        # A worker finishing the previous request on this channel may call in while the I/O
        # thread reads the next one (request lookahead): that request goes to the pool.
        if channel.reader == threading.get_ident():
            request = channel.requests[0]
            if not request.error and self.inline(request.command, request.path):
                channel.serve_here = True
                return
        super().add_task(channel)


def make_server(app, inline: Callable[[str, str], bool], threads: int, respond: Responder | None = None, **adjustments):
    """A waitress server for `app`; requests for which `inline(method, path)` is true skip the pool,
    and `respond` answers those it can straight from the bytes read (see _Channel.received)."""
    dispatcher = _Dispatcher(inline)
    dispatcher.set_thread_count(threads)
    adjustments.setdefault("max_request_body_size", MAX_OTHER_BODY)  # (past it waitress answers 413 itself)
    server = create_server(app, map=_Map(), _dispatcher=dispatcher, threads=threads, **adjustments)
    if not hasattr(server, "pull_trigger"):  # waitress made one server per address the host resolved to
        addresses = ", ".join(str(s.effective_host) for s in getattr(server, "map", {}).values() if hasattr(s, "effective_host"))
        server.close()
        raise ValueError(f"BROKER_HOST={adjustments.get('host')} resolves to several addresses ({addresses or 'IPv4 and IPv6'}); "
                         "set it to one of them, e.g. 127.0.0.1 or ::1")
    server.channel_class = _Channel
    server.respond = respond
    server.io_thread = None
    server.poller = None  # the LoopPoller serving it, when one does (answers can then come LATER)
    wake = server.pull_trigger

    def pull_trigger():
        # Wakes the I/O thread out of its wait after a worker wrote. A request served on the I/O
        # thread itself would only make it read its own wake-up byte on the next pass.
        if threading.get_ident() != server.io_thread:
            wake()

    dates = [0, ""]

    def http_date() -> str:  # the Date header, formatted once a second
        now = int(time.time())
        if now != dates[0]:
            dates[:] = [now, build_http_date(now)]
        return dates[1]

    server.pull_trigger = pull_trigger
    server.http_date = http_date
    server.last_answer = (None, "", b"")
    return server


class _Map(dict):
    """waitress's socket map (file descriptor -> dispatcher), telling its `LoopPoller` when a
    socket comes and goes."""

    poller: LoopPoller | None = None

    def __setitem__(self, fd, obj) -> None:
        super().__setitem__(fd, obj)
        if self.poller is not None:
            self.poller.added(fd)

    def __delitem__(self, fd) -> None:
        if self.poller is not None:
            self.poller.removed(fd)  # before the socket is closed and its number can be reused
        super().__delitem__(fd)

    def clear(self) -> None:
        for fd in list(self):
            del self[fd]


class LoopPoller:
    """Polls waitress's sockets from an asyncio event loop instead of waitress's select() loop.

    waitress decides from each dispatcher's `readable()` and `writable()` what to wait for, and
    asks again before every select(). Here a socket is watched (loop.add_reader / add_writer) for
    what its dispatcher wants, asked again after each of its own events; after the trigger fires
    (a worker thread wrote an answer or finished a request) and once a second (waitress's clean-up
    of idle connections runs from the server's `readable()`), every socket is asked again.
    Everything here runs on the loop's thread.
    """

    def __init__(self, server, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.map: _Map = server._map
        self.loop = loop
        self._reading: set[int] = set()
        self._writing: set[int] = set()
        self._new: list[int] = []  # accepted sockets, watched once their channel is made
        self._tick: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.server.io_thread = threading.get_ident()
        self.server.poller = self.map.poller = self
        self.sync_all()
        self._tick = self.loop.call_later(1.0, self._periodic)

    def close(self) -> None:
        """Stop watching and close every socket: the listener, the trigger and each connection."""
        if self._tick is not None:
            self._tick.cancel()
        for fd in list(self._reading | self._writing):
            self.removed(fd)
        self.server.poller = self.map.poller = None
        wasyncore.close_all(self.map)

    def _periodic(self) -> None:
        self.sync_all()
        self._tick = self.loop.call_later(1.0, self._periodic)

    def added(self, fd: int) -> None:
        self._new.append(fd)  # (a channel joins the map from inside its __init__, not yet whole)

    def removed(self, fd: int) -> None:
        if fd in self._reading:
            self._reading.discard(fd)
            self.loop.remove_reader(fd)
        if fd in self._writing:
            self._writing.discard(fd)
            self.loop.remove_writer(fd)

    def sync(self, fd: int) -> None:
        obj = self.map.get(fd)
        if obj is None:
            return
        read = bool(obj.readable())
        write = bool(obj.writable()) and not obj.accepting  # (as waitress: a listener is never written)
        if read != (fd in self._reading):
            if read:
                self._reading.add(fd)
                self.loop.add_reader(fd, self._read, fd)
            else:
                self._reading.discard(fd)
                self.loop.remove_reader(fd)
        if write != (fd in self._writing):
            if write:
                self._writing.add(fd)
                self.loop.add_writer(fd, self._write, fd)
            else:
                self._writing.discard(fd)
                self.loop.remove_writer(fd)

    def sync_all(self) -> None:
        self._new.clear()
        for fd in list(self.map):
            self.sync(fd)

    def _read(self, fd: int) -> None:
        obj = self.map.get(fd)
        if obj is None:
            return
        wasyncore.read(obj)
        if obj is self.server.trigger:
            self.sync_all()
            return
        self.sync(fd)
        if self._new:  # the listener accepted
            while self._new:
                self.sync(self._new.pop())
            self.sync(self.server._fileno)  # (it stops listening at the connection limit)

    def _write(self, fd: int) -> None:
        obj = self.map.get(fd)
        if obj is None:
            return
        wasyncore.write(obj)
        self.sync(fd)


def serve_on_loop(server, loop: asyncio.AbstractEventLoop) -> LoopPoller:
    """Serve `server` (from `make_server`) from `loop`, which runs in another thread; returns once
    it is served. `LoopPoller.close`, on the loop, stops it."""
    poller = LoopPoller(server, loop)
    started = threading.Event()

    def start() -> None:
        try:
            poller.start()
        finally:
            started.set()

    loop.call_soon_threadsafe(start)
    if not started.wait(10):
        raise RuntimeError("the event loop did not start serving in 10 s")
    return poller
