"""The reminder job: the day before each appointment, from the configured local hour, one reminder
to the patient. Run by the worker as a clinic.worker.Job, e.g.

    rules = reminder_rules(mail_settings)
    Job("reminders", timedelta(minutes=1), lambda uow: queue_reminders(uow, rules))

Safe when the worker restarts or two workers run it: each reminder is logged under an id derived
from the appointment and its version (domain.reminder_event_id), and the mail log takes one row per
(event, template, recipient). A rescheduled appointment has a new version, so it gets a new reminder
for its new day; a cancelled one is no longer booked, so it gets none.
"""

from __future__ import annotations

from datetime import datetime

from clinic.unit_of_work import UnitOfWork
from notifications import domain
from notifications.config import MailSettings
from notifications.db import appointments
from notifications.db.messages import queue_for_patient


def reminder_rules(mail: MailSettings) -> domain.ReminderRules:
    """The reminder rules from the mail settings (the clinic's time zone, REMINDER_HOUR)."""
    return domain.ReminderRules(timezone=mail.timezone, hour=mail.reminder_hour)


def queue_reminders(uow: UnitOfWork, rules: domain.ReminderRules, now: datetime | None = None) -> int:
    """Queue the reminders due now (tomorrow's booked appointments, once today's reminder hour has
    come); how many were new in the mail log. `now` defaults to the unit of work's clock."""
    with uow:
        window = domain.reminder_window(rules, now or uow.now)
        if window is None:
            return 0
        queued = 0
        for appointment in appointments.booked_between(uow.connection, *window):
            status = queue_for_patient(uow, domain.reminder_event_id(appointment["id"], appointment["version"]),
                                       domain.REMINDER, appointment["patient_id"],
                                       domain.reminder_context(appointment),
                                       appointment_id=appointment["id"])
            queued += status is not None
        return queued
