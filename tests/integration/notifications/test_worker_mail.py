"""The notifications worker as deployed, over the real bus: an event becomes one email, received by a
real SMTP server, however often the broker delivers it; a second event for the same booking (a
reschedule) becomes the updated calendar entry. On PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone

from icalendar import Calendar

from clinic import bus, events
from clinic.db import create_engine
from clinic.testing import eventually
from clinic.worker import Worker
from notifications import db
from notifications.config import load_mail_settings
from notifications.handlers import make_handlers
from notifications.worker import jobs

STARTS = datetime(2031, 3, 4, 14, 0, tzinfo=timezone.utc)   # far ahead: no reminder is due during the test


def _event(event_type: str, producer: str, data: dict) -> events.Event:
    return events.Event(type=event_type, producer=producer, data=events.serialise_payload(event_type, data))


def test_an_event_on_the_bus_becomes_one_email_however_often_it_is_delivered(notifications_database, smtp_sink, settings_for):
    settings = settings_for("notifications", notifications_database)
    mail = load_mail_settings(env={"SMTP_PORT": str(smtp_sink.port), "ONCALL_EMAILS": "oncall@clinic.example"})
    engine = create_engine(notifications_database, timeout_seconds=15)
    worker = Worker(settings, db.metadata, make_handlers(mail), engine=engine, jobs=jobs(mail))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    publisher = None
    try:
        assert worker.consumer.ready.wait(15), "the worker's consumer did not start"
        patient_id, appointment_id, room_id = (str(uuid.uuid4()) for _ in range(3))
        contact = _event(events.PATIENT_CONTACT_CHANGED, "records", {
            "patient_id": patient_id, "given_name": "Lena", "family_name": "Ortiz", "email": "lena@example.org", "phone": None,
            "preferred_contact": "email", "email_opt_out": False, "contact_version": 1})
        booking = {"appointment_id": appointment_id, "patient_id": patient_id, "kind": "infusion", "room_id": room_id,
                   "room_name": "Infusion 2", "starts_at": STARTS, "ends_at": STARTS.replace(hour=16), "appointment_version": 1}
        booked = _event(events.APPOINTMENT_BOOKED, "scheduling", booking)
        publisher = bus.Publisher(settings)
        for event in (contact, booked, booked):            # the booking delivered twice
            publisher.publish(event.type, event.id, event.to_json())

        eventually(lambda: len(smtp_sink.envelopes) >= 1, timeout=20, message="the confirmation email")
        moved = {**booking, "starts_at": STARTS.replace(hour=15), "ends_at": STARTS.replace(hour=17), "appointment_version": 2,
                 "previous_starts_at": STARTS, "previous_room_id": room_id}
        rescheduled = _event(events.APPOINTMENT_RESCHEDULED, "scheduling", moved)
        publisher.publish(rescheduled.type, rescheduled.id, rescheduled.to_json())
        eventually(lambda: len(smtp_sink.envelopes) >= 2, timeout=20, message="the rescheduled email")
        time.sleep(1)                                      # long enough for a duplicate to have gone out
        received = smtp_sink.messages()
        assert len(received) == 2, [message["Subject"] for message in received]
        assert all(message["To"].addresses[0].addr_spec == "lena@example.org" for message in received)
        calendars = [Calendar.from_ical(part.get_content() if isinstance(part.get_content(), bytes) else part.get_content().encode())
                     for message in received for part in message.walk() if part.get_content_type() == "text/calendar"]
        uids = {str(calendar.walk("VEVENT")[0]["UID"]) for calendar in calendars}
        sequences = sorted(int(calendar.walk("VEVENT")[0]["SEQUENCE"]) for calendar in calendars)
        assert len(uids) == 1 and sequences == [1, 2], "one calendar entry, updated by the reschedule"
    finally:
        if publisher is not None:
            publisher.close()
        worker.stop()
        thread.join(timeout=15)
        engine.dispose()
