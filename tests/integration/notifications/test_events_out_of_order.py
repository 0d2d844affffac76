"""Notifications' handlers when events come late: a retried event may arrive after later events about the
same appointment, and an event whose transaction failed is applied again from the start. Applied
through the inbox with notifications' own handlers, on PostgreSQL and on SQLite. (A booking heard
after its own reschedule is test_mail_log's; contacts out of order are test_contacts'.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from clinic import events
from clinic.db import rows_of
from clinic.inbox import APPLIED, FAILED, apply_once
from notifications import db
from notifications.db import appointments as appointment_copies
from notifications.db import messages
from tests.integration.notifications.test_mail_log import ONCALL, TUESDAY_TEN, Post, new_id, sent
from tests.integration.notifications.test_reminders import MONDAY, Reminders, at


@pytest.fixture
def post(notifications_engine, clock):
    return Post(notifications_engine, clock)


def test_a_cancellation_heard_before_its_booking_sends_the_notice_alone_and_no_reminder(post):
    patient = post.contact()
    booked = post.booking(patient)
    post.cancel(booked, version=3)
    post.receive(events.APPOINTMENT_BOOKED, booked)               # the booking, retried, comes last

    [row] = post.rows()
    assert (row["kind"], row["context"]["appointment_version"]) == ("cancelled", 3)
    assert post.renders(row)
    copy = post.appointment(booked["appointment_id"])
    assert (copy["status"], copy["version"]) == ("cancelled", 3)
    assert Reminders(post).run_at(at(MONDAY, 17)) == 0


def test_a_no_show_heard_before_its_booking_sends_the_note_alone(post):
    patient = post.contact()
    booked = post.booking(patient)
    post.receive(events.APPOINTMENT_NO_SHOW, {"appointment_id": booked["appointment_id"], "patient_id": patient,
                                              "starts_at": booked["starts_at"], "appointment_version": 3})
    post.receive(events.APPOINTMENT_BOOKED, booked)

    assert [row["kind"] for row in post.rows()] == ["no_show"]
    assert post.appointment(booked["appointment_id"])["status"] == "no_show"


def test_an_escalation_heard_before_the_alert_it_escalates_leaves_both_for_the_on_call_staff(post):
    """Each alert is its own news (the escalation names no original): the late one still goes, with its time."""
    session, room = new_id(), new_id()

    def alert(escalation: bool, raised_at) -> dict:
        return {"alert_id": new_id(), "session_id": session, "room_id": room, "room_name": "Infusion 2", "kind": "news2",
                "level": "urgent", "escalation": escalation, "news2_score": 5, "scored": [{"parameter": "spo2", "points": 3}],
                "observed_at": TUESDAY_TEN, "raised_at": raised_at}

    post.receive(events.VITALS_ALERT_RAISED, alert(True, TUESDAY_TEN + timedelta(minutes=15)), version=2)
    post.receive(events.VITALS_ALERT_RAISED, alert(False, TUESDAY_TEN), version=2)
    assert sorted(row["context"]["escalation"] for row in post.rows()) == [False] * len(ONCALL) + [True] * len(ONCALL)


def failing_after(handler):
    """The handler, then a failure in the same transaction (the batch's next statement, the commit)."""
    def handle(uow, event):
        handler(uow, event)
        raise RuntimeError("the transaction failed after the handler")
    return handle


def snapshot(post) -> dict:
    """What notifications' handlers may change: the mail log and the contact and appointment copies."""
    with post.engine.connect() as connection:
        return {table.name: sorted(map(repr, rows_of(connection, sa.select(table))))
                for table in (messages.messages, db.contacts, appointment_copies.appointments)}


@pytest.mark.parametrize("event_type", [events.PATIENT_CONTACT_CHANGED, events.APPOINTMENT_BOOKED, events.APPOINTMENT_RESCHEDULED,
                                        events.APPOINTMENT_CANCELLED, events.APPOINTMENT_NO_SHOW, events.SESSION_COMPLETED,
                                        events.VITALS_ALERT_RAISED])
def test_an_event_whose_transaction_failed_left_nothing_and_applies_once_when_retried(post, event_type):
    """A handler only writes the mail log and the copies, inside the inbox's transaction (the sender job
    sends, later): a failure leaves no message, and the retry records each message once."""
    patient = new_id()
    booked = post.book(patient)                                 # waits for the contact
    contact = {"patient_id": patient, "given_name": "Ida", "family_name": "Berg", "email": "ida.berg@example.org",
               "phone": None, "preferred_contact": "email", "email_opt_out": False, "contact_version": 1}
    if event_type != events.PATIENT_CONTACT_CHANGED:
        post.receive(events.PATIENT_CONTACT_CHANGED, contact)
    appointment = {"appointment_id": booked["appointment_id"], "patient_id": patient, "starts_at": booked["starts_at"]}
    version = 2
    if event_type == events.APPOINTMENT_BOOKED:
        version = 1
        booked = post.booking(patient)                          # another appointment of the patient's
    payloads = {
        events.PATIENT_CONTACT_CHANGED: contact,
        events.APPOINTMENT_BOOKED: booked,
        events.APPOINTMENT_RESCHEDULED: {**booked, "starts_at": TUESDAY_TEN + timedelta(days=1),
                                         "ends_at": booked["ends_at"] + timedelta(days=1), "previous_starts_at": booked["starts_at"],
                                         "previous_room_id": booked["room_id"], "appointment_version": version},
        events.APPOINTMENT_CANCELLED: {**appointment, "kind": "infusion", "appointment_version": version},
        events.APPOINTMENT_NO_SHOW: {**appointment, "appointment_version": version},
        events.SESSION_COMPLETED: {"session_id": new_id(), "appointment_id": booked["appointment_id"], "patient_id": patient,
                                   "room_id": booked["room_id"], "room_name": "Infusion 2", "started_at": TUESDAY_TEN,
                                   "ended_at": TUESDAY_TEN + timedelta(minutes=150), "drugs_given": [], "pain_before": 8,
                                   "pain_after": 2, "highest_news2": 1, "alerts": []},
        events.VITALS_ALERT_RAISED: {"alert_id": new_id(), "session_id": new_id(), "room_id": new_id(), "room_name": "Infusion 2",
                                     "kind": "monitor_silent", "level": "urgent", "escalation": False, "raised_at": TUESDAY_TEN},
    }
    event = sent(event_type, payloads[event_type], version=2 if event_type == events.VITALS_ALERT_RAISED else 1)
    before = snapshot(post)

    failed = apply_once(post.engine, db.metadata, "notifications", event, failing_after(post.handlers[event_type]),
                        clock=post.clock)
    assert failed == FAILED
    assert snapshot(post) == before

    assert post.deliver(event) == APPLIED
    assert snapshot(post) != before
    assert len(post.rows(event_id=event.id)) == (len(ONCALL) if event_type == events.VITALS_ALERT_RAISED
                                                  else 0 if event_type == events.PATIENT_CONTACT_CHANGED else 1)
    if event_type == events.PATIENT_CONTACT_CHANGED:
        assert [row["status"] for row in post.rows(patient_id=patient)] == ["queued"]      # the waiting message released
