"""The HTTP server: waitress, with publish requests served on its I/O thread.

Waitress reads requests on one I/O thread and hands each to a worker thread, which writes the
answer and wakes the I/O thread again. For a publish that is two thread hand-offs around ~150
microseconds of work, and on two cores the hand-offs cost more than the work: each wakes a thread
that must then wait for the GIL. A publish never blocks for long (it parses, commits one group to
SQLite and hands its deliveries to the dispatcher's loop), so it is served right where it was read.
Every other request (the dashboard's event stream, management calls, the prototype's API) still goes
to the worker threads, so a slow one cannot hold up the I/O thread.

This uses hooks of waitress 3.0 (pinned): `create_server(_dispatcher=...)`, the server's
`channel_class` and its `pull_trigger`. `tests/integration/test_serving.py` fails if they stop
working.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.task import ThreadedTaskDispatcher


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


def make_server(app, inline: Callable[[str, str], bool], threads: int, **adjustments):
    """A waitress server for `app`; requests for which `inline(method, path)` is true skip the pool."""
    dispatcher = _Dispatcher(inline)
    dispatcher.set_thread_count(threads)
    server = create_server(app, _dispatcher=dispatcher, threads=threads, **adjustments)
    server.channel_class = _Channel
    server.io_thread = None
    wake = server.pull_trigger

    def pull_trigger():
        # Wakes the I/O thread out of select() after a worker wrote. A request served on the I/O
        # thread itself would only make it read its own wake-up byte on the next pass.
        if threading.get_ident() != server.io_thread:
            wake()

    server.pull_trigger = pull_trigger
    return server
