"""The shared HTTP edge: what every request to every service passes before a view sees it, and the
line each request leaves in the log. One module because it is one pass over one request, in one
order (cheapest check first), and the malformed-path answer reuses the routes the checks key on.

Before any view:
- the correlation id: the caller's X-Correlation-ID is kept only when it is a UUID;
- who is asking, first, once per request: for an operation of the role matrix (clinic.access), a
  caller without a valid token is refused 401; the caller admitted (a verified staff member, counted
  per subject, or a bedside monitor's device token, counted per device and checked by its view) is
  kept in flask.g.admitted for the view's guard (clinic.auth.requires_roles, clinic.audit.audited),
  which refuses 403 (and audits the refusal) a staff member whose roles the matrix does not name,
  before the body is parsed. Neither has its body or query looked at: every caller outside the matrix
  gets a 401 or a 403, whatever it sends. Any other request (a path no route matches, the documents)
  is counted by its address (clinic.limits.hold_address);
- the request target: longer than MAX_TARGET_LENGTH is a 414;
- a body is read whole (over MAX_BODY_BYTES: 413) and must be JSON (415); it is parsed once here with
  guards that the JSON parser the views use lacks: nesting deeper than MAX_JSON_DEPTH is a 400; a lone
  surrogate or a NUL in any string, an integer beyond 64 bits or a number beyond a double is a 422
  naming the field, so none reaches a view, the database, a log or an event;
- an operation documented with a body (clinic.openapi's contracts) gets one (422 without it), a PATCH
  changes at least one thing (422 for none or `{}`), an operation without one takes none;
- integer query parameters fit in 64 bits (422).
After: the access line names the route template and the ids in the path, never the raw path or the
query (which can hold names). A malformed id in a path is a 422 naming the parameter
(malformed_path_parameters), not the router's generic 404.

The checks are ordered cheapest first; a request with a small valid body pays one extra JSON parse.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from datetime import date

from flask import Flask, current_app, g, request
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule, UUIDConverter, ValidationError

from clinic import access, auth, limits
from clinic.correlation import accepted_correlation_id, reset_correlation_id, set_correlation_id
from clinic.errors import ClinicError
from clinic.http_errors import error_response
from clinic.validation import FIRST_PLAUSIBLE_DAY, LAST_PLAUSIBLE_DAY, years_pattern

log = logging.getLogger("clinic.web")

CORRELATION_HEADER = "X-Correlation-ID"
MAX_BODY_BYTES = 1024 * 1024
# What the app lets werkzeug read of a body (Flask's MAX_CONTENT_LENGTH): one byte more than allowed.
# A chunked body has no length to refuse up front, and werkzeug stops reading it at this limit without
# a word; reading one byte past MAX_BODY_BYTES is how the edge tells "too large" (413) from "exactly
# the limit", instead of handing a view the first MiB of a longer body.
READ_LIMIT_BYTES = MAX_BODY_BYTES + 1
# Path and query together; the web server's own limit (clinic.gunicorn_conf) is above this, so a
# long target is answered here, in the error shape, with its correlation id.
MAX_TARGET_LENGTH = 4096
# The deepest any clinic body goes is 3 (a week of office hours, a plan's drugs); far below the
# parser's recursion limit and the stack a view needs to answer.
MAX_JSON_DEPTH = 32
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The probes: neither logged (they come every few seconds) nor rate limited.
PROBE_ROUTES = frozenset({"/healthz", "/readyz"})

_OUT_OF_RANGE = object()
_BAD_TEXT = re.compile(r"[\x00\ud800-\udfff]")
_LOGGABLE_ID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|\d{4}-\d{2}-\d{2}")
_METHOD = re.compile(r"[A-Z]{1,12}")


class Refusal(Exception):
    """A request the edge answers itself: status, code, message and the fields at fault."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def response(self):
        return error_response(self.status, self.code, self.message, self.details)


