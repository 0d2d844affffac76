"""Visitors: one adult at a time sits with the patient, while the session waits or runs.

The rule is the database's: the partial unique index visitors_one_present_per_session (sessions.db.care)
refuses a second present visitor, so two arriving at once make one visit and one 409, whichever
request gets there first; nothing reads "is anyone there?" before writing. The 409 names the visitor
who is there (their id and name), for the staff member at the door. A visitor's name is PHI: it stays
in sessions, in no event and no log line.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from clinic.db import new_id, violated_constraint
from clinic.errors import Conflict, NotFound
from clinic.unit_of_work import UnitOfWork
from sessions.db import care
from sessions.domain.care import OPEN
from sessions.services.medications import session_in_care


def arrive(uow: UnitOfWork, session_id: str, name: str, relationship: str, by: str) -> dict:
    """An adult visitor comes to sit with the patient (the caller has confirmed they are an adult).
    On a waiting or started session (else 409); while another visitor is there, 409 naming them."""
    with uow:
        connection = uow.connection
        session_in_care(uow, session_id, OPEN, "welcome a visitor to")
        visitor = {"id": new_id(), "session_id": session_id, "name": name.strip(), "relationship": relationship.strip(),
                   "adult_confirmed": True, "arrived_at": uow.now, "arrived_by": by, "left_at": None, "left_by": None}
        try:
            # In a savepoint, so that the transaction can still say who is there once the index refused it.
            with connection.begin_nested():
                care.insert_visitor(connection, visitor)
        except IntegrityError as exc:
            present = care.visitor_present(connection, session_id) if violated_constraint(exc) is not None else None
            if present is None:
                raise
            raise Conflict("a visitor is with the patient already; one visitor at a time",
                           {"visitor_id": present["id"], "name": present["name"], "relationship": present["relationship"],
                            "arrived_at": present["arrived_at"].isoformat()}) from None
        uow.audit.concerning(resource_id=visitor["id"])
        return visitor


def leave(uow: UnitOfWork, session_id: str, visitor_id: str, by: str) -> dict:
    """The visitor has gone; another may come. Whatever the session's state (a visitor may leave after
    the discharge); 409 when they left already."""
    with uow:
        connection = uow.connection
        session_in_care(uow, session_id)
        uow.audit.concerning(resource_id=visitor_id)
        visitor = care.visitor(connection, session_id, visitor_id)
        if visitor is None:
            raise NotFound("no visitor with this id in this session", {"visitor_id": visitor_id})
        if visitor["left_at"] is not None:
            raise Conflict("this visitor left already", {"visitor_id": visitor_id, "left_at": visitor["left_at"].isoformat()})
        care.visitor_left(connection, visitor_id, uow.now, by)
        return {**visitor, "left_at": uow.now, "left_by": by}


def visitors_of(connection: Connection, session_id: str) -> tuple[str, list[dict]]:
    """(the session's patient, its visitors in the order they came). 404 for an unknown session."""
    patient_id = care.session_patient(connection, session_id)
    if patient_id is None:
        raise NotFound("no session with this id", {"session_id": session_id})
    return patient_id, care.visitors_of(connection, session_id)

