"""The encounter history: one encounter per completed infusion session, as sessions announced it."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Connection

from clinic.db import new_id
from clinic.unit_of_work import UnitOfWork
from records import db
from records.services.patients import existing_patient

log = logging.getLogger(__name__)


class UnknownPatient(LookupError):
    """An event about a patient records has never registered: retried, then kept in the dead-letter queue."""


def record_encounter(uow: UnitOfWork, session: dict, event_id: str) -> bool:
    """Add a completed infusion session to its patient's history; False when the session is already there.

    `session` is sessions.session.completed's payload with drugs_given and alerts as their JSON. The
    inbox already makes a redelivered event harmless; the unique session id also makes the same session
    announced twice (under two event ids) one encounter. Raises UnknownPatient.
    """
    session_id = str(session["session_id"])
    patient_id = str(session["patient_id"])
    with uow:
        if db.encounter_for_session(uow.connection, session_id) is not None:
            log.info("event %s: session %s is already in the history", event_id, session_id)
            return False
        if db.get_patient(uow.connection, patient_id) is None:
            # Losing an encounter is worse than a stuck message: fail, so it ends in the dead-letter queue
            # to be replayed once the patient is there, instead of being acknowledged and forgotten.
            raise UnknownPatient(f"session {session_id} is for patient {patient_id}, whom records does not know")
        uow.connection.execute(db.encounters.insert().values(
            id=new_id(),
            session_id=session_id,
            appointment_id=str(session["appointment_id"]),
            patient_id=patient_id,
            room_id=str(session["room_id"]),
            room_name=session["room_name"],
            started_at=session["started_at"],
            ended_at=session["ended_at"],
            drugs_given=session["drugs_given"],
            pain_before=session["pain_before"],
            pain_after=session["pain_after"],
            highest_news2=session["highest_news2"],
            alerts=session["alerts"],
            event_id=event_id,
            recorded_at=uow.now,
        ))
        return True


def patient_encounters(connection: Connection, patient_id) -> list[dict]:
    """A patient's encounters, newest first; NotFound for an unknown patient."""
    existing_patient(connection, patient_id)
    return db.list_encounters(connection, str(patient_id))
