"""The PHI access audit every service keeps: who read or changed which patient's data, when, and
whether they were let in.

Each service's db.py adds the table with `audit_table(metadata)`; its views are decorated with
`audited(...)` instead of clinic.auth.requires_roles. The shared edge (clinic.http_edge) has checked
the token and kept who calls; the decorator then:

- a caller without one of the roles the role matrix (clinic.role_matrix) names for the view's
  operation is refused, and the refusal is recorded first, so a look that failed authorisation is
  in the audit too;
- a write is recorded by the unit of work (clinic.unit_of_work) inside the use case's own
  transaction: the change and its audit row commit together or not at all. A write view that
  returns without a unit of work having committed is a programming error and answers 500;
- a read is recorded after the view has produced its answer and before the answer leaves: if
  the audit row cannot be written, the caller gets an error, never unaudited data;
- an authorised request refused by the service (unknown patient, bad input, conflict) is
  recorded as failed.

A request without a valid token is not recorded: there is nobody to name, nothing was disclosed,
and it would let anyone fill the audit table. The access log keeps its route and the 401.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.auth import Principal, admitted_caller, refuse_unless
from clinic.correlation import current_correlation_id
from clinic.db import UtcDateTime, rows_of, transaction, utcnow
from clinic.errors import ClinicError

READ, SEARCH, CREATE, UPDATE, DELETE, ACTIVATE, RETIRE = "read", "search", "create", "update", "delete", "activate", "retire"
ALLOWED, DENIED, FAILED = "allowed", "denied", "failed"
_HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                     415: "unsupported_media_type", 422: "validation_failed"}

PatientOf = Callable[[dict], "str | None"]


def audit_table(metadata: sa.MetaData) -> sa.Table:
    """The audit log of one service. Append-only: nothing updates or deletes a row. No foreign key
    to patients: a refused look at an id that does not exist is worth keeping too."""
    table = sa.Table(
        "audit_log",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("resource", sa.String(40), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=True),
        sa.Column("patient_id", sa.String(36), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("correlation_id", sa.String(100), nullable=True),
    )
    sa.Index("ix_audit_log_patient", table.c.patient_id, table.c.occurred_at)
    sa.Index("ix_audit_log_occurred", table.c.occurred_at)
    return table


def create_audit_table(op) -> None:
    """For a service's migration: the audit log, spelled out as it was on the day this was written
    (a migration must keep creating what it created, whatever audit_table() becomes)."""
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("resource", sa.String(40), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=True),
        sa.Column("patient_id", sa.String(36), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("correlation_id", sa.String(100), nullable=True),
    )
    op.create_index("ix_audit_log_patient", "audit_log", ["patient_id", "occurred_at"])
    op.create_index("ix_audit_log_occurred", "audit_log", ["occurred_at"])


@dataclass
class Access:
    """One request's access to patient data, as it will be written to the audit log."""

    principal: Principal
    action: str
    resource: str
    resource_id: str | None
    patient_ids: list[str] = field(default_factory=list)
    recorded: bool = False

    def concerning(self, patient_id: str | None = None, resource_id: str | None = None,
                   patient_ids: list[str] | None = None) -> None:
        """Name what the request turned out to be about: a new patient's id, a new plan's id, search results."""
        if patient_ids is not None:
            self.patient_ids = list(dict.fromkeys(str(patient) for patient in patient_ids))
        elif patient_id is not None:
            self.patient_ids = [str(patient_id)]
        if resource_id is not None:
            self.resource_id = str(resource_id)

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


class _Unaudited:
    """The audit of work nobody asked for over HTTP (the worker applying an event): nothing to name."""

    def concerning(self, *_args, **_kwargs) -> None:
        pass


NOBODY = _Unaudited()


def write(connection: Connection, table: sa.Table, rows: list[dict]) -> None:
    connection.execute(table.insert(), rows)


def trail(connection: Connection, table: sa.Table, patient_id: str | None, since: datetime | None, until: datetime | None,
          limit: int, offset: int) -> tuple[list[dict], int]:
    """Audit rows in time order (oldest first), filtered, one page of them, and how many match in all."""
    conditions = []
    if patient_id is not None:
        conditions.append(table.c.patient_id == patient_id)
    if since is not None:
        conditions.append(table.c.occurred_at >= since)
    if until is not None:
        conditions.append(table.c.occurred_at < until)
    total = connection.execute(sa.select(sa.func.count()).select_from(table).where(*conditions)).scalar_one()
    rows = rows_of(connection, sa.select(table).where(*conditions).order_by(table.c.occurred_at, table.c.id).limit(limit).offset(offset))
    return rows, total


# --- the HTTP side --------------------------------------------------------------------------


def patient_in_path(path_args: dict) -> str | None:
    patient_id = path_args.get("patient_id")
    return str(patient_id) if patient_id is not None else None


def no_patient(_path_args: dict) -> str | None:
    return None


def audited(action: str, resource: str, *, write: bool = False,
            resource_arg: str | None = None, patient_of: PatientOf = patient_in_path):
    """Decorate a view: what the audit says it did. Who may call it is the role matrix's
    (clinic.role_matrix): a staff token with one of the roles named for the view's operation.

    `resource_arg` names the path argument identifying the resource (a plan id, a diagnosis id);
    `patient_of` finds the patient from the path arguments (by default the `patient_id` in it).
    Place it above @blp.arguments, as requires_roles, so identity is checked before the body is read.
    """
    from flask import g
    from werkzeug.exceptions import HTTPException

    from clinic.access import allowed_here

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            roles = allowed_here()
            principal = admitted_caller(g)  # never a monitor: clinic.access refuses `device` on an audited operation
            patient_id = patient_of(kwargs)
            access = Access(principal, action, resource,
                            resource_id=str(kwargs[resource_arg]) if resource_arg and kwargs.get(resource_arg) else None,
                            patient_ids=[patient_id] if patient_id else [])
            g.clinic_access = access
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
                    raise RuntimeError(f"{view.__qualname__} changed data outside a unit of work")
                _record_alone(access, ALLOWED)
            return result

        wrapper._clinic_guarded = True
        wrapper._clinic_audit = (action, resource, write)
        return wrapper

    return decorate


def current() -> Access | None:
    """The audit entry of the request being handled, if its view is audited."""
    from flask import g, has_request_context

    return g.get("clinic_access") if has_request_context() else None


def concerning(patient_id: str | None = None, resource_id: str | None = None, patient_ids: list[str] | None = None) -> None:
    """For a view that reads: name what the request turned out to be about."""
    access = current()
    if access is None:
        raise RuntimeError("audit.concerning() outside a view decorated with audit.audited")
    access.concerning(patient_id, resource_id, patient_ids)


def _record_alone(access: Access, outcome: str, error_code: str | None = None) -> None:
    from clinic.web import audit_log, engine

    with transaction(engine()) as connection:
        write(connection, audit_log(), access.rows(outcome, error_code))
    access.recorded = True