def install(app: Flask, contracts: dict) -> None:
    """Put the edge in front of `app`'s views; `contracts` is (rule, METHOD) -> clinic.openapi.EdgeContract."""

    @app.before_request
    def _edge():
        g.correlation_id = accepted_correlation_id(request.headers.get(CORRELATION_HEADER))
        g.correlation_token = set_correlation_id(g.correlation_id)
        g.started = time.perf_counter()
        try:
            _hold(contracts)
        except Refusal as refusal:
            return refusal.response()
        return None

    @app.after_request
    def _finish(response):
        response.headers[CORRELATION_HEADER] = g.get("correlation_id", "")
        rule = request.url_rule.rule if request.url_rule is not None else None
        if rule not in PROBE_ROUTES:
            log.info("%s %s %.1fms", access_line(), response.status_code, _elapsed_ms())
        return response

    @app.teardown_request
    def _reset(_exc):
        token = g.pop("correlation_token", None)
        if token is not None:
            reset_correlation_id(token)


def _elapsed_ms() -> float:
    return (time.perf_counter() - g.get("started", time.perf_counter())) * 1000


def access_line() -> str:
    """The request as the access log names it: method, route template and the ids in the path.

    `GET /patients/<uuid:patient_id> patient_id=…`; a path no route matched is `-`. An id is shown
    only when it has the form of one (a UUID, a date): a path segment can hold anything, names too."""
    method = request.method if _METHOD.fullmatch(request.method) else "?"
    if request.url_rule is None:
        return f"{method} -"
    ids = " ".join(f"{name}={_loggable(value)}" for name, value in (request.view_args or {}).items())
    return f"{method} {request.url_rule.rule}{' ' + ids if ids else ''}"


def _loggable(value) -> str:
    if isinstance(value, (uuid.UUID, int, date)):
        return str(value)
    return value if isinstance(value, str) and _LOGGABLE_ID.fullmatch(value) else "?"


# --- the checks ---------------------------------------------------------------------------------


def _hold(contracts: dict) -> None:
    allowed = access.guarded_here()
    if allowed is None:
        # Probes are never limited: a busy clinic must not look dead to its orchestrator.
        if request.url_rule is None or request.url_rule.rule not in PROBE_ROUTES:
            limits.hold_address()
    elif not _admitted(allowed):
        return
    environ = request.environ
    if len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) > MAX_TARGET_LENGTH:
        _drain()
        raise Refusal(414, "uri_too_long", f"the path and query are longer than {MAX_TARGET_LENGTH} characters")
    contract = contracts.get((request.url_rule.rule, request.method)) if request.url_rule is not None else None
    if _announces_body():
        _hold_body(contract)
    elif contract is not None and contract.body_required:
        _refuse_missing_body()
    if contract is not None and contract.integer_query:
        _hold_integer_query(contract.integer_query)


def _admitted(allowed) -> bool:
    """Whether the caller may call the operation: Unauthorized without a valid token, False with a
    staff token the role matrix does not name for it (the view's guard answers 403)."""
    try:
        principal = _caller(allowed)
    except ClinicError:  # refused (401, 429), or the identity provider away (503)
        _drain()
        raise
    g.admitted = principal
    if principal is not None and not principal.has_any(allowed):
        _drain()
        return False
    return True


def _caller(allowed) -> auth.Principal | None:
    """The verified staff member, or None for a bedside monitor's device token where `allowed` names
    `device`: that token's hash, the key it is stored and counted under, is left in
    flask.g.device_token_hash for the view to check in its own transaction (device tokens are kept in
    the service's database). Each is counted: per subject, per device."""
    token = auth.bearer_token(request.headers.get("Authorization"))
    if auth.DEVICE in allowed and token.startswith(auth.DEVICE_TOKEN_PREFIX):
        g.device_token_hash = auth.hash_device_token(token)
        limits.hold_device(g.device_token_hash)
        return None
    principal = auth.verify_token(current_app.config["CLINIC_SETTINGS"], token)
    g.principal = principal  # clinic.web.current_principal
    # Counted only once verified: the allowance spent is the verified subject's, never one named by
    # an unchecked token.
    limits.hold_subject(principal.subject)
    return principal


