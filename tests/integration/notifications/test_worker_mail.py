"""The notifications worker as deployed, over the real bus: an event becomes one email, received by a
real SMTP server, however often the broker delivers it; a second event for the same booking (a
reschedule) becomes the updated calendar entry. On PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from icalendar import Calendar

from clinic import bus, events
from clinic.db import create_engine, rows_of
from clinic.testing import eventually
from clinic.testing.concurrency import publishing, running
from clinic.worker import Worker
from notifications import db
from notifications.config import load_mail_settings
from notifications.db import messages
from notifications.handlers import make_handlers
from notifications.worker import jobs

STARTS = datetime(2031, 3, 4, 14, 0, tzinfo=timezone.utc)   # far ahead: no reminder is due during the test


def _event(event_type: str, producer: str, data: dict) -> events.Event:
    return events.Event(type=event_type, producer=producer, data=events.serialise_payload(event_type, data))


def test_an_event_on_the_bus_becomes_one_email_however_often_it_is_delivered(notifications_database, smtp_sink, settings_for):
    settings = settings_for("notifications", notifications_database)
    mail = load_mail_settings(env={"SMTP_PORT": str(smtp_sink.port), "ONCALL_EMAILS": "oncall@clinic.example"})
    engine = create_engine(notifications_database, timeout_seconds=15)
    patient_id, appointment_id, room_id = (str(uuid.uuid4()) for _ in range(3))
    contact = _event(events.PATIENT_CONTACT_CHANGED, "records", {
        "patient_id": patient_id, "given_name": "Lena", "family_name": "Ortiz", "email": "lena@example.org", "phone": None,
        "preferred_contact": "email", "email_opt_out": False, "contact_version": 1})
    booking = {"appointment_id": appointment_id, "patient_id": patient_id, "kind": "infusion", "room_id": room_id,
               "room_name": "Infusion 2", "starts_at": STARTS, "ends_at": STARTS.replace(hour=16), "appointment_version": 1}
    booked = _event(events.APPOINTMENT_BOOKED, "scheduling", booking)
    moved = {**booking, "starts_at": STARTS.replace(hour=15), "ends_at": STARTS.replace(hour=17), "appointment_version": 2,
             "previous_starts_at": STARTS, "previous_room_id": room_id}
    rescheduled = _event(events.APPOINTMENT_RESCHEDULED, "scheduling", moved)

    def mail_log() -> list[dict]:
        with engine.connect() as connection:
            return rows_of(connection, sa.select(messages.messages))

    try:
        with running(Worker(settings, db.metadata, make_handlers(mail), engine=engine, jobs=jobs(mail))), \
                publishing(settings) as send:
            for event in (contact, booked, booked, rescheduled):      # the booking delivered twice
                send(event)
            # Every event applied (the broker's queue drained) and every message the log holds sent:
            # nothing more can go out, so what the sink has now is all there will be.
            eventually(lambda: _queue_depth(settings) == 0 and len(mail_log()) == 2
                       and all(row["status"] == "sent" for row in mail_log()), timeout=30,
                       message="both events applied and their emails sent")
    finally:
        engine.dispose()
    received = smtp_sink.messages()
    assert len(received) == 2, [message["Subject"] for message in received]
    assert all(message["To"].addresses[0].addr_spec == "lena@example.org" for message in received)
    calendars = [Calendar.from_ical(part.get_content() if isinstance(part.get_content(), bytes) else part.get_content().encode())
                 for message in received for part in message.walk() if part.get_content_type() == "text/calendar"]
    uids = {str(calendar.walk("VEVENT")[0]["UID"]) for calendar in calendars}
    sequences = sorted(int(calendar.walk("VEVENT")[0]["SEQUENCE"]) for calendar in calendars)
    assert len(uids) == 1 and sequences == [1, 2], "one calendar entry, updated by the reschedule"


def _queue_depth(settings) -> int:
    connection = bus.connect(settings)
    try:
        declared = connection.channel().queue_declare(settings.queue, passive=True).method
        return declared.message_count
    finally:
        connection.close()
