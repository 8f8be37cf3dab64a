"""The broker's waitress server, polled by an event loop: publish requests on the loop's (I/O) thread,
everything else on workers."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
import uvloop

from broker import serving
from broker.ingress import is_publish
from broker.serving import LATER, MAX_HELD_BYTES, make_server, serve_on_loop
from tests.integration.processes import event
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


class Recorder:
    """A WSGI app that notes which thread served each path; `/slow` blocks until released."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}
        self.release = threading.Event()
        self.slow_started = threading.Event()
        self.streamed = 0  # chunks /stream has yielded
        self.stream_ended = threading.Event()

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        self.threads[path] = threading.current_thread().name
        if path == "/stream":  # a live feed, as the dashboard's: it ends only when writing fails
            start_response("200 OK", [("Content-Type", "text/event-stream")])
            return self._stream()
        if path == "/slow":
            self.slow_started.set()
            self.release.wait(10)
        body = path.encode() * (5_000_000 if path == "/big" else 1)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    def _stream(self):
        try:
            for n in range(1, 2001):  # 125 MB at the most: the test bounds itself
                self.streamed = n
                yield b"x" * 65536
        finally:
            self.stream_ended.set()


class Served:
    """A server from `make_server` polled by an event loop on a thread named io-thread, as the broker
    runs it (on its delivery loop)."""

    def __init__(self, server) -> None:
        self.server = server
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="io-thread", daemon=True)
        self.thread.start()
        self.poller = serve_on_loop(server, self.loop)

    def close(self) -> None:
        async def close():
            self.poller.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.server.task_dispatcher.shutdown()
        assert not self.thread.is_alive()
        self.loop.close()


@pytest.fixture
def served():
    app = Recorder()
    server = make_server(app, is_publish, threads=2, host="127.0.0.1", port=0, channel_request_lookahead=1)  # as the broker
    running = Served(server)
    app.server = server
    yield app, server.effective_port
    app.release.set()
    running.close()


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """The bodies of `count` answers, in the order they arrived (each body is its request's path)."""
    stream = sock.makefile("rb")
    bodies = []
    for _ in range(count):
        length = None
        while (line := stream.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        assert length is not None, f"connection closed after {len(bodies)} answers"
        bodies.append(stream.read(length))
    return bodies


def test_publish_requests_are_served_on_the_io_thread_and_the_rest_on_workers(served):
    app, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("POST", "/topics/orders/api/events", b"[]"))
        assert read_answers(sock, 1) == [b"/topics/orders/api/events"]
        sock.sendall(request("GET", "/api/topics"))
        assert read_answers(sock, 1) == [b"/api/topics"]
        sock.sendall(request("GET", "/api/events"))  # the publish path, but not a publish
        assert read_answers(sock, 1) == [b"/api/events"]
    assert app.threads["/topics/orders/api/events"] == "io-thread"
    assert app.threads["/api/topics"] != "io-thread"
    assert app.threads["/api/events"] != "io-thread"


def test_pipelined_requests_are_answered_in_order_whichever_thread_serves_them(served):
    app, port = served
    paths = ["/api/events", "/other", "/topics/a/api/events", "/api/events", "/more"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"".join(request("POST", p, b'[{"x":1}]') for p in paths))
        assert read_answers(sock, len(paths)) == [p.encode() for p in paths]


def test_a_slow_request_on_a_worker_does_not_hold_up_publishes(served):
    app, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as slow, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as fast:
        slow.sendall(request("GET", "/slow"))
        assert app.slow_started.wait(5)
        for _ in range(3):
            fast.sendall(request("POST", "/api/events", b"[]"))
            assert read_answers(fast, 1) == [b"/api/events"]
        app.release.set()
        assert read_answers(slow, 1) == [b"/slow"]


def test_a_large_answer_written_by_a_worker_is_sent_to_the_end(served):
    """What the worker cannot send at once (20 MB is more than a socket buffer takes), the I/O
    thread sends once the worker wakes it."""
    app, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/big") + request("POST", "/api/events", b"[]"))
        assert read_answers(sock, 2) == [b"/big" * 5_000_000, b"/api/events"]
    assert app.threads["/big"] != "io-thread"


