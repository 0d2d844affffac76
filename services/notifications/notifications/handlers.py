"""What notifications does with the events it consumes: one function per event type."""

from __future__ import annotations

from clinic import events
from clinic.unit_of_work import UnitOfWork
from notifications import domain
from notifications.services import contacts


def keep_contact_copy(uow: UnitOfWork, event: events.Event) -> None:
    contacts.keep_contact(uow, domain.contact_copy(event.data, event.occurred_at))


HANDLERS = {
    events.PATIENT_CONTACT_CHANGED: keep_contact_copy,
}
