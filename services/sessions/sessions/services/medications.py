"""The medication administration record: a nurse or neurologist records a drug of the session's
plan as given, or voids an administration recorded in error (kept, left out of every total).

The rules are sessions.domain.medications. The 24-hour maximum holds under concurrency: before adding
up the patient's last 24 hours, the use case takes the patient's medication ledger row
(sessions.db.care.lock_ledger), so of two administrations racing past the maximum, in one session or
in two, the second adds up after the first has committed and is refused. Locks are taken in one
order, the session then the ledger, by every use case here.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from clinic.db import new_id
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.unit_of_work import UnitOfWork
from sessions.db import care
from sessions.db.tables import locked_session
from sessions.domain.care import STARTED, ensure_status
from sessions.domain.medications import Administration, PlannedDrug, administration_problems, drug_key
from sessions.domain.rules import SessionRules


def give(uow: UnitOfWork, rules: SessionRules, session_id: str, given: dict, by: str) -> dict:
    """Record that a drug of the session's plan was given: `given` holds session_drug_id, dose (a
    Decimal), unit, route, rate (or None) and given_at. Only on a started session (else 409); refused
    (422, each reason by what is at fault) when the drug is not on the session's plan, the route or
    unit differs, the dose passes the planned one, the patient's 24-hour total would pass the plan's
    maximum, or the time is in the future or before the start."""
    with uow:
        connection = uow.connection
        session = session_in_care(uow, session_id, (STARTED,), "record a medication on")
        drug = care.session_drug(connection, session_id, given["session_drug_id"])
        if drug is None:
            raise RuleViolation("this drug is not on the session's plan",
                                {"session_drug_id": "not a drug of this session's plan (GET /sessions/{id} lists them with their ids)"})
        planned = PlannedDrug(name=drug["name"], dose=drug["dose"], unit=drug["unit"], route=drug["route"], max_per_24h=drug["max_per_24h"])
        administration = Administration(dose=given["dose"], unit=given["unit"], route=given["route"], given_at=given["given_at"])
        key = drug_key(drug["name"])
        nearby = []
        if planned.max_per_24h is not None and administration.unit == planned.unit:
            care.lock_ledger(connection, session["patient_id"], uow.now)
            nearby = care.doses_nearby(connection, session["patient_id"], key, planned.unit, administration.given_at)
        problems = administration_problems(planned, administration, now=uow.now, skew=rules.future_skew,
                                           started_at=session["started_at"], doses_nearby=nearby)
        if problems:
            raise RuleViolation("the administration is refused: " + "; ".join(problems.values()), problems)
        row = {
            "id": new_id(), "session_id": session_id, "patient_id": session["patient_id"], "session_drug_id": drug["id"],
            "name": drug["name"], "drug_key": key, "dose": administration.dose, "unit": administration.unit,
            "route": administration.route, "rate": given.get("rate"), "given_at": administration.given_at, "given_by": by,
            "recorded_at": uow.now, "voided_at": None, "voided_by": None, "void_reason": None,
        }
        care.insert_medication(connection, row)
        uow.audit.concerning(resource_id=row["id"])
        return row


def void(uow: UnitOfWork, session_id: str, medication_id: str, reason: str, by: str) -> dict:
    """Void an administration recorded in error, with the reason: it stays in the record, marked, and
    counts in no total from then on. Refused (409) when it is voided already."""
    with uow:
        connection = uow.connection
        session_in_care(uow, session_id)
        uow.audit.concerning(resource_id=medication_id)
        administration = care.medication(connection, session_id, medication_id)
        if administration is None:
            raise NotFound("no administration with this id in this session", {"medication_id": medication_id})
        if administration["voided_at"] is not None:
            raise Conflict("this administration is voided already",
                           {"medication_id": medication_id, "voided_at": administration["voided_at"].isoformat(),
                            "voided_by": administration["voided_by"]})
        care.void_medication(connection, medication_id, uow.now, by, reason)
        return {**administration, "voided_at": uow.now, "voided_by": by, "void_reason": reason}


def record_of(connection: Connection, session_id: str) -> tuple[str, list[dict]]:
    """(the session's patient, every administration of the session, voided ones too, in the order
    given). 404 for an unknown session."""
    patient_id = care.session_patient(connection, session_id)
    if patient_id is None:
        raise NotFound("no session with this id", {"session_id": session_id})
    return patient_id, care.administrations(connection, session_id)


def session_in_care(uow: UnitOfWork, session_id: str, allowed: tuple[str, ...] | None = None, action: str = "") -> dict:
    """The session a care record (an administration, a pain score, a visitor) is written to: locked for
    the change (sessions.db.tables.locked_session), its patient named in the audit before anything can
    refuse the request; 404 when there is no such session, 409 when its status is not one of `allowed`."""
    session = locked_session(uow.connection, session_id)
    if session is None:
        raise NotFound("no session with this id", {"session_id": session_id})
    uow.audit.concerning(patient_id=session["patient_id"])
    if allowed is not None:
        ensure_status(session, allowed, action)
    return session
