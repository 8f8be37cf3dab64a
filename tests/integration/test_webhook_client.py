"""The delivery HTTP client against real local servers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from broker.webhook import WebhookClient

pytestmark = pytest.mark.integration


def test_webhook_client_forgets_connections_the_subscriber_closed():
    """A subscriber answering `Connection: close` must not make the client hoard dead connections."""
    class Closing(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Closing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = WebhookClient()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/events?x=1"
        statuses = [client.post(url, b"[]", {"Content-Type": "application/json"}, 5).status for _ in range(5)]
        assert statuses == [200] * 5
        assert client.open_connections() == 0
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_webhook_client_reports_refused_connections_and_timeouts_without_raising():
    import socket

    client = WebhookClient()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        refused = client.post(f"http://127.0.0.1:{port}/x", b"[]", {}, 2)
    assert refused.status is None and not refused.timed_out and "refused" in refused.error.lower()

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts the connection, never answers
        timed = client.post(f"http://127.0.0.1:{silent.getsockname()[1]}/x", b"[]", {}, 0.3)
    assert timed.status is None and timed.timed_out
    client.close()


class ScriptedServer:
    """A raw TCP server on loopback answering each request with scripted bytes, so the client
    meets the answers real subscribers give (chunked, HTTP/1.0, interim 100, cut off, TLS)."""

    def __init__(self, answers, tls=None):
        import socket

        self.answers = list(answers)  # (response bytes, close the connection after it)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.tls = tls
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                buffer = b""
                while self.answers:
                    while b"\r\n\r\n" not in buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    if b"\r\n\r\n" not in buffer:
                        break  # the client closed this connection
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buffer = rest[length:]
                    answer, close = self.answers.pop(0)
                    try:
                        conn.sendall(answer)
                    except OSError:  # the client dropped the connection mid-answer (one test is about that)
                        break
                    if close:
                        break

    def url(self, path="/hook?code=a%20b&x=1", scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def close(self):
        self.sock.close()


@pytest.fixture
def client():
    c = WebhookClient()
    yield c
    c.close()


def test_request_bytes_carry_the_path_and_query_exactly_host_length_and_headers(client):
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False)])
    resp = client.post(server.url(), b'[{"id":"1"}]', {"aeg-event-type": "Notification", "Content-Type": "application/json"}, 5)
    assert (resp.status, resp.body, resp.error) == (200, b"ok", None)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?code=a%20b&x=1 HTTP/1.1"
    assert {b"Host: 127.0.0.1:%d" % server.port, b"aeg-event-type: Notification", b"Content-Length: 12"} <= set(lines)
    assert body == b'[{"id":"1"}]'
    server.close()


def test_chunked_answers_are_read_whole_and_the_connection_is_kept(client):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = ScriptedServer([(chunked, False), (b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", False)])
    first = client.post(server.url(), b"[]", {}, 5)
    second = client.post(server.url(), b"[]", {}, 5)
    assert (first.status, first.body) == (200, b"hello world")
    assert second.status == 202 and server.connections == 1
    server.close()


def test_an_http10_answer_without_length_runs_to_the_close(client):
    server = ScriptedServer([(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbye", True)])
    resp = client.post(server.url(), b"[]", {}, 5)
    assert (resp.status, resp.body, resp.headers["Content-Type"]) == (200, b"bye", "text/plain")
    assert client.open_connections() == 0
    server.close()


def test_an_interim_100_continue_is_skipped_for_the_final_answer(client):
    server = ScriptedServer([(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False)])
    assert client.post(server.url(), b"[]", {}, 5).status == 204
    server.close()


def test_an_answer_cut_off_mid_body_is_a_failed_attempt_not_a_success(client):
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True)])
    resp = client.post(server.url(), b"[]", {}, 5)
    assert resp.status is None and "closed" in resp.error
    server.close()


def test_a_keep_alive_connection_the_subscriber_dropped_is_replaced_once(client):
    # The first answer keeps the connection open as far as the client knows, then the server
    # drops it: the next request must go out again on a new connection, not fail.
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
                             (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)])
    assert client.post(server.url(), b"[1]", {}, 5).status == 200
    assert client.post(server.url(), b"[2]", {}, 5).status == 200
    assert server.connections == 2 and [r.endswith(b"[2]") for r in server.requests] == [False, True]
    server.close()


def test_header_values_that_would_split_the_request_are_refused_before_sending(client):
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)])
    resp = client.post(server.url(), b"[]", {"X-Order": "1\r\nX-Injected: yes"}, 5)
    assert resp.status is None and "illegal header" in resp.error
    assert server.requests == []
    server.close()


def test_remembered_request_heads_follow_every_header_change_and_stay_bounded(client, monkeypatch):
    import broker.webhook as webhook

    monkeypatch.setattr(webhook, "MAX_HEADS_KEPT", 2)
    ok = (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)
    server = ScriptedServer([ok] * 4)
    for count, body in (("0", b"[1]"), ("1", b"[22]"), ("0", b"[333]"), ("2", b"[4444]")):
        assert client.post(server.url(), body, {"aeg-delivery-count": count}, 5).status == 200
    heads = [r.partition(b"\r\n\r\n")[0].split(b"\r\n") for r in server.requests]
    assert [[line for line in h if line.startswith((b"aeg-", b"Content-Length"))] for h in heads] == [
        [b"aeg-delivery-count: 0", b"Content-Length: 3"], [b"aeg-delivery-count: 1", b"Content-Length: 4"],
        [b"aeg-delivery-count: 0", b"Content-Length: 5"], [b"aeg-delivery-count: 2", b"Content-Length: 6"]]
    assert len(client._heads) <= 2
    server.close()


def test_https_endpoints_with_self_signed_certificates_are_delivered_to(client, tmp_path):
    import ssl

    from broker.tls import ensure_certificate

    cert, key = ensure_certificate(tmp_path, None, None)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)], tls=tls)
    resp = client.post(server.url(scheme="https"), b"[]", {}, 5)
    assert (resp.status, resp.error) == (200, None)
    assert server.requests[0].startswith(b"POST /hook?code=a%20b&x=1 HTTP/1.1\r\n")
    server.close()


def test_a_closed_client_answers_with_an_error_instead_of_starting_again():
    client = WebhookClient()
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)])
    assert client.post(server.url(), b"[]", {}, 5).status == 200
    client.close()
    resp = client.post(server.url(), b"[]", {}, 5)
    assert resp.status is None and "closed" in resp.error
    assert client._thread is None and client.open_connections() == 0
    server.close()


def test_the_client_tells_its_own_loop_thread_from_others():
    import asyncio

    client = WebhookClient()
    try:
        assert client.on_loop() is False  # not even started yet
        loop = client.loop

        async def ask():
            return client.on_loop()

        assert asyncio.run_coroutine_threadsafe(ask(), loop).result(5) is True
        assert client.on_loop() is False
    finally:
        client.close()


def test_uvloop_runs_the_requests_where_it_is_built():
    uvloop = pytest.importorskip("uvloop")
    client = WebhookClient()
    try:
        assert isinstance(client.loop, uvloop.Loop)
    finally:
        client.close()


def test_without_uvloop_the_standard_asyncio_loop_delivers_the_same(monkeypatch):
    import asyncio

    from broker import webhook

    monkeypatch.setattr(webhook, "uvloop", None)  # as on a platform uvloop is not built for
    client = WebhookClient()
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False)])
    try:
        resp = client.post(server.url(), b"[]", {}, 5)
        assert (resp.status, resp.body) == (200, b"ok")
        assert isinstance(client.loop, asyncio.BaseEventLoop)  # asyncio's own (uvloop.Loop is not one)
    finally:
        client.close()
        server.close()


def test_an_answer_with_megabytes_of_headers_is_a_failed_attempt_and_its_connection_goes(client):
    huge = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 4000) for i in range(5000))  # ~20 MB of headers
    server = ScriptedServer([(b"HTTP/1.1 200 OK\r\n" + huge + b"Content-Length: 0\r\n\r\n", True)])
    resp = client.post(server.url(), b"[]", {}, 10)
    assert resp.status is None and "headers are larger" in resp.error
    assert client.open_connections() == 0
    server.close()
