"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive and serving HTTP."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready to accept events: the store takes writes and the dispatcher is running."""
    eng = current_app.extensions["broker"]
    checks = {"dispatcher": "running" if eng.dispatcher.running else "stopped"}
    try:
        eng.store.check_writable()
        checks["store"] = "writable"
    except Exception as exc:  # any store failure means not ready; say which
        checks["store"] = f"error: {exc}"
    ready = checks["store"] == "writable" and checks["dispatcher"] == "running"
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), (200 if ready else 503)


@bp.get("/metrics")
def metrics():
    eng = current_app.extensions["broker"]
    return Response(eng.metrics.render(), mimetype="text/plain; version=0.0.4; charset=utf-8")
