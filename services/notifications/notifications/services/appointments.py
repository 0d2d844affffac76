"""What scheduling's appointment events send: the booking confirmation (an infusion's preparation
notes, or a follow-up visit's), the rescheduled and cancelled notices, the no-show note; and the
appointment copy the reminders are found in. Each runs in the handler's unit of work."""

from __future__ import annotations

import logging

from clinic.events import Event
from clinic.unit_of_work import UnitOfWork
from notifications import domain
from notifications.db import appointments
from notifications.db.messages import queue_for_patient, skip_outdated_reminders

log = logging.getLogger(__name__)


def appointment_changed(uow: UnitOfWork, event: Event, status: str, kind: str) -> str | None:
    """Keep the appointment copy at the event's version, skip its reminders not sent yet (they name
    the old time), and record the patient's message in the mail log. An event older than the copy (a
    booking heard after its own reschedule or cancellation) sends nothing: its calendar file would be
    out of date, and its news already overtaken.
    Returns the message's status in the mail log, None when nothing was recorded."""
    data = event.data
    with uow:
        known = appointments.get_appointment(uow.connection, str(data["appointment_id"]))
        if not appointments.keep_appointment(uow.connection, domain.appointment_copy(data, status)):
            log.info("appointment %s: event %s at version %s is older than the copy; no message",
                     data["appointment_id"], event.id, data.get("appointment_version"))
            return None
        skip_outdated_reminders(uow, str(data["appointment_id"]))
        context = domain.appointment_context(data, event.occurred_at, known)
        return queue_for_patient(uow, event.id, kind, str(data["patient_id"]), context,
                                 appointment_id=str(data["appointment_id"]))
