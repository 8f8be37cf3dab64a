"""A minimal asyncio HTTP/1.1 client connection: write prebuilt request bytes, read one response.

Cheaper per request than http.client or any client library, so on a 2-core machine the load
generator is not what limits a run (the ceiling scenario shows how far it goes).
"""

from __future__ import annotations

import asyncio


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def send(self, data: bytes) -> tuple[int, bytes]:
        """Send one request; return (status, body). Reconnects once if the server had closed it."""
        if self.writer is None:
            await self.open()
        try:
            return await self._roundtrip(data)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            await self.open()
            return await self._roundtrip(data)

    async def _roundtrip(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        try:
            status = int(head[9:12])
        except ValueError:
            raise HttpError(f"not an HTTP response: {head[:40]!r}") from None
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.find(b"\r\n", at + 2)
            body = await self.reader.readexactly(int(lower[at + 17:end]))
        elif b"transfer-encoding: chunked" in lower:
            raise HttpError("chunked responses are not supported")
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await self.reader.read()  # no length: the body runs to the end of the connection
            self.close()
            return status, body
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
