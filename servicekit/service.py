"""What every subscriber's Flask app has besides its own routes: JSON errors, /healthz, serving."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, abort, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Event Grid caps a delivery batch at 1 MB; a little headroom, and nothing near a memory problem.
MAX_BODY_BYTES = 4 * 1024 * 1024


def create_service_app(name: str) -> Flask:
    """A Flask app that answers errors (404, 405, 413, 500) as JSON and has GET /healthz."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # Responses are read by the broker, tests and curl; key order as written reads better than sorted.
    app.json.sort_keys = False

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify(error=error.description, status=error.code), error.code

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        log.exception("unhandled error")
        return jsonify(error="internal error", status=500), 500

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app


def limit_arg(default: int = 100, maximum: int = 1000) -> int:
    """The `?limit=` of a listing request; 400 unless it is an integer from 1 to `maximum`."""
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        abort(400, description=f"limit must be an integer from 1 to {maximum}")
    return limit


def serve(app: Flask, *, host: str, port: int, data_dir: Path) -> None:
    """Serve `app` with waitress until interrupted (waitress, because Flask's own server is for dev)."""
    from waitress import serve as waitress_serve

    log.info("listening", extra={"host": host, "port": port, "data_dir": str(data_dir)})
    # 8 threads, not waitress's 4: the broker delivers up to 4 at once per subscription by default,
    # and health checks or a GET listing should not queue behind a burst of deliveries.
    waitress_serve(app, host=host, port=port, ident=app.name, threads=8)
