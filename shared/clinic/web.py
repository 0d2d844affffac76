"""The Flask side every service shares: the app factory, one error shape, health checks, correlation ids.

Every 4xx and 5xx answers {"error": {"code", "message", "details"}}. Domain
exceptions (clinic.errors) are translated here and nowhere else; a database that
is away is a 503, never a hang or a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import marshmallow as ma
import sqlalchemy as sa
from flask import Flask, current_app, g, jsonify, request
from flask_smorest import Api, Blueprint
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException

from clinic import audit, bus
from clinic.auth import Principal
from clinic.config import Settings
from clinic.correlation import new_correlation_id, reset_correlation_id, set_correlation_id
from clinic.db import create_engine, is_conflict_victim, is_unavailable, ping, utcnow
from clinic.db import reading as db_reading
from clinic.errors import ClinicError
from clinic.logs import configure_logging
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"


class ErrorBody(ma.Schema):
    code = ma.fields.String(metadata={"description": "Stable machine-readable code, e.g. validation_failed"})
    message = ma.fields.String(metadata={"description": "What went wrong, for a person"})
    details = ma.fields.Dict(metadata={"description": "Fields at fault, or what the request conflicts with"})


class ErrorSchema(ma.Schema):
    error = ma.fields.Nested(ErrorBody)


def error_response(status: int, code: str, message: str, details: dict | None = None):
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "validation_failed",
               429: "too_many_requests", 503: "unavailable"}


class ClinicApi(Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException):
        data = getattr(error, "data", None) or {}
        details = data.get("errors") or data.get("messages") or {}
        # webargs reports by location ({"json": {"field": [...]}}); a single location is flattened
        # so the field at fault is named at the top of details.
        if isinstance(details, dict) and len(details) == 1 and next(iter(details)) in ("json", "query", "path", "form", "headers"):
            details = next(iter(details.values()))
        if not isinstance(details, dict):
            message = data.get("message") or "; ".join(str(item) for item in details)
            details = {"_schema": details}
        else:
            message = data.get("message") or _validation_message(error.code, details) or error.description
        code = _HTTP_CODES.get(error.code, "error")
        response = error_response(error.code, code, message, details)
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        return response


def _validation_message(status, details):
    if status == 422 and details:
        return "invalid input: " + ", ".join(sorted(str(field) for field in details))
    return None


def settings() -> Settings:
    return current_app.config["CLINIC_SETTINGS"]


def engine() -> Engine:
    return current_app.extensions["clinic.engine"]


def current_principal() -> Principal | None:
    return g.get("principal")


def now() -> datetime:
    """The current UTC time, from the app's clock (replaceable in tests)."""
    return current_app.extensions["clinic.clock"]()


def audit_log() -> sa.Table:
    return current_app.extensions["clinic.metadata"].tables["audit_log"]


def unit_of_work(**options) -> UnitOfWork:
    """A unit of work for the request being handled: the service's database, outbox and clock, and
    the request's audit entry (clinic.audit.audited), written with the change."""
    return UnitOfWork(engine(), current_app.extensions["clinic.metadata"], settings().service,
                      clock=current_app.extensions["clinic.clock"], access=audit.current(), **options)


def reading():
    """A connection for the request's reads (clinic.db.reading)."""
    return db_reading(engine())


health = Blueprint("health", __name__, description="Is this service up, and can it do its job?")


@health.route("/healthz")
@health.response(200)
def healthz():
    """The process is up."""
    return {"status": "ok", "service": settings().service}


@health.route("/readyz")
@health.response(200)
@health.alt_response(503, schema=ErrorSchema)
def readyz():
    """The database and the broker are reachable: 200, else 503 naming what is not."""
    checks = {"database": _database_ok(), "broker": bus.broker_reachable(settings())}
    if all(checks.values()):
        return {"status": "ready", "checks": checks}
    return error_response(503, "not_ready", "not ready: " + ", ".join(k for k, ok in checks.items() if not ok), {"checks": checks})


def _database_ok() -> bool:
    try:
        ping(engine())
        return True
    except sa.exc.DBAPIError:
        return False


def create_service_app(service_settings: Settings, blueprints, title: str, metadata: sa.MetaData, description: str = "",
                       db_engine: Engine | None = None, clock: Callable[[], datetime] = utcnow) -> Flask:
    """The Flask app of one service: its blueprints, OpenAPI at /openapi.json, docs at /docs.

    `metadata` holds the service's tables (its outbox and audit log among them); `clock` gives the
    current UTC time, replaceable for tests."""
    configure_logging(service_settings)
    service_settings.check_safe_to_run()
    app = Flask(service_settings.service)
    app.config.update(
        CLINIC_SETTINGS=service_settings,
        API_TITLE=title,
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"bearerAuth": []}],
        },
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.extensions["clinic.engine"] = db_engine or create_engine(service_settings.database_url, service_settings.database_timeout_seconds)
    app.extensions["clinic.metadata"] = metadata
    app.extensions["clinic.clock"] = clock
    api = ClinicApi(app)
    api.register_blueprint(health)
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    _install_request_hooks(app)
    _install_error_handlers(app)
    return app


def _install_request_hooks(app: Flask) -> None:
    @app.before_request
    def _start():
        g.correlation_id = request.headers.get(CORRELATION_HEADER, "")[:100] or new_correlation_id()
        g.correlation_token = set_correlation_id(g.correlation_id)
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        response.headers[CORRELATION_HEADER] = g.get("correlation_id", "")
        if request.path not in ("/healthz", "/readyz"):
            # Path ids are opaque UUIDs; query strings (names, birth dates) are never logged.
            log.info("%s %s %s %.1fms", request.method, request.path, response.status_code,
                     (time.perf_counter() - g.get("started", time.perf_counter())) * 1000)
        return response

    @app.teardown_request
    def _reset(_exc):
        token = g.pop("correlation_token", None)
        if token is not None:
            reset_correlation_id(token)


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClinicError)
    def _clinic_error(exc: ClinicError):
        return error_response(exc.http_status, exc.code, exc.message, exc.details)

    @app.errorhandler(sa.exc.DBAPIError)
    @app.errorhandler(sa.exc.TimeoutError)
    def _database_error(exc):
        if is_unavailable(exc):
            log.warning("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
            response = error_response(503, "database_unavailable", "the database is not reachable; try again shortly")
        elif is_conflict_victim(exc):
            response = error_response(503, "try_again", "the change collided with another one at the same moment; try again")
        else:
            log.exception("database error")
            return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")
        response.headers["Retry-After"] = "2"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc):
        # HTTPExceptions never reach here: ClinicApi.handle_http_exception is the more specific handler.
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")
