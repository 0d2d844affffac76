"""The Flask side every service shares: the app factory, one error shape, health checks, correlation ids.

Every 4xx and 5xx answers {"error": {"code", "message", "details"}} (clinic.http_errors). Domain
exceptions (clinic.errors) are translated here and nowhere else; a database that is away is a 503,
never a hang or a 500. What every request passes before a view is clinic.http_edge; what the OpenAPI
documents say beyond flask-smorest's defaults is clinic.openapi.

Every request is counted in clinic.metrics by its route template (never the raw path, which can
hold a name), method and status, and GET /metrics answers them. /metrics is answered before Flask
routes the request: it is no operation of the API (not in the OpenAPI document, not audited, no
token), and it holds no patient data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, datetime

import sqlalchemy as sa
from flask import Flask, current_app, g, request
from flask_smorest import Api, Blueprint
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from clinic import access, api_docs, audit, bus, http_edge, limits, metrics, openapi
from clinic.auth import Principal
from clinic.config import Settings
from clinic.db import create_engine, is_conflict_victim, is_unavailable, ping, utcnow
from clinic.db import reading as db_reading
from clinic.errors import ClinicError
from clinic.http_errors import (
    ANSWER_HEADERS,
    DEFAULT_CONTENT_SECURITY_POLICY,
    FIXED_ANSWER_HEADERS,
    HTTP_CODES,
    ErrorSchema,
    error_bytes,
    error_response,
)
from clinic.logs import configure_logging
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# Headers a refusal carries to say what to do next: Allow (405), WWW-Authenticate (401), Retry-After.
_KEPT_ERROR_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


class ClinicApi(Api):
    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException):
        if isinstance(error, NotFound) and request.url_rule is None:
            error = _explained_not_found(error)
            if not isinstance(error, HTTPException):
                return error
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
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            details = {"allowed": sorted(error.valid_methods)}
        elif error.code == 413:
            message = f"the body is larger than {http_edge.MAX_BODY_BYTES} bytes"
        code = HTTP_CODES.get(error.code, "error")
        response = error_response(error.code, code, message, details)
        for name, value in error.get_headers():
            if name in _KEPT_ERROR_HEADERS:
                response.headers[name] = value
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        return response


def _explained_not_found(error: NotFound):
    """A path no route matched: a 422 naming the malformed id when the path has a route's shape (rather
    than the router's "check your spelling"), a 405 when that shape has other methods, else the 404."""
    found = http_edge.malformed_path_parameters(current_app, request.path, request.method)
    if isinstance(found, MethodNotAllowed):
        return found
    if found:
        return error_response(422, "validation_failed", "malformed in the path: " + ", ".join(sorted(found)), found)
    return NotFound("no such path on this service")


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


def actor() -> str:
    """The staff member making the change, as recorded beside it (created_by, booked_by, ...): the
    token's subject, cut to the 200 characters those columns and the audit keep."""
    return current_principal().subject[:200]


def now() -> datetime:
    """The current UTC time, from the app's clock (replaceable in tests)."""
    return current_app.extensions["clinic.clock"]()


def clinic_today() -> date:
    """Today where the clinic is (CLINIC_TIMEZONE, the app's clock): a diary entry written at 9 pm in
    New York is not for tomorrow, and the day board opens on the clinic's day."""
    return now().astimezone(settings().timezone).date()


def audit_log() -> sa.Table:
    return current_app.extensions["clinic.metadata"].tables["audit_log"]


def unit_of_work(access: audit.Access | None = None, **options) -> UnitOfWork:
    """A unit of work for the request being handled: the service's database, outbox and clock, and
    the request's audit entry (clinic.audit.audited), written with the change. `access` is for a
    caller the staff decorator does not know (a bedside monitor with its device token)."""
    return UnitOfWork(engine(), current_app.extensions["clinic.metadata"], settings().service,
                      clock=current_app.extensions["clinic.clock"], access=access or audit.current(), **options)


def reading():
    """A connection for the request's reads (clinic.db.reading)."""
    return db_reading(engine())


health = Blueprint("health", __name__, description="Is this service up, and can it do its job?")


@health.route("/healthz")
@health.doc(security=[])
@health.response(200)
def healthz():
    """The process is up."""
    return {"status": "ok", "service": settings().service}


