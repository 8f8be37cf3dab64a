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
