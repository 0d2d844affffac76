"""The one shape of every HTTP error the services answer: {"error": {"code", "message", "details"}}.

Its own module so that the app (clinic.web), the edge (clinic.http_edge) and the web server's own
refusals (clinic.gunicorn_conf) all write the same thing.
"""

from __future__ import annotations

import json

import marshmallow as ma
from flask import jsonify

# A stable code per status, for errors that have no more specific one.
# On every answer, from the app, its /metrics and the ops ports alike: nothing is kept by a browser or a
# proxy (answers hold patient data), nothing is read as another type than it says, no address (which can
# hold an id) leaks in a Referer, and no answer runs a script or is framed (the docs page, clinic.api_docs,
# sets a policy of its own; so the app sets the default one only where none is set).
ANSWER_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
DEFAULT_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
# For an answer written outside Flask (/metrics in front of the app, the ops ports): every header above.
FIXED_ANSWER_HEADERS = (*ANSWER_HEADERS.items(), ("Content-Security-Policy", DEFAULT_CONTENT_SECURITY_POLICY))

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
