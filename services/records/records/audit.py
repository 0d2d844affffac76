"""The PHI access audit: who read or changed which patient's data, when, and whether they were let in.

Every records view is wrapped in `audited(...)` instead of clinic.auth.requires_roles. It checks
the token with clinic.auth, then:

- a caller without one of the roles is refused, and the refusal is recorded first, so a look
  that failed authorisation is in the audit too;
- a write is recorded by the view inside its own transaction (`with audit.transaction() as
  connection:`): the change and its audit row commit together or not at all. A write view
  that returns without having done so is a programming error and answers 500;
- a read is recorded after the view has produced its answer and before the answer leaves: if
  the audit row cannot be written, the caller gets an error, never unaudited data;
- an authorised request refused by the service (unknown patient, bad input, conflict) is
  recorded as failed.

A request without a valid token is not recorded: there is nobody to name, nothing was disclosed,
and it would let anyone fill the audit table. The access log keeps its path and the 401.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import g
from werkzeug.exceptions import HTTPException

from clinic.auth import Principal, authenticate, known_roles, refuse_unless
from clinic.correlation import current_correlation_id
from clinic.db import utcnow
from clinic.errors import ClinicError
from clinic.web import engine
from records import db

READ, SEARCH, CREATE, UPDATE, ACTIVATE, RETIRE = "read", "search", "create", "update", "activate", "retire"
ALLOWED, DENIED, FAILED = "allowed", "denied", "failed"
_HTTP_ERROR_CODES = {400: "bad_request", 413: "too_large", 415: "unsupported_media_type", 422: "validation_failed"}

PatientOf = Callable[[dict], "str | None"]


@dataclass
class Access:
    """One request's access to patient data, as it will be written to the audit log."""

    principal: Principal
    action: str
    resource: str
    resource_id: str | None
    patient_ids: list[str] = field(default_factory=list)
    recorded: bool = False

    def rows(self, outcome: str, error_code: str | None = None) -> list[dict]:
        common = {
            "occurred_at": utcnow(),
            "subject": self.principal.subject[:200],
            "roles": ",".join(sorted(self.principal.roles))[:200],
            "action": self.action,
            "resource": self.resource,
            "resource_id": self.resource_id,
            "outcome": outcome,
            "error_code": error_code,
            "correlation_id": (current_correlation_id() or "")[:100] or None,
        }
        return [{**common, "patient_id": patient_id} for patient_id in (self.patient_ids or [None])]


def patient_in_path(path_args: dict) -> str | None:
    patient_id = path_args.get("patient_id")
    return str(patient_id) if patient_id is not None else None


def audited(action: str, resource: str, roles: tuple[str, ...], *, write: bool = False,
            resource_arg: str | None = None, patient_of: PatientOf = patient_in_path):
    """Decorate a view: who may call it (one of `roles`), and what the audit says it did.

    `resource_arg` names the path argument identifying the resource (a plan id, a diagnosis id);
    `patient_of` finds the patient from the path arguments (by default the `patient_id` in it).
    Place it above @blp.arguments, as requires_roles, so identity is checked before the body is read.
    """
    known_roles(roles)

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            principal = authenticate()
            patient_id = patient_of(kwargs)
            access = Access(principal, action, resource,
                            resource_id=str(kwargs[resource_arg]) if resource_arg and kwargs.get(resource_arg) else None,
                            patient_ids=[patient_id] if patient_id else [])
            g.records_access = access
            if not principal.has_any(roles):
                _record_alone(access, DENIED, "forbidden")
                refuse_unless(principal, roles)
            try:
                result = view(*args, **kwargs)
            except ClinicError as exc:
                if not access.recorded:
                    _record_alone(access, FAILED, exc.code)
                raise
            except HTTPException as exc:
                if not access.recorded and exc.code is not None and exc.code < 500:
                    _record_alone(access, FAILED, _HTTP_ERROR_CODES.get(exc.code, f"http_{exc.code}"))
                raise
            if not access.recorded:
                if write:
                    raise RuntimeError(f"{view.__qualname__} changed data without audit.transaction()")
                _record_alone(access, ALLOWED)
            return result

        wrapper._clinic_roles = roles
        wrapper._records_audit = (action, resource, write)
        return wrapper

    return decorate


def current() -> Access:
    access = g.get("records_access")
    if access is None:
        raise RuntimeError("audit.current() outside a view decorated with audit.audited")
    return access


def concerning(patient_id: str | None = None, resource_id: str | None = None, patient_ids: list[str] | None = None) -> None:
    """Name what the request turned out to be about: a new patient's id, a new plan's id, search results."""
    access = current()
    if patient_ids is not None:
        access.patient_ids = list(dict.fromkeys(patient_ids))
    elif patient_id is not None:
        access.patient_ids = [patient_id]
    if resource_id is not None:
        access.resource_id = resource_id


@contextmanager
def transaction():
    """A write transaction that commits only together with its audit row."""
    access = current()
    with engine().begin() as connection:
        yield connection
        db.add_audit_rows(connection, access.rows(ALLOWED))
    access.recorded = True


def _record_alone(access: Access, outcome: str, error_code: str | None = None) -> None:
    with engine().begin() as connection:
        db.add_audit_rows(connection, access.rows(outcome, error_code))
    access.recorded = True
