"""Event Grid style errors: every 4xx/5xx the broker answers has Azure's JSON shape.

    {"error": {"code": "BadRequest", "message": "...", "details": [{"code": ..., "message": ..., "target": ...}]}}
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("broker.errors")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []

    def to_body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def bad_request(message: str, code: str = "BadRequest", target: str | None = None) -> ApiError:
    details = [{"code": code, "message": message, "target": target}] if target else None
    return ApiError(400, code, message, details)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NotFound", message)


def response(error: ApiError):
    return jsonify(error.to_body()), error.status


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, response)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Werkzeug's own 404/405/413 pages become JSON in the same shape.
        code = (exc.name or "Error").replace(" ", "")
        return response(ApiError(exc.code or 500, code, exc.description or exc.name))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return response(ApiError(500, "InternalServerError", "The broker hit an unexpected error; see its log."))