def _drain() -> None:
    # A refused caller's body is read, never looked at: gunicorn drains at most 64 KiB of a body left
    # unread and then drops the connection the refusal keeps alive. Past the limit it is left unread.
    if _announces_body() and (request.content_length or 0) <= MAX_BODY_BYTES:
        request.get_data(cache=True)


def _announces_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def _hold_body(contract) -> None:
    # Read it whole even where nothing uses it: a body left unread would be drained (or, past a
    # bound, the connection dropped) by the web server after the answer. Past the limit: 413.
    data = request.get_data(cache=True)
    if len(data) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    if request.method not in WRITE_METHODS or contract is None:
        return  # a read, or a route that does not exist: the body means nothing
    if not data:
        if contract.body_required:
            _refuse_missing_body()
        return
    if not _is_json(request.mimetype):
        raise Refusal(415, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json",
                      {"content_type": [request.mimetype or "none given"]})
    if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        # A compressed body would otherwise be read as (invalid) JSON and answered with a puzzling 400.
        raise Refusal(415, "unsupported_media_type", "send the body uncompressed (no Content-Encoding)",
                      {"content_encoding": [request.headers["Content-Encoding"][:50]]})
    body = read_json(data)
    if not contract.takes_body:
        if body not in (None, {}):
            raise Refusal(422, "validation_failed", "this operation takes no body", {"_schema": ["no body expected"]})
    elif request.method == "PATCH" and body in (None, {}):
        _refuse_missing_body()


def _refuse_missing_body() -> None:
    # Never read as an empty object: a PUT of nothing would replace everything with nothing.
    if request.method == "PATCH":
        raise Refusal(422, "validation_failed", "nothing to change: give at least one field", {"_schema": ["nothing to change"]})
    raise Refusal(422, "validation_failed", "this operation needs a JSON body", {"_schema": ["a JSON body is required"]})


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def read_json(data: bytes):
    """The JSON value of a body, or a Refusal: not UTF-8 or not JSON (400), nested deeper than
    MAX_JSON_DEPTH (400), a lone surrogate or NUL in a string, or a number out of range (422)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "bad_request", "the body is not JSON: it is not UTF-8 text") from None
    try:
        value = json.loads(text, parse_int=_integer, parse_float=_float, parse_constant=_no_constant)
    except RecursionError:
        raise Refusal(400, "bad_request", f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise Refusal(400, "bad_request", f"the body is not JSON{where}") from None
    problems = _inspect(value)
    if problems:
        raise Refusal(422, "validation_failed", "invalid input: " + ", ".join(sorted({str(path[0]) for path, _ in problems})),
                      _details(problems))
    return value


def _integer(text: str):
    # Past 20 characters it cannot be a 64-bit integer; int() of thousands of digits is refused by
    # Python itself (ValueError) and costs quadratic time before that.
    if len(text) > 20:
        return _OUT_OF_RANGE
    value = int(text)
    return value if -(2**63) <= value < 2**63 else _OUT_OF_RANGE


def _float(text: str):
    value = float(text)
    return value if math.isfinite(value) else _OUT_OF_RANGE


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _inspect(value) -> list[tuple[tuple, str]]:
    """(path, problem) for each value no view should see; iterative, so depth costs no stack."""
    problems = []
    stack = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= MAX_JSON_DEPTH:
                raise Refusal(400, "bad_request", f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
            for key, member in item.items():
                if _BAD_TEXT.search(key):
                    problems.append((path + ("_schema",), "a name holds a NUL or half of a UTF-16 pair, which is no character"))
                    continue
                stack.append((member, path + (key,), depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_JSON_DEPTH:
                raise Refusal(400, "bad_request", f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
            stack.extend((member, path + (index,), depth + 1) for index, member in enumerate(item))
        elif isinstance(item, str):
            if _BAD_TEXT.search(item):
                problems.append((path, "holds a NUL or half of a UTF-16 pair (a lone surrogate), which is no character"))
        elif item is _OUT_OF_RANGE:
            problems.append((path, "a number out of range: integers fit in 64 bits, other numbers in a double"))
    return problems


def _details(problems: list[tuple[tuple, str]]) -> dict:
    """Problems as marshmallow reports them: {"drugs": {0: {"name": [message]}}}; the body itself is _schema."""
    details: dict = {}
    for path, problem in problems:
        *parents, last = path or ("_schema",)
        node = details
        for step in parents:
            node = node.setdefault(step, {})
        node.setdefault(last, []).append(problem)
    return details


def _hold_integer_query(names) -> None:
    problems = {}
    for name in names:
        for raw in request.args.getlist(name):
            value = _query_integer(raw)
            if value is not None and not -(2**63) <= value < 2**63:
                problems[name] = ["out of range: at most 64 bits"]
    if problems:
        raise Refusal(422, "validation_failed", "invalid input: " + ", ".join(sorted(problems)), problems)


def _query_integer(raw: str) -> int | None:
    """The integer the view's schema reads from `raw`, or None when it reads none. marshmallow's
    Integer is Python's int(), which also takes underscores ("9_223_372_036_854_775_808") and any
    script's digits: the edge must read what the view will. The target is at most MAX_TARGET_LENGTH
    long, below int()'s own limit on digits."""
    try:
        return int(raw)
    except ValueError:
        return None


