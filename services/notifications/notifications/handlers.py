"""What notifications does with the events it consumes: one function per event type.

    records.patient.contact_changed        the contact copy (by version); the patient's waiting messages go
    scheduling.appointment.booked          infusion_booked (preparation notes) or follow_up_booked, and the copy
    scheduling.appointment.rescheduled     rescheduled (the new time)
    scheduling.appointment.cancelled       cancelled
    scheduling.appointment.no_show         no_show (call to rebook)
    sessions.session.completed             post_infusion (the instructions for the rest of the day)
    sessions.vitals.alert_raised           staff_alert to each on-call address (versions 1 and 2)

Each runs in the unit of work the inbox opened for the event (clinic.inbox: one transaction for a batch of events) and only
records messages in the mail log: the sender job sends them, so an SMTP outage never uses up an
event's delivery attempts. Each is safe to apply twice on its own as well: the mail log keeps one
row per (event, template, recipient).
"""

from __future__ import annotations

from clinic import events
from clinic.events import Event
from clinic.inbox import Handler
from clinic.unit_of_work import UnitOfWork
from notifications import domain
from notifications.config import MailSettings
from notifications.services import appointments, care, contacts


def keep_contact_copy(uow: UnitOfWork, event: Event) -> None:
    contacts.keep_contact(uow, domain.contact_copy(event.data, event.occurred_at))


def appointment_booked(uow: UnitOfWork, event: Event) -> None:
    appointments.appointment_changed(uow, event, domain.BOOKED, domain.booked_kind(event.data["kind"]))


def appointment_rescheduled(uow: UnitOfWork, event: Event) -> None:
    appointments.appointment_changed(uow, event, domain.BOOKED, domain.RESCHEDULED)


def appointment_cancelled(uow: UnitOfWork, event: Event) -> None:
    appointments.appointment_changed(uow, event, domain.APPOINTMENT_CANCELLED, domain.CANCELLED)


def appointment_no_show(uow: UnitOfWork, event: Event) -> None:
    appointments.appointment_changed(uow, event, domain.APPOINTMENT_NO_SHOW, domain.NO_SHOW)


def session_completed(uow: UnitOfWork, event: Event) -> None:
    care.session_completed(uow, event.id, event.data)


def make_handlers(mail: MailSettings) -> dict[str, Handler]:
    """The handlers by event type, for notifications' worker, with the on-call addresses from `mail`
    (when there are none, an alert is logged, not emailed)."""
    oncall = tuple(mail.oncall_emails)

    def alert_raised(uow: UnitOfWork, event: Event) -> None:
        # Versions 1 and 2 come by the one routing key; clinic.events.parse loaded each with its own schema.
        care.alert_raised(uow, event.id, event.data, event.version, oncall)

    return {
        events.PATIENT_CONTACT_CHANGED: keep_contact_copy,
        events.APPOINTMENT_BOOKED: appointment_booked,
        events.APPOINTMENT_RESCHEDULED: appointment_rescheduled,
        events.APPOINTMENT_CANCELLED: appointment_cancelled,
        events.APPOINTMENT_NO_SHOW: appointment_no_show,
        events.SESSION_COMPLETED: session_completed,
        events.VITALS_ALERT_RAISED: alert_raised,
    }

