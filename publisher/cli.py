"""`python -m publisher`: publish NewOrder events to a topic with the official Azure SDK.

| variable             | default                            | meaning                                     |
|----------------------|------------------------------------|---------------------------------------------|
| `PUBLISHER_ENDPOINT` | `http://localhost:5000/api/events` | topic endpoint (`--endpoint` overrides)     |
| `PUBLISHER_KEY`      | `local-dev-key`                    | topic access key, sent as `aeg-sas-key`     |
| `LOG_LEVEL`          | `INFO`                             | level of the JSON error lines on stderr     |

The key is deliberately not a flag: command lines show up in `ps` and shell history.

Output: progress lines on stderr when more than one batch is sent, then one summary line on stdout,
`summary: accepted=N failed=N seconds=S events/s=R`. Exit status 0 only if every event was accepted.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridPublisherClient

from publisher.events import SCHEMAS, new_order_events
from publisher.orders import generate_orders
from publisher.sending import EventSender, Progress, publish
from servicekit.logs import configure_logging
from servicekit.settings import env_text

DEFAULT_ENDPOINT = "http://localhost:5000/api/events"
DEFAULT_KEY = "local-dev-key"


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def parse_args(argv: Sequence[str] | None, environ: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m publisher", description="Publish NewOrder events.")
    parser.add_argument("--count", type=_at_least(1), default=1, help="events to publish (default 1)")
    parser.add_argument(
        "--order-id", help="order id for a single event (default 12345); with --count > 1 the first of a sequence"
    )
    parser.add_argument("--batch-size", type=_at_least(1), default=100, help="events per send call (default 100)")
    parser.add_argument("--schema", choices=SCHEMAS, default="eventgrid", help="event schema (default eventgrid)")
    parser.add_argument(
        "--endpoint",
        default=env_text(environ, "PUBLISHER_ENDPOINT", DEFAULT_ENDPOINT),
        help=f"topic endpoint (default $PUBLISHER_ENDPOINT or {DEFAULT_ENDPOINT})",
    )
    parser.add_argument("--seed", type=int, help="make orders and event ids repeatable (same seed, same event ids)")
    parser.add_argument("--retries", type=_at_least(0), default=3, help="SDK retries per send call (default 3)")
    parser.add_argument("--timeout", type=_seconds, default=30.0, help="seconds to connect and to wait for an answer")
    return parser.parse_args(argv)


def sdk_client(endpoint: str, key: str) -> EventSender:
    # AzureKeyCredential only adds the aeg-sas-key header; unlike bearer-token auth it does not
    # insist on https, so the emulator's plain http endpoint works as it is.
    return EventGridPublisherClient(endpoint, AzureKeyCredential(key))


def quiet_sdk_logging() -> None:
    # The SDK's HTTP logging policy writes request and response headers at INFO for every call.
    logging.getLogger("azure").setLevel(logging.WARNING)
    # With CloudEvents the SDK hands every per-call option (retry_total, read_timeout) to each event's
    # model too, which warns once per event and option that it "will be ignored". They do take effect
    # on the request; the warnings are noise.
    logging.getLogger("azure.eventgrid._legacy._generated._serialization").setLevel(logging.ERROR)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    client_factory: Callable[[str, str], EventSender] = sdk_client,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    args = parse_args(argv, environ)

    rng = random.Random(args.seed)
    orders = generate_orders(args.count, rng=rng, first_order_id=args.order_id)
    events = new_order_events(orders, schema=args.schema, rng=rng)

    client = client_factory(args.endpoint, env_text(environ, "PUBLISHER_KEY", DEFAULT_KEY))
    # Per call, not on the client: in Event Grid basic mode the SDK's client constructor drops its
    # keyword arguments, so retry_total or timeouts given there would silently not apply.
    options = {"retry_total": args.retries, "connection_timeout": args.timeout, "read_timeout": args.timeout}
    progress = Progress(args.count, stderr) if args.count > args.batch_size else None
    try:
        result = publish(
            client, events, total=args.count, batch_size=args.batch_size, send_options=options, progress=progress
        )
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()

    print(f"{result.summary()} schema={args.schema} endpoint={args.endpoint}", file=stdout, flush=True)
    for error in result.errors[:5]:
        print(f"error: {error}", file=stderr)
    return 0 if result.failed == 0 else 1


def run() -> None:
    configure_logging("publisher")
    quiet_sdk_logging()
    sys.exit(main())