# --- ids and days in paths ----------------------------------------------------------------------


class DayConverter(BaseConverter):
    """A day in a path, `<date:day>`: YYYY-MM-DD between 1900 and 2999, given to the view as a date.
    Anything else matches no route, and is answered 422 (malformed_path_parameters)."""

    regex = r"\d{4}-\d{2}-\d{2}"

    def to_python(self, value: str) -> date:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValidationError() from None
        if not FIRST_PLAUSIBLE_DAY <= day <= LAST_PLAUSIBLE_DAY:
            raise ValidationError()
        return day

    def to_url(self, value) -> str:
        return value.isoformat() if isinstance(value, date) else str(value)


def day_parameter_schema(_converter) -> dict:
    """How a <date:…> path parameter is documented."""
    return {"type": "string", "format": "date", "pattern": years_pattern(FIRST_PLAUSIBLE_DAY.year, LAST_PLAUSIBLE_DAY.year)}


class _AnySegment(BaseConverter):
    """What a uuid path parameter looks like to a caller who got it wrong: any one segment."""

    regex = "[^/]+"


def malformed_path_parameters(app: Flask, path: str, method: str):
    """For a path no route matched: the route it would match if its ids were well-formed.

    Returns (parameters at fault -> message) when the path has a route's shape with a malformed id,
    a MethodNotAllowed when it has that shape but not for this method, or None (truly no such path)."""
    relaxed = app.extensions.get("clinic.relaxed_routes")
    if relaxed is None:
        relaxed = app.extensions["clinic.relaxed_routes"] = _relaxed_routes(app)
    rules, url_map = relaxed
    try:
        endpoint, values = url_map.bind("localhost").match(path, method=method)
    except MethodNotAllowed as exc:
        return exc
    except (NotFound, RequestRedirect):
        return None
    rule = rules[endpoint]
    malformed = {}
    for name, value in values.items():
        converter = rule._converters.get(name)
        if isinstance(converter, UUIDConverter) and not re.fullmatch(UUIDConverter.regex, value):
            malformed[name] = [f"not a UUID ({_UUID_FORM})"]
        elif isinstance(converter, DayConverter):
            try:
                converter.to_python(value)
            except ValidationError:
                malformed[name] = ["not a day (YYYY-MM-DD, 1900 to 2999)"]
    return malformed or None


_UUID_FORM = "8-4-4-4-12 hexadecimal digits, e.g. 3f2b1c9e-8a7d-4e6f-9b0a-1c2d3e4f5a6b"


def _relaxed_routes(app: Flask):
    rules = {rule.endpoint: rule for rule in app.url_map.iter_rules()
             if any(isinstance(converter, (UUIDConverter, DayConverter)) for converter in rule._converters.values())}
    url_map = Map([Rule(rule.rule, endpoint=endpoint, methods=rule.methods) for endpoint, rule in rules.items()],
                  converters={"uuid": _AnySegment, "date": _AnySegment}, strict_slashes=app.url_map.strict_slashes)
    return rules, url_map
