"""Pain scores: the patient's pain, 0 to 10 (LOINC 72514-3), with the time it was measured. Taken
while the session waits (the pain the patient came with) and while it runs; the session reports the
last one at or before the start and the last one after it (sessions.db.care.pain_before_after)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from clinic.db import new_id
from clinic.errors import NotFound, RuleViolation
from clinic.unit_of_work import UnitOfWork
from sessions.db import care
from sessions.domain.care import OPEN
from sessions.domain.medications import too_far_ahead
from sessions.domain.rules import SessionRules
from sessions.services.medications import session_in_care


def record(uow: UnitOfWork, rules: SessionRules, session_id: str, score: int, measured_at: datetime, by: str) -> dict:
    """Record a pain score on a waiting or started session (else 409); a time in the future beyond the
    allowed skew is refused (422)."""
    with uow:
        connection = uow.connection
        session_in_care(uow, session_id, OPEN, "record a pain score on")
        ahead = too_far_ahead(measured_at, uow.now, rules.future_skew)
        if ahead:
            raise RuleViolation("the pain score is timed in the future", {"measured_at": ahead})
        row = {"id": new_id(), "session_id": session_id, "score": score, "measured_at": measured_at, "recorded_by": by,
               "recorded_at": uow.now}
        care.insert_pain_score(connection, row)
        uow.audit.concerning(resource_id=row["id"])
        return row


def scores_of(connection: Connection, session_id: str) -> tuple[str, list[dict]]:
    """(the session's patient, its pain scores in the order measured). 404 for an unknown session."""
    patient_id = care.session_patient(connection, session_id)
    if patient_id is None:
        raise NotFound("no session with this id", {"session_id": session_id})
    return patient_id, care.pain_scores_of(connection, session_id)
