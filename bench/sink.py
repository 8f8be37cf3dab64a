"""The raw HTTP endpoint: fast webhook subscriber and ingress ceiling in one.

`python -m bench.sink --port N` serves, with nothing but asyncio and orjson:
  POST <any path>   -> 200, Content-Length: 0. Counts requests and events (the length of a JSON
                       array body, 1 for an object). Events whose `data.t` holds a
                       `time.monotonic()` stamp add a latency sample (now - t): CLOCK_MONOTONIC is
                       system-wide on Linux, so stamps from another process compare.
  GET /stats        -> {"requests", "events", "bytes", "errors", "samples", "validationUrl"}
  GET /latencies    -> {"ms": [...]}, the samples in arrival order
  POST /reset       -> zero everything

It parses just enough HTTP/1.1 for keep-alive clients (Content-Length bodies, pipelining); it is
the cheapest endpoint that still reads what it is sent, so it bounds what any server here can do.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_SAMPLES = 1_000_000  # bounds memory: a 10 s run at 1,000 events/s keeps 10,000


class Counters:
    """What the sink has seen since the last reset (one instance per server, no module state)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.events = 0
        self.bytes = 0
        self.errors = 0
        self.latencies_ms: list[float] = []
        self.validation_url: str | None = None

    def stats(self) -> dict:
        return {
            "requests": self.requests, "events": self.events, "bytes": self.bytes, "errors": self.errors,
            "samples": len(self.latencies_ms), "validationUrl": self.validation_url,
        }

    def record(self, body: bytes) -> None:
        self.requests += 1
        self.bytes += len(body)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            self.errors += 1
            return
        events = payload if isinstance(payload, list) else [payload]
        self.events += len(events)
        first = events[0] if events else None
        if not isinstance(first, dict):
            return
        data = first.get("data")
        if isinstance(data, dict):
            if "validationUrl" in data:  # the Event Grid handshake: remember it, answer nothing
                self.events -= len(events)
                self.validation_url = data["validationUrl"]
                return
            if "t" in data and len(self.latencies_ms) < MAX_SAMPLES:
                now = time.monotonic()
                for event in events:
                    data = event.get("data") if isinstance(event, dict) else None
                    stamp = data.get("t") if isinstance(data, dict) else None
                    if isinstance(stamp, float):
                        self.latencies_ms.append((now - stamp) * 1000.0)


class SinkProtocol(asyncio.Protocol):
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:  # answer every complete request in the buffer (pipelining)
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buffer[:end])
            length = _content_length(head)
            if length is None:
                self.counters.errors += 1
                self.transport.write(BAD)
                self.transport.close()
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                break
            body = bytes(self.buffer[end + 4:total])
            del self.buffer[:total]
            out.append(self.answer(head, body))
        if out:
            self.transport.write(b"".join(out))

    def answer(self, head: bytes, body: bytes) -> bytes:
        line = head.split(b"\r\n", 1)[0]
        if line.startswith(b"GET /stats"):
            return _json(self.counters.stats())
        if line.startswith(b"GET /latencies"):
            return _json({"ms": self.counters.latencies_ms})
        if line.startswith(b"POST /reset"):
            self.counters.reset()
            return OK
        if line.startswith(b"GET /healthz"):
            return _json({"status": "ok"})
        self.counters.record(body)
        return OK


def _content_length(head: bytes) -> int | None:
    """The Content-Length of a request head; 0 when absent; None for a chunked body (unsupported)."""
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        return None
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at + 2)
    try:
        return int(lower[at + 17:end if end > 0 else len(lower)])
    except ValueError:
        return None


def _json(obj) -> bytes:
    body = orjson.dumps(obj)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def serve(host: str, port: int) -> None:
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(counters), host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