def closed_by_server(sock: socket.socket) -> bool:
    """Reads what is buffered (at most 64 MB); True once the server's end is closed."""
    for _ in range(1024):
        try:
            if sock.recv(65536, socket.MSG_DONTWAIT) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def test_a_client_that_stops_reading_a_stream_frees_the_worker_writing_it(served, monkeypatch):
    """A worker with more than the high-water mark queued waits for its client; one that reads
    nothing for STALL_SECONDS is dropped, so the stream's generator ends instead of the worker
    waiting for ever."""
    monkeypatch.setattr(serving, "STALL_SECONDS", 1.0)
    app, port = served
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", int(port)))
    try:
        stalled.sendall(request("GET", "/stream"))  # and never read
        assert app.stream_ended.wait(15), f"the stream still runs after {app.streamed} chunks"
        assert app.streamed * 65536 < (16 << 20) + (16 << 20)  # stopped near the high-water mark, not at the end
        assert app.threads["/stream"] != "io-thread"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
            other.sendall(request("GET", "/after"))
            assert read_answers(other, 1) == [b"/after"]
        wait_until(lambda: closed_by_server(stalled), 5, "the stalled connection closed", tolerate=(BlockingIOError,))
    finally:
        stalled.close()


def test_a_slow_reader_of_a_large_answer_keeps_its_connection(served, monkeypatch):
    """Reading slowly is not stalling: the connection stays, and the answer after it arrives."""
    monkeypatch.setattr(serving, "STALL_SECONDS", 1.0)
    app, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request("GET", "/big") + request("GET", "/after"))
        wait_until(lambda: len(app.threads) == 2, 5, "both requests served, neither answer read yet")
        time.sleep(1.2)  # past STALL_SECONDS before the first byte is read: the client is slow, then reads
        assert read_answers(sock, 2) == [b"/big" * 5_000_000, b"/after"]


def test_only_workers_wake_the_io_thread(served):
    """A worker that wrote must wake the I/O thread out of its wait; a publish served on the I/O
    thread must not (that wake-up cost more than a tenth of a publish)."""
    app, port = served
    trigger = app.server.trigger
    pulled: list[str] = []
    pull = trigger.pull_trigger

    def counting(*args):
        pulled.append(threading.current_thread().name)
        return pull(*args)

    trigger.pull_trigger = counting
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(5):
            sock.sendall(request("POST", "/api/events", b"[]"))
            assert read_answers(sock, 1) == [b"/api/events"]
        assert pulled == []
        sock.sendall(request("GET", "/api/topics"))
        assert read_answers(sock, 1) == [b"/api/topics"]
    wait_until(lambda: pulled, 5, "the worker to wake the I/O thread")  # it does so after answering
    assert "io-thread" not in pulled


def test_connections_that_come_and_go_are_each_served_by_the_loop(served):
    """Closed sockets' numbers are reused at once by new ones: each must be watched afresh."""
    app, port = served
    for n in range(30):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request("POST", "/api/events", b"[]") + request("GET", f"/api/topics/{n}"))
            assert read_answers(sock, 2) == [b"/api/events", f"/api/topics/{n}".encode()]
    assert app.threads["/api/events"] == "io-thread" and app.threads["/api/topics/29"] != "io-thread"


def test_an_idle_connection_is_closed_after_the_channel_timeout():
    app = Recorder()
    server = make_server(app, is_publish, threads=1, host="127.0.0.1", port=0, channel_timeout=1, cleanup_interval=1)
    running = Served(server)
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=10) as sock:
            sock.sendall(request("GET", "/api/topics"))
            assert read_answers(sock, 1) == [b"/api/topics"]
            # Nothing happens on any socket now: only the poller's own round finds it idle.
            assert sock.recv(1) == b""  # closed by the server, well within the 10 s timeout
    finally:
        running.close()


def test_closing_the_poller_closes_the_listener_and_every_connection():
    server = make_server(Recorder(), is_publish, threads=1, host="127.0.0.1", port=0)
    running = Served(server)
    port = server.effective_port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(request("GET", "/api/topics"))
    assert read_answers(sock, 1) == [b"/api/topics"]
    running.close()
    assert sock.recv(1) == b""
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


# -- publishes answered straight from the bytes read ---------------------------------------------


class Responder:
    """Stands in for the publish middleware's `respond`: answers POSTs to /api/events with the body
    it was given, and notes each request it was asked about."""

    def __init__(self, defer: float | None = None) -> None:
        self.calls: list[tuple] = []
        self.defer = defer  # answer this many seconds later, through `later`

    def __call__(self, method, path, query, headers, body, later=None):
        if path != "/api/events":
            return None
        self.calls.append((method, path, query, headers(), body(), threading.current_thread().name))
        answer = "202 Accepted", [("Content-Type", "text/plain"), ("Content-Length", str(len(body())))], body()
        if self.defer is None or later is None:
            return answer
        asyncio.get_running_loop().call_later(self.defer, later, answer)
        return LATER


