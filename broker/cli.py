"""`eventgrid-emulator` (and `python -m broker`): start the broker.

Every setting is an environment variable (broker/config.py, the README's table); the flags below set
the common ones and win over the environment. `--in-memory` keeps the store in a temporary
directory that is removed when the broker stops.

Threads: the main thread only waits for SIGTERM/SIGINT; the delivery loop (the webhook client's
event loop) serves the HTTP sockets (serving.py); waitress's worker threads serve what the loop
hands them; the store, dispatcher, validator and TLS terminator have threads of their own (see their
modules).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from importlib import metadata

from servicekit.logs import configure_logging

from .config import Config

log = logging.getLogger("broker")

# flag -> environment variable it sets
FLAGS = {
    "host": "BROKER_HOST",
    "port": "BROKER_PORT",
    "data_dir": "BROKER_DATA_DIR",
    "config": "BROKER_CONFIG",
    "https_port": "BROKER_HTTPS_PORT",
    "time_scale": "BROKER_TIME_SCALE",
    "log_level": "LOG_LEVEL",
    "cert": "BROKER_TLS_CERT",
    "key": "BROKER_TLS_KEY",
    "storage": "BROKER_STORAGE_CONNECTION_STRING",
    "allowed_hosts": "BROKER_ALLOWED_HOSTS",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="eventgrid-emulator", description="Azure Event Grid on your laptop: start the emulator.",
        epilog="Every other setting is an environment variable: see the configuration table in the README.")
    parser.add_argument("--host", help="interface to listen on (BROKER_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (BROKER_PORT, default 5000)")
    parser.add_argument("--https-port", type=int, help="also serve HTTPS on this port (BROKER_HTTPS_PORT)")
    parser.add_argument("--data-dir", help="where the store, dead letters and TLS certificate live (BROKER_DATA_DIR)")
    parser.add_argument("--config", help="JSON file of topics, domains and namespaces to declare (BROKER_CONFIG)")
    parser.add_argument("--time-scale", type=float, help="multiply every wait by this, e.g. 0.001 (BROKER_TIME_SCALE)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING... (LOG_LEVEL)")
    parser.add_argument("--cert", help="PEM certificate for the HTTPS port (BROKER_TLS_CERT; default: one generated)")
    parser.add_argument("--key", help="PEM private key of --cert (BROKER_TLS_KEY)")
    parser.add_argument("--storage", metavar="CONNECTION_STRING",
                        help="Azure Storage account for StorageQueue destinations and dead-letter blobs, e.g. "
                             "UseDevelopmentStorage=true for Azurite (BROKER_STORAGE_CONNECTION_STRING)")
    parser.add_argument("--allowed-hosts", help="more host names to answer to, comma-separated (BROKER_ALLOWED_HOSTS)")
    parser.add_argument("--in-memory", action="store_true", help="a throwaway store, removed when the emulator stops")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser.parse_args(argv)


def _version() -> str:
    try:
        return metadata.version("eventgrid-emulator")
    except metadata.PackageNotFoundError:  # run from a checkout
        return "(from source)"


def environment(args: argparse.Namespace, env: dict[str, str]) -> dict[str, str]:
    """The environment the broker reads, with the flags given applied over it."""
    out = dict(env)
    for name, var in FLAGS.items():
        value = getattr(args, name)
        if value is not None:
            out[var] = str(value)
    return out


def choose_cpu(setting: str, allowed: set[int]) -> int | None:
    """The CPU to keep the broker's threads on (BROKER_CPU), or None to leave them to the OS.

    CPython runs one thread's Python at a time (the GIL), and the broker's threads hand it to each
    other thousands of times a second. On one CPU a hand-over is a switch between threads; across
    CPUs each one also wakes the other CPU, which costs more than the switch (docs/performance.md).
    `auto` takes the highest-numbered CPU the process may use; `all` leaves placement to the OS.
    """
    if setting == "all" or (setting == "auto" and len(allowed) < 2):
        return None
    if setting == "auto":
        return max(allowed)
    if int(setting) not in allowed:
        raise ValueError(f"BROKER_CPU={setting} is not one of the CPUs this process may use: {sorted(allowed)}")
    return int(setting)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args, dict(os.environ))
    scratch = None
    if args.in_memory:
        scratch = tempfile.mkdtemp(prefix="eventgrid-emulator-")
        env["BROKER_DATA_DIR"] = scratch
    try:
        try:
            config = Config.from_env(env)
            # Before any thread starts: threads keep the CPUs of the thread that started them.
            cpu = choose_cpu(config.cpu, os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else None
        except ValueError as exc:
            print(f"eventgrid-emulator: {exc}", file=sys.stderr)
            return 2
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        return serve(config, cpu)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def serve(config: Config, cpu: int | None = None) -> int:
    """Run the broker until SIGTERM or SIGINT."""
    from . import create_app
    from .ingress import is_publish
    from .serving import WAITRESS_VERSION, make_server, serve_on_loop
    from .tls import TlsTerminator, ensure_certificate

    configure_logging("broker", config.log_level)
    app = create_app(config)
    engine = app.extensions["broker"]
    # What start-up built (modules, the app, its routes) lives as long as the process: out of the
    # collector's way, so a full collection pauses the broker ~20 ms instead of 40-110 ms.
    gc.freeze()
    options = dict(host=config.host, port=config.port, threads=config.threads, ident="eventgrid-emulator", connection_limit=1000,
                   channel_timeout=120, channel_request_lookahead=1)  # (lookahead: a closed dashboard tab frees its thread at once)
    installed = _waitress_version()
    fast = installed == WAITRESS_VERSION
    try:
        if fast:
            server = make_server(app, is_publish, respond=app.wsgi_app.respond, **options)
        else:
            log.warning("serving without the fast path: it needs waitress %s, and %s is installed", WAITRESS_VERSION, installed,
                        extra={"waitress": installed})
            server = _plain_server(app, options)
    except (ValueError, OSError) as exc:
        engine.stop()
        print(f"eventgrid-emulator: {exc}", file=sys.stderr)
        return 2
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
    # thread (see serving.py). Plain waitress runs its own select() loop on a thread of its own.
    # This thread only waits for the signal that stops the broker.
    loop = engine.client.loop
    poller = serve_on_loop(server, loop) if fast else None
    if not fast:
        threading.Thread(target=server.run, name="waitress", daemon=True).start()
    log.info("broker listening", extra={"host": config.host, "port": config.port, "data_dir": str(config.data_dir),
                                         "default_topic": config.default_topic, "cpu": cpu, "fast_path": fast})
    try:
        threading.Event().wait()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        if poller is not None:
            asyncio.run_coroutine_threadsafe(_close(poller), loop).result(10)
        else:
            server.close()
        server.task_dispatcher.shutdown()  # lets the worker threads finish the requests they serve
        if tls:
            tls.stop()
        engine.stop()
    return 0


def _waitress_version() -> str:
    try:
        return os.environ.get("BROKER_FAKE_WAITRESS_VERSION") or metadata.version("waitress")  # (the tests fake another)
    except metadata.PackageNotFoundError:
        return "unknown"


def _plain_server(app, options: dict):
    """Waitress as it comes: every request on a worker thread, through the WSGI app."""
    from waitress import create_server

    from .serving import MAX_OTHER_BODY

    server = create_server(app, max_request_body_size=MAX_OTHER_BODY, **options)
    if not hasattr(server, "run"):
        raise ValueError(f"BROKER_HOST={options['host']} resolves to several addresses; set it to one of them, e.g. 127.0.0.1")
    return server


async def _close(poller) -> None:
    poller.close()  # on the loop's thread, as everything the poller does
