"""What notifications does with the events it consumes: one function per event type."""

from __future__ import annotations

from clinic.db import one_at_a_time
from clinic.events import Event
from clinic.unit_of_work import UnitOfWork
from notifications import db, domain


def keep_contact_copy(uow: UnitOfWork, event: Event) -> None:
    connection = uow.connection
    data = event.data
    patient_id = str(data["patient_id"])
    # Two quick contact changes may be applied by two worker replicas at once: the newer must win.
    one_at_a_time(connection, f"contact:{patient_id}")
    stored = db.get_contact(connection, patient_id)
    if stored and not domain.is_newer(event.occurred_at, stored["changed_at"]):
        return
    db.save_contact(connection, {
        "patient_id": patient_id,
        "given_name": data["given_name"],
        "family_name": data["family_name"],
        "email": data["email"],
        "phone": data["phone"],
        "preferred_contact": data["preferred_contact"],
        "email_opt_out": data["email_opt_out"],
        "changed_at": event.occurred_at,
    })


HANDLERS = {
    "records.patient.contact_changed": keep_contact_copy,
}