@pytest.fixture
def answering():
    app, responder = Recorder(), Responder()
    server = make_server(app, is_publish, threads=2, respond=responder, host="127.0.0.1", port=0, ident="emulator",
                         channel_request_lookahead=1)
    running = Served(server)
    yield app, responder, server
    running.close()


def answer(stream) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The next whole answer on `stream` (a socket's makefile("rb")): status line, headers by
    lower-case name, body."""
    status = stream.readline().rstrip()
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, stream.read(int(headers.get(b"content-length", b"0")))


def test_a_publish_read_whole_is_answered_from_its_bytes_on_the_io_thread(answering):
    app, responder, server = answering
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
        for body in (b'[{"n":1}]', b'[{"n":2}]'):  # the connection stays open and serves the next one the same way
            sock.sendall(b"POST /api/events?api-version=2018-01-01 HTTP/1.1\r\nHost: x\r\naeg-sas-key: k\r\nX-Two: a\r\n"
                         b"X-Two: b\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            status, headers, got = answer(stream)
            assert (status, got) == (b"HTTP/1.1 202 Accepted", body)
            assert headers[b"server"] == b"emulator" and headers[b"date"].endswith(b" GMT")
            assert headers[b"content-type"] == b"text/plain"
    (method, path, query, headers, body, thread), _ = responder.calls
    assert (method, path, query, body, thread) == ("POST", "/api/events", "api-version=2018-01-01", b'[{"n":1}]', "io-thread")
    assert headers["aeg-sas-key"] == "k" and headers["x-two"] == "a, b"  # repeated headers joined, as in WSGI
    assert app.threads == {}  # the WSGI app never saw them


def test_the_same_answer_is_encoded_once_a_second_and_dated_each_time(answering):
    app, responder, server = answering
    same = ("200 OK", [("Content-Length", "0")], b"")
    server.respond = lambda *args, **kwargs: same  # as the publish middleware's one 200 answer
    dates = iter(["Thu, 26 Nov 2026 03:00:00 GMT"] * 2 + ["Thu, 26 Nov 2026 03:00:01 GMT"])
    server.http_date = lambda: next(dates)
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
        got = []
        for _ in range(3):
            sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]")
            status, headers, _body = answer(stream)
            got.append((status, headers[b"date"], headers[b"server"]))
    assert got == [(b"HTTP/1.1 200 OK", b"Thu, 26 Nov 2026 03:00:00 GMT", b"emulator")] * 2 + [
        (b"HTTP/1.1 200 OK", b"Thu, 26 Nov 2026 03:00:01 GMT", b"emulator")]


def test_a_publish_answered_later_holds_back_the_next_request_on_its_connection():
    app, responder = Recorder(), Responder(defer=0.2)
    server = make_server(app, is_publish, threads=2, respond=responder, host="127.0.0.1", port=0, channel_request_lookahead=1)
    running = Served(server)
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
            sock.sendall(request("POST", "/api/events", b"[1]"))
            wait_until(lambda: responder.calls, 5, "the publish to be read")
            sock.sendall(request("GET", "/api/topics"))  # while the publish is still unanswered
            first, second = answer(stream), answer(stream)
            assert (first[0], first[2]) == (b"HTTP/1.1 202 Accepted", b"[1]")
            assert (second[0], second[2]) == (b"HTTP/1.1 200 OK", b"/api/topics")
            # And the connection goes on. (The GET's worker may still be finishing with the channel:
            # then waitress serves the next publish itself, here through the stand-in WSGI app.)
            sock.sendall(request("POST", "/api/events", b"[2]"))
            assert answer(stream)[2] in (b"[2]", b"/api/events")
        assert [c[4] for c in responder.calls][0] == b"[1]"
    finally:
        running.close()


def test_what_a_connection_sends_while_its_publish_awaits_its_answer_is_held_to_a_bound():
    """Past MAX_HELD_BYTES the connection is not read until the answer is out: TCP then holds the
    sender back, instead of the broker holding (and copying) all it sends."""
    app, responder = Recorder(), Responder(defer=3.0)
    server = make_server(app, is_publish, threads=2, respond=responder, host="127.0.0.1", port=0, channel_request_lookahead=1)
    running = Served(server)
    flood = request("GET", "/x" * 1000) * 8_000  # ~16 MB of pipelined requests
    try:
        with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock:
            sock.sendall(request("POST", "/api/events", b"[1]"))
            wait_until(lambda: responder.calls, 5, "the publish to be read")
            sock.setblocking(False)
            sent, started = 0, time.monotonic()
            # Send until the socket stays unwritable for 0.3 s (the server stopped reading), 2 s at most.
            while sent < len(flood) and time.monotonic() - started < 2.0 and select.select([], [sock], [], 0.3)[1]:
                try:
                    sent += sock.send(flood[sent:sent + 65536])
                except BlockingIOError:
                    pass
            [channel] = [c for c in list(server.active_channels.values()) if getattr(c, "awaiting", False)]
            assert channel.held_bytes <= MAX_HELD_BYTES + (1 << 20), channel.held_bytes
            assert sent < len(flood)  # the sender was held back
    finally:
        running.close()


def test_a_chunked_publish_read_whole_is_answered_with_its_body_put_together(answering):
    app, responder, server = answering
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[{}]\r\n0\r\n\r\n")
        assert answer(stream)[::2] == (b"HTTP/1.1 202 Accepted", b"[{}]")
    assert responder.calls[0][4] == b"[{}]"


@pytest.mark.parametrize("head", [
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",  # the answer must close the connection
    b"POST /api/events HTTP/1.0\r\nHost: x\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n",
    b"POST /api/%65vents HTTP/1.1\r\nHost: x\r\n",  # percent-escapes: waitress decodes the path
    b"POST /other HTTP/1.1\r\nHost: x\r\n",  # not a publish: the responder declines
], ids=["connection-close", "http-1.0", "expect-continue", "escaped-path", "not-a-publish"])
def test_requests_the_bytes_path_does_not_take_are_served_by_waitress_as_read(answering, head):
    app, responder, server = answering
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
        sock.sendall(head + b"Content-Length: 2\r\n\r\n[]")
        status, _, body = answer(stream)
        if status == b"HTTP/1.1 100 Continue":  # waitress's interim answer to the Expect header
            status, _, body = answer(stream)
        assert status.endswith(b"200 OK") and body in (b"/api/events", b"/other")
        if b"close" in head or b"1.0" in head:
            assert stream.read(10) == b""  # closed after the answer
    assert responder.calls == [] and list(app.threads) == [body.decode()]


def test_a_publish_that_arrives_in_pieces_or_pipelined_is_served_by_waitress(answering):
    app, responder, server = answering
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n[]")
        channels = lambda: [c for c in list(server._map.values()) if getattr(c, "request", None) is not None]  # noqa: E731
        wait_until(channels, 5, "waitress to hold the first half of the request")
        sock.sendall(b"[]")
        assert answer(stream)[::2] == (b"HTTP/1.1 200 OK", b"/api/events")
        sock.sendall(request("POST", "/api/events", b"[1]") + request("POST", "/api/events", b"[2]"))
        assert [answer(stream)[2] for _ in range(2)] == [b"/api/events", b"/api/events"]
    assert responder.calls == []


def test_a_malformed_request_gets_waitress_own_answer(answering):
    app, responder, server = answering
    with socket.create_connection(("127.0.0.1", server.effective_port), timeout=5) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n[]")
        assert answer(stream)[0] == b"HTTP/1.1 400 Bad Request"
    assert responder.calls == [] and app.threads == {}


# -- where the broker process runs -----------------------------------------------------------------


def thread_cpus(pid: int) -> list[set[int]]:
    """The CPUs each thread of `pid` may run on (Linux)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        line = next(x for x in (task / "status").read_text().splitlines() if x.startswith("Cpus_allowed_list:"))
        cpus: set[int] = set()
        for part in line.split(":")[1].strip().split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
        found.append(cpus)
    return found


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs Linux and 2+ CPUs")
def test_the_broker_keeps_every_thread_on_one_cpu_unless_told_to_use_all(processes):
    allowed = os.sched_getaffinity(0)
    pinned = processes.broker("pinned")
    spread = processes.broker("spread", BROKER_CPU="all")
    wait_until(lambda: len(thread_cpus(pinned.proc.pid)) >= 4, 10, "the broker's threads to start")  # I/O, writer, checkpointer, dispatcher
    assert all(cpus == {max(allowed)} for cpus in thread_cpus(pinned.proc.pid))
    assert all(cpus == allowed for cpus in thread_cpus(spread.proc.pid))
    assert requests.post(pinned.url + "/api/events", json=[event()], timeout=5).status_code == 200  # and it serves
