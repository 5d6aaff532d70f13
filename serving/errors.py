"""JSON errors: the `ApiError` every route raises, JSON responses, and the handlers that make
every error the service returns (Werkzeug's 404/405/413 and anything unexpected too) JSON."""

from __future__ import annotations

import logging

import orjson
from flask import Flask, Response, g
from werkzeug.exceptions import HTTPException

log = logging.getLogger("escalation_risk.serving")


class ApiError(Exception):
    """An error answered as JSON: status, short code, message and the bad fields."""

    def __init__(self, status: int, error: str, message: str, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.details = status, error, message, details or []
        self.headers = headers or {}

    @classmethod
    def for_body(cls, status: int, error: str, message: str) -> ApiError:
        """An error about the request body as a whole (not JSON, not an object): `details` names "(body)"."""
        return cls(status, error, message, [{"field": "(body)", "message": message}])


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status=status,
                    mimetype="application/json", headers=headers)


def error_response(status: int, error: str, message: str, details: list[dict] | None = None) -> Response:
    body = {"error": error, "message": message, "details": details or [], "request_id": g.get("request_id")}
    return json_response(body, status)


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON, including Werkzeug's 404/405/413 and anything unexpected."""

    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.error, exc.message, exc.details)
        response.headers.update(exc.headers)  # e.g. Retry-After on a 503
        return response

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException) -> Response:
        name = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, name, exc.description or exc.name)
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"request_id": g.get("request_id")})
        return error_response(500, "internal_error", "unexpected server error; see the log for this request_id")
