"""While an infusion session runs (sessions.session.started): the appointment is in progress.

From then on the desk can no longer cancel, reschedule or mark it a no-show (scheduling.domain):
the session is stopped in sessions, and its end completes the appointment (after_session). The room
and the patient stay held as they were for the check-in; no event leaves scheduling.
"""

from __future__ import annotations

import logging
from datetime import datetime

from clinic.unit_of_work import UnitOfWork
from scheduling import domain
from scheduling.db import appointments, locks
from scheduling.services.after_session import UnknownAppointment

log = logging.getLogger(__name__)


def record_session_start(uow: UnitOfWork, appointment_id: str, started_at: datetime) -> bool:
    """sessions reports that the nurse started the appointment's infusion session: a checked-in
    appointment is now in progress, as its next version. Returns whether it changed.

    Safe to apply twice, and after the session's end (the start it reports is over then): anything
    but a checked-in appointment stays as it is (domain.goes_in_progress).
    """
    with uow:
        appointment = locks.appointment(uow.connection, appointment_id)                      # lock 2
        if appointment is None:
            raise UnknownAppointment(f"no appointment {appointment_id}")
        if not domain.goes_in_progress(appointment):
            if appointment["status"] not in (domain.IN_PROGRESS, domain.COMPLETED):
                # The desk's change and the nurse's start crossed; the session's end still records the infusion.
                log.warning("session started for appointment %s which is %s; status kept", appointment_id, appointment["status"])
            return False
        appointments.change(uow.connection, appointment, uow.now, status=domain.IN_PROGRESS, started_at=started_at, updated_by=None)
        return True
