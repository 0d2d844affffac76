"""What sessions' events send: the post-infusion instructions to the patient once a session is
completed, and a vitals alert to the on-call staff (no patient name: they go to the room)."""

from __future__ import annotations

import logging

from clinic.unit_of_work import UnitOfWork
from notifications import domain
from notifications.db.messages import queue_for_patient, queue_for_staff

log = logging.getLogger(__name__)


def session_completed(uow: UnitOfWork, event_id: str, data: dict) -> str | None:
    """Queue the post-infusion instructions for the patient; the status recorded (None: already there)."""
    with uow:
        return queue_for_patient(uow, event_id, domain.POST_INFUSION, str(data["patient_id"]),
                                 domain.post_infusion_context(data),
                                 appointment_id=str(data["appointment_id"]))


def alert_raised(uow: UnitOfWork, event_id: str, data: dict, version: int, oncall: tuple[str, ...]) -> int:
    """Queue the alert for every on-call address; how many messages were new."""
    if not oncall:
        # Nobody to tell is a configuration gap, not the event's fault: logged, and the event applied.
        log.warning("alert %s: no on-call address configured (ONCALL_EMAILS); no email", data["alert_id"])
        return 0
    with uow:
        return queue_for_staff(uow, event_id, domain.STAFF_ALERT, oncall,
                               domain.staff_alert_context(data, version))
