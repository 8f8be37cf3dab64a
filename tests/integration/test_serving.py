"""The broker's waitress server: publish requests on the I/O thread, everything else on workers."""

from __future__ import annotations

import socket
import threading

import pytest
from waitress import wasyncore

from broker.ingress import is_publish
from broker.serving import make_server
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


class Recorder:
    """A WSGI app that notes which thread served each path; `/slow` blocks until released."""

    def __init__(self) -> None:
        self.threads: dict[str, str] = {}
        self.release = threading.Event()
        self.slow_started = threading.Event()

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        self.threads[path] = threading.current_thread().name
        if path == "/slow":
            self.slow_started.set()
            self.release.wait(10)
        body = path.encode() * (5_000_000 if path == "/big" else 1)
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def served():
    app = Recorder()
    server = make_server(app, is_publish, threads=2, host="127.0.0.1", port=0, channel_request_lookahead=1)  # as the broker
    loop = threading.Thread(target=server.run, name="io-thread", daemon=True)
    loop.start()
    app.server = server
    yield app, server.effective_port
    app.release.set()
    # Closed from the I/O thread itself (a trigger thunk), so its select() never sees a closed socket.
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    loop.join(5)
    server.task_dispatcher.shutdown()
    assert not loop.is_alive()


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


def test_only_workers_wake_the_io_thread(served):
    """A worker that wrote must wake the I/O thread out of select(); a publish served on the I/O
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
