"""`python -m broker`: serve the broker with waitress."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading

from servicekit.logs import configure_logging

from . import create_app
from .config import Config
from .ingress import is_publish
from .serving import LoopPoller, make_server, serve_on_loop
from .tls import TlsTerminator, ensure_certificate

log = logging.getLogger("broker")


def choose_cpu(setting: str, allowed: set[int]) -> int | None:
    """The CPU to keep the broker's threads on (BROKER_CPU), or None to leave them to the OS.

    CPython runs one thread's Python at a time (the GIL), and the broker's threads hand it to each
    other thousands of times a second: the I/O thread between publishes, the delivery loop between
    requests, the store's writer between commits. On one CPU a hand-over is a switch between
    threads; across CPUs each one also wakes the other CPU, which costs more than the switch (most of
    all in a VM, where Docker Desktop runs). Measured on 2 cores, alternating runs: p99 publish to
    delivery at 1,000 events/s 22-32 -> 9-12 ms, fan-out +25%, batched fan-out +13%, no scenario
    slower. `auto` takes the highest-numbered CPU the process may use; `all` leaves placement to
    the OS.
    """
    if setting == "all" or (setting == "auto" and len(allowed) < 2):
        return None
    if setting == "auto":
        return max(allowed)
    if int(setting) not in allowed:
        raise ValueError(f"BROKER_CPU={setting} is not one of the CPUs this process may use: {sorted(allowed)}")
    return int(setting)


def main() -> int:
    try:
        config = Config.from_env()
        # Before any thread starts: threads keep the CPUs of the thread that started them.
        cpu = choose_cpu(config.cpu, os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else None
    except ValueError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    configure_logging("broker", config.log_level)
    app = create_app(config)
    engine = app.extensions["broker"]
    # What start-up built (modules, the app, its routes) lives as long as the process: out of the
    # collector's way. A full collection then pauses the broker ~20 ms instead of 40-110 ms (at
    # 1,000 events/s with a subscriber): a pause that long is in the p99 of every latency run.
    gc.freeze()
    server = make_server(app, is_publish, respond=app.wsgi_app.respond, host=config.host, port=config.port, threads=config.threads,
                           ident="eventgrid-emulator", connection_limit=1000, channel_timeout=120,
                           channel_request_lookahead=1)  # a closed dashboard tab frees its thread at once

    tls = None
    if config.https_port:
        cert, key = ensure_certificate(config.data_dir, config.tls_cert, config.tls_key)
        tls = TlsTerminator(config.host, config.https_port, server.effective_port, cert, key)
        tls.start()
        log.info("https listening", extra={"port": config.https_port, "cert": str(cert)})

    def shutdown(signum, _frame):
        # Raised in the main thread, which waits for it below: the sockets close, the worker threads
        # finish their requests, the engine stops.
        log.info("shutting down", extra={"signal": signum})
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    # waitress's sockets are polled by the delivery loop: a publish and its deliveries run on one
    # thread (see serving.py). This thread only waits for the signal that stops the broker.
    loop = engine.client.loop
    poller = serve_on_loop(server, loop)
    log.info("broker listening", extra={"host": config.host, "port": config.port, "data_dir": str(config.data_dir),
                                         "default_topic": config.default_topic, "cpu": cpu})
    try:
        threading.Event().wait()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        asyncio.run_coroutine_threadsafe(_close(poller), loop).result(10)
        server.task_dispatcher.shutdown()  # lets the worker threads finish the requests they serve
        if tls:
            tls.stop()
        engine.stop()
    return 0


async def _close(poller: LoopPoller) -> None:
    poller.close()  # on the loop's thread, as everything the poller does


if __name__ == "__main__":
    sys.exit(main())
