"""What records does with the events it consumes: one function per event type."""

from __future__ import annotations

import logging

from clinic import events
from clinic.db import new_id, utcnow
from clinic.unit_of_work import UnitOfWork
from records import db

log = logging.getLogger(__name__)


class UnknownPatient(LookupError):
    """An event about a patient records has never registered: retried, then kept in the dead-letter queue."""


def add_encounter(uow: UnitOfWork, event: events.Event) -> None:
    """A completed infusion session becomes one encounter in the patient's history.

    The inbox already makes a redelivered event harmless; the unique session id also makes the same
    session announced twice (under two event ids) one encounter.
    """
    connection = uow.connection
    data = event.data
    session_id = str(data["session_id"])
    if db.encounter_for_session(connection, session_id) is not None:
        log.info("event %s: session %s is already in the history", event.id, session_id)
        return
    patient_id = str(data["patient_id"])
    if db.get_patient(connection, patient_id) is None:
        # Losing an encounter is worse than a stuck message: fail, so it ends in the dead-letter queue
        # to be replayed once the patient is there, instead of being acknowledged and forgotten.
        raise UnknownPatient(f"session {session_id} is for patient {patient_id}, whom records does not know")
    # The schema's own dump turns loaded decimals and datetimes back into JSON text, exactly.
    as_json = events.schema_for(event.type, event.version).dump(data)
    connection.execute(db.encounters.insert().values(
        id=new_id(),
        session_id=session_id,
        appointment_id=str(data["appointment_id"]),
        patient_id=patient_id,
        room_id=str(data["room_id"]),
        room_name=data["room_name"],
        started_at=data["started_at"],
        ended_at=data["ended_at"],
        drugs_given=as_json["drugs_given"],
        pain_before=data["pain_before"],
        pain_after=data["pain_after"],
        highest_news2=data["highest_news2"],
        alerts=as_json["alerts"],
        event_id=event.id,
        recorded_at=utcnow(),
    ))


HANDLERS = {
    "sessions.session.completed": add_encounter,
}
