"""A mail catcher for `make run`: SMTP in, MailHog's JSON API and a plain page out.

The compose stack uses MailHog itself. Running the services as local processes needs a catcher
too, and MailHog is a Go binary nobody has installed; this one needs only aiosmtpd (already in
requirements/dev.txt) and the standard library. It speaks the part of MailHog's API that
tests/mailbox.py reads, so the same tests and habits work against either:

    GET    /api/v2/messages   {"total", "count", "start", "items": [newest first, with Raw.Data]}
    DELETE /api/v1/messages   forget every message
    GET    /                  the messages as a page (to, subject, body)

    python mailhog/local_catcher.py --smtp 127.0.0.1:1025 --http 127.0.0.1:8025

Messages live in memory only, as in MailHog's default mode.
"""

from __future__ import annotations

import argparse
import html
import json
import signal
import threading
from datetime import datetime, timezone
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

MAX_MESSAGES = 1000  # oldest dropped beyond this: a long `make run` session must not grow forever


class Catcher:
    """The received messages; aiosmtpd calls handle_DATA, the HTTP side reads snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict] = []
        self._next_id = 1

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._lock:
            self._messages.append({
                "id": self._next_id,
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "data": envelope.original_content or envelope.content,
                "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            })
            self._next_id += 1
            del self._messages[:-MAX_MESSAGES]
        return "250 Message accepted for delivery"

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


def _path(address: str) -> dict:
    mailbox, _, domain = address.partition("@")
    return {"Relays": None, "Mailbox": mailbox, "Domain": domain, "Params": ""}


def mailhog_item(message: dict) -> dict:
    """One message in the shape of MailHog's v2 API (the fields MailHog clients read)."""
    raw = message["data"].decode("utf-8", "surrogateescape")
    parsed = message_from_bytes(message["data"], policy=policy.compat32)
    headers: dict[str, list[str]] = {}
    for name, value in parsed.items():
        headers.setdefault(name, []).append(str(value))
    return {
        "ID": str(message["id"]),
        "From": _path(message["from"]),
        "To": [_path(rcpt) for rcpt in message["to"]],
        "Content": {"Headers": headers, "Body": raw.partition("\r\n\r\n")[2] or raw.partition("\n\n")[2], "Size": len(raw)},
        "Created": message["created"],
        "Raw": {"From": message["from"], "To": message["to"], "Data": raw},
    }


def _page(messages: list[dict]) -> str:
    rows = []
    for message in reversed(messages):
        parsed = message_from_bytes(message["data"], policy=policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        rows.append(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>".format(
                html.escape(message["created"]),
                html.escape(", ".join(message["to"])),
                html.escape(str(parsed.get("Subject", ""))),
                html.escape(body.get_content() if body is not None else ""),
            )
        )
    return (
        "<!doctype html><meta charset=utf-8><title>Mail catcher</title>"
        "<h1>Mail catcher</h1><p>{} message(s); JSON at <a href=/api/v2/messages>/api/v2/messages</a></p>"
        "<table border=1 cellpadding=4><tr><th>received</th><th>to</th><th>subject</th><th>body</th></tr>{}</table>"
    ).format(len(messages), "".join(rows))


def make_handler(catcher: Catcher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            messages = catcher.snapshot()
            if path == "/api/v2/messages":
                items = [mailhog_item(m) for m in reversed(messages)]
                body = json.dumps({"total": len(items), "count": len(items), "start": 0, "items": items})
                self._send(200, body, "application/json")
            elif path == "/":
                self._send(200, _page(messages), "text/html; charset=utf-8")
            else:
                self._send(404, json.dumps({"error": "not found"}), "application/json")

        def do_DELETE(self) -> None:
            if self.path.split("?", 1)[0] == "/api/v1/messages":
                catcher.clear()
                self._send(200, "", "text/plain")
            else:
                self._send(404, json.dumps({"error": "not found"}), "application/json")

        def log_message(self, format: str, *args) -> None:
            pass  # one line per poll of a waiting test would drown the log

    return Handler


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp", default="127.0.0.1:1025", help="SMTP listen address (default 127.0.0.1:1025)")
    parser.add_argument("--http", default="127.0.0.1:8025", help="web/API listen address (default 127.0.0.1:8025)")
    args = parser.parse_args(argv)

    catcher = Catcher()
    smtp_host, smtp_port = _host_port(args.smtp)
    controller = Controller(catcher, hostname=smtp_host, port=smtp_port)
    controller.start()
    web = ThreadingHTTPServer(_host_port(args.http), make_handler(catcher))
    # SIGTERM (make stop) ends serve_forever from another thread, then both listeners close.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=web.shutdown, daemon=True).start())
    print(f"mail catcher: SMTP {args.smtp}, web http://{args.http}/", flush=True)
    try:
        web.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        web.server_close()
        controller.stop()


if __name__ == "__main__":
    main()