@health.route("/readyz")
@health.doc(security=[])
@health.response(200)
@health.alt_response(503, schema=ErrorSchema)
def readyz():
    """The database and the broker are reachable: 200, else 503 naming what is not. Answers within the
    database's deadline (CLINIC_DATABASE_DEADLINE_SECONDS) and half a second for the broker."""
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
    # First, so that a request the edge refuses before any view is timed and counted too.
    _install_metrics(app, service_settings.service)
    app.config.update(
        CLINIC_SETTINGS=service_settings,
        API_TITLE=title,
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        # /openapi.json only where the documents are served (CLINIC_API_DOCS); /docs is clinic.api_docs.
        OPENAPI_URL_PREFIX="/" if service_settings.api_docs else None,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
            "security": [{"bearerAuth": []}],
        },
        MAX_CONTENT_LENGTH=http_edge.READ_LIMIT_BYTES,
    )
    app.extensions["clinic.engine"] = db_engine or create_engine(service_settings.database_url, service_settings.database_timeout_seconds,
                                                                 deadline_seconds=service_settings.database_deadline_seconds)
    app.extensions["clinic.metadata"] = metadata
    app.extensions["clinic.clock"] = clock
    # `<date:day>` in a route: a plausible day, documented as one (before any blueprint adds its routes).
    app.url_map.converters["date"] = http_edge.DayConverter
    # Filled as blueprints are documented: what the edge holds each operation to.
    contracts: dict = {}
    api = ClinicApi(app, spec_kwargs={"extra_plugins": [openapi.DocumentedEdge(contracts, access.entries(service_settings.service))]})
    openapi.teach_fields(api)
    api.register_converter(http_edge.DayConverter, http_edge.day_parameter_schema)
    api.register_blueprint(health)
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    http_edge.install(app, contracts)
    limits.install(app, service_settings)
    if service_settings.api_docs:
        app.register_blueprint(api_docs.docs)
    _install_answer_headers(app)
    # Who may call each operation, from the role matrix; the app refuses to start when they disagree.
    access.install(app, service_settings.service)
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClinicError)
    def _clinic_error(exc: ClinicError):
        return error_response(exc.http_status, exc.code, exc.message, exc.details)

    @app.errorhandler(sa.exc.DBAPIError)
    @app.errorhandler(sa.exc.TimeoutError)
    def _database_error(exc):
        if is_unavailable(exc):
            # clinic.db says once when an outage begins and ends; a line per refused request would bury it.
            log.debug("database unavailable: %s", type(getattr(exc, "orig", None) or exc).__name__)
            metrics.DATABASE_UNAVAILABLE.labels(settings().service).inc()
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


def _install_answer_headers(app: Flask) -> None:
    """The headers of every answer (clinic.http_errors.ANSWER_HEADERS). /metrics answers before the
    app's after_request runs, with the same headers (FIXED_ANSWER_HEADERS)."""
    @app.after_request
    def _answer_headers(response):
        response.headers.update(ANSWER_HEADERS)
        response.headers.setdefault("Content-Security-Policy", DEFAULT_CONTENT_SECURITY_POLICY)
        return response


METRICS_PATH = "/metrics"
# Methods counted by name; any other (a client may send anything) is counted as "other", so a label
# never grows without bound.
_COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _install_metrics(app: Flask, service: str) -> None:
    """Count and time every request the app answers, and answer GET /metrics in front of the app."""

    @app.before_request
    def _start_clock():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response):
        # The template, never the path: "/patients/<uuid:patient_id>", not a patient's id.
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method if request.method in _COUNTED_METHODS else "other"
        metrics.labelled(metrics.REQUESTS, service, route, method, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            metrics.labelled(metrics.REQUEST_SECONDS, service, route, method).observe(time.perf_counter() - started)
        return response

    app.wsgi_app = _MetricsEndpoint(app.wsgi_app)


class _MetricsEndpoint:
    """WSGI middleware answering GET /metrics (clinic.metrics.exposition) and passing every other
    request on to the app."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != METRICS_PATH:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            body = error_bytes(405, f"{METRICS_PATH} answers GET only")
            start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                                      ("Allow", "GET, HEAD"), *FIXED_ANSWER_HEADERS])
            return [body]
        body, content_type = metrics.exposition(environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))), *FIXED_ANSWER_HEADERS])
        return [b"" if method == "HEAD" else body]
