"""The role matrix (clinic.role_matrix) applied to one service's app.

`install` runs when the app is built: it pairs each operation of the app with its entry and refuses
to start (ConfigurationError) when they disagree, so the matrix can neither miss an operation nor
promise one that is not there. The edge (clinic.http_edge) and the views' decorators
(clinic.auth.requires_roles, clinic.audit.audited) then ask `guarded_here()`/`allowed_here()` who may
call the operation of the request: a frozenset, compared on every request.
"""

from __future__ import annotations

from flask_smorest.spec.plugins import FlaskPlugin

from clinic.auth import DEVICE, STAFF_ROLES
from clinic.config import ConfigurationError
from clinic.role_matrix import MATRIX

# A bedside monitor with its own device token (clinic.auth.DEVICE), beside the staff roles of the identity provider.
IDENTITIES = (*STAFF_ROLES, DEVICE)

# Public by design or by their own setting, never in the matrix: the health checks and the docs.
# (/metrics is answered before Flask routes anything.)
PUBLIC_BLUEPRINTS = frozenset({"health", "api-docs", "clinic_docs"})  # clinic_docs: Swagger UI, clinic.api_docs


def _known(matrix: dict) -> dict:
    for service, entries in matrix.items():
        for operation, identities in entries.items():
            unknown = set(identities) - set(IDENTITIES)
            if unknown or not identities:
                raise ValueError(f"role matrix, {service} {operation}: unknown or no identities {sorted(unknown)}")
    return matrix


_known(MATRIX)


def operation_of(rule: str, method: str) -> str:
    """"METHOD /path" for a Flask rule, the path as the OpenAPI document writes it."""
    return f"{method.upper()} {FlaskPlugin.flaskpath2openapi(rule)}"


def entries(service: str) -> dict[str, tuple[str, ...]]:
    """The service's operations and who may call each; empty for a service not in the matrix."""
    return MATRIX.get(service, {})


def is_public(endpoint: str) -> bool:
    return endpoint == "static" or endpoint.partition(".")[0] in PUBLIC_BLUEPRINTS


def install(app, service: str) -> None:
    """Pair every operation of `app` with its matrix entry; refuse to start when they disagree.

    Refused: an operation guarded by the matrix (requires_roles, audited) without an entry; an entry
    for an operation the app does not have; an audited operation open to `device` (the audit names a
    staff member); and, for a service in the matrix, an operation that checks no token at all. A
    service not in the matrix (a test's own app) may have unguarded views."""
    matrix = entries(service)
    table: dict[tuple[str, str], frozenset[str]] = {}
    problems = []
    for rule in app.url_map.iter_rules():
        if is_public(rule.endpoint):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operation = operation_of(rule.rule, method)
            handler = _handler(app.view_functions[rule.endpoint], method)
            guarded = bool(getattr(handler, "_clinic_guarded", False))
            identities = matrix.get(operation)
            if identities is None:
                if guarded or matrix:
                    problems.append(f"{operation} has no entry in the role matrix")
                continue
            if not guarded:
                problems.append(f"{operation} is in the role matrix but its view checks no token "
                                "(decorate it with clinic.auth.requires_roles or clinic.audit.audited)")
            if DEVICE in identities and hasattr(handler, "_clinic_audit"):
                problems.append(f"{operation} is audited, which names a staff member, but the matrix opens it to {DEVICE}")
            table[(rule.rule, method)] = frozenset(identities)
    found = {operation_of(rule, method) for rule, method in table}
    problems += [f"{operation} is in the role matrix but {service} has no such operation"
                 for operation in sorted(set(matrix) - found)]
    if problems:
        raise ConfigurationError(f"{service}: the role matrix (clinic.role_matrix) and the app disagree: " + "; ".join(problems))
    app.extensions["clinic.access"] = table


def _handler(view_function, method: str):
    view_class = getattr(view_function, "view_class", None)
    return getattr(view_class, method.lower(), None) if view_class is not None else view_function


def allowed_here() -> frozenset[str]:
    """Who may call the operation of the request being handled (a HEAD is its GET)."""
    allowed = guarded_here()
    if allowed is None:
        raise RuntimeError("allowed_here() for an operation the role matrix does not guard")
    return allowed


def guarded_here() -> frozenset[str] | None:
    """Who may call the operation of the request, or None when it checks no token: a public route,
    a path no route matches, a test app's own unguarded view (install pairs every guarded one)."""
    from flask import current_app, request

    if request.url_rule is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return current_app.extensions["clinic.access"].get((request.url_rule.rule, method))


def who(identities) -> str:
    """The identities in words, for a refusal and the OpenAPI description."""
    roles = [identity for identity in identities if identity != DEVICE]
    words = []
    if roles:
        listed = roles[0] if len(roles) == 1 else ", ".join(roles[:-1]) + " or " + roles[-1]
        words.append(f"a staff token with the role {listed}")
    if DEVICE in identities:
        words.append("a bedside monitor's device token")
    return ", or ".join(words)
