"""The broker's waitress server: publish requests on the I/O thread, everything else on workers."""

from __future__ import annotations

import socket
import threading

import pytest

from broker.ingress import is_publish
from broker.serving import make_server

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
        body = path.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


@pytest.fixture
def served():
    app = Recorder()
    server = make_server(app, is_publish, threads=2, host="127.0.0.1", port=0, channel_request_lookahead=1)  # as the broker
    loop = threading.Thread(target=server.run, name="io-thread", daemon=True)
    loop.start()
    yield app, server.effective_port
    app.release.set()
    server.close()
    loop.join(5)


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """The bodies of `count` answers, in the order they arrived (each body is its request's path)."""
    data, bodies = b"", []
    while len(bodies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(bodies)} answers"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            if len(rest) < length:
                break
            bodies.append(rest[:length])
            data = rest[length:]
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
