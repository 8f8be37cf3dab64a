"""The HTTP server: waitress, with publish requests served on its I/O thread.

Waitress reads requests on one I/O thread and hands each to a worker thread, which writes the
answer and wakes the I/O thread again. For a publish that is two thread hand-offs around ~150
microseconds of work, and on two cores the hand-offs cost more than the work: each wakes a thread
that must then wait for the GIL. A publish never blocks for long (it parses, commits one group to
SQLite and hands its deliveries to the dispatcher's loop), so it is served right where it was read.
Every other request (the dashboard's event stream, management calls, the prototype's API) still goes
to the worker threads, so a slow one cannot hold up the I/O thread.

The common publish -- one whole HTTP/1.1 request in one read, on a keep-alive connection with
nothing else in progress -- does not even become a waitress request: httptools parses the bytes,
the publish middleware's `respond` answers, and the answer is sent at once. Waitress's own request
parser, WSGI environ, task and response writer cost more than the publish itself (measured at 700
publishes/s: 520-740 -> 370-475 microseconds of the I/O thread per publish; single-event ingress
~3,600 -> ~4,500/s). Whatever that path does not take -- pipelined or partial requests, HTTP/1.0,
`Connection: close`, `Expect`, percent-escaped paths, anything malformed -- waitress gets exactly
as it was read, so its behaviour is the reference for every edge case.

This uses hooks of waitress 3.0 (pinned): `create_server(_dispatcher=...)`, the server's
`channel_class`, its `pull_trigger` and the channel's `received`, `request`, `requests` and output
buffers. `tests/integration/test_serving.py` fails if they stop working.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httptools
from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import build_http_date

# respond(method, path, query_string, headers(), body()) -> (status line, headers, body) or None
Responder = Callable[[str, str, str, Callable[[], dict[str, str]], Callable[[], bytes]], tuple[str, list, bytes] | None]


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


class _Channel(HTTPChannel):
    """A connection whose publish requests run on the I/O thread, right after they are read."""

    reader = 0  # the I/O thread's id while it is inside handle_read
    serve_here = False  # a request is ready and the dispatcher left it to us

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
        # The common publish -- one whole request in one read, on an idle keep-alive connection --
        # is answered straight from the bytes read. Anything else, or anything this does not
        # recognise, goes to waitress exactly as read.
        if (self.server.respond is not None and data.startswith(b"POST ") and self.request is None and not self.requests
                and not self.will_close and not self.close_when_flushed and self._answer(data)):
            return True
        return super().received(data)

    def _answer(self, data: bytes) -> bool:
        parsed = _Parsed()
        try:
            parsed.parser.feed_data(data)
        except httptools.HttpParserError:
            return False  # waitress answers it with its own 400
        finally:
            parsed.parser = None  # (parser and callbacks refer to each other: no garbage cycle per request)
        if not (parsed.complete and parsed.messages == 1 and parsed.simple):
            return False
        url = httptools.parse_url(parsed.url)
        if b"%" in url.path:  # percent-escapes: waitress decodes PATH_INFO
            return False
        answer = self.server.respond(
            "POST", url.path.decode("latin-1"), (url.query or b"").decode("latin-1"), lambda: parsed.headers,
            lambda: b"".join(parsed.body),
        )
        if answer is None:
            return False
        status, headers, body = answer
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._write(f"HTTP/1.1 {status}\r\n{head}Date: {self.server.http_date()}\r\nServer: {self.adj.ident}\r\n\r\n".encode("latin-1") + body)
        return True

    def _write(self, response: bytes) -> None:
        if not self.total_outbufs_len:  # nothing queued before it: most answers go out right here
            response = response[self.send(response):]
            if not response or not self.connected:
                return
        with self.outbuf_lock:  # the rest after what is queued; handle_write sends it when it can
            self.outbufs[-1].append(response)
            self.current_outbuf_count += len(response)
            self.total_outbufs_len += len(response)


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
    server = create_server(app, _dispatcher=dispatcher, threads=threads, **adjustments)
    server.channel_class = _Channel
    server.respond = respond
    server.io_thread = None
    wake = server.pull_trigger

    def pull_trigger():
        # Wakes the I/O thread out of select() after a worker wrote. A request served on the I/O
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
    return server
