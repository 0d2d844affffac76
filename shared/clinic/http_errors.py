"""The one shape of every HTTP error the services answer: {"error": {"code", "message", "details"}}.

Its own module so that the app (clinic.web), the edge (clinic.http_edge) and the web server's own
refusals (clinic.gunicorn_conf) all write the same thing.
"""

from __future__ import annotations

import json

import marshmallow as ma
from flask import jsonify

# A stable code per status, for errors that have no more specific one.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type", 417: "expectation_failed",
              422: "validation_failed", 429: "rate_limited", 431: "headers_too_large", 501: "not_implemented",
              503: "unavailable"}


class ErrorBody(ma.Schema):
    code = ma.fields.String(metadata={"description": "Stable machine-readable code, e.g. validation_failed"})
    message = ma.fields.String(metadata={"description": "What went wrong, for a person"})
    details = ma.fields.Dict(metadata={"description": "Fields at fault, or what the request conflicts with"})


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorBody)


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status: int, code: str, message: str, details: dict | None = None):
    """The Flask response for an error (inside a request)."""
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    return response


def error_bytes(status: int, message: str) -> bytes:
    """The JSON of an error with no request around it (the web server refusing a request line)."""
    return json.dumps(error_body(HTTP_CODES.get(status, "error"), message)).encode()
