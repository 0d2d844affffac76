"""Events into the mail log: each event notifications consumes, delivered through the inbox as its
worker applies it, leaves the messages the patient or the on-call staff should get (queued to the
address, waiting for the contact, or skipped with the reason), once, whatever is delivered twice.
On PostgreSQL and on SQLite. The helpers here are shared with test_reminders and test_messages_api.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from clinic import events
from clinic.db import rows_of
from clinic.inbox import APPLIED, DUPLICATE, apply_once
from clinic.unit_of_work import UnitOfWork
from notifications import db
from notifications.compose import compose
from notifications.config import MailSettings
from notifications.db import appointments as appointment_copies
from notifications.db import messages
from notifications.handlers import make_handlers

NY = ZoneInfo("America/New_York")
ONCALL = ("oncall-1@clinic.example", "oncall-2@clinic.example")
# Tuesday 8 January 2030, 10:00 in New York.
TUESDAY_TEN = datetime(2030, 1, 8, 10, 0, tzinfo=NY)


# What compose needs to know of the clinic, for checking that every context the handlers write renders.
CLINIC = MailSettings(clinic_name="Riverside Infusion", clinic_address="1 River Road, Springfield",
                      clinic_phone="+1 212 555 0199", mail_from="desk@clinic.example", clinic_timezone="America/New_York")


def new_id() -> str:
    return str(uuid.uuid4())


def sent(event_type: str, data: dict, version: int = 1) -> events.Event:
    """An event as its producer's outbox writes it, then as notifications' consumer loads it."""
    event = events.Event(type=event_type, data=events.serialise_payload(event_type, data, version),
                         producer=event_type.split(".")[0], version=version)
    return events.parse(event.to_json())


class Post:
    """Notifications' consumer side under test: events delivered through the inbox, the mail log read back."""

    def __init__(self, engine, clock, oncall=ONCALL):
        self.engine, self.clock = engine, clock
        self.handlers = make_handlers(MailSettings(oncall_emails=oncall))

    def deliver(self, event: events.Event) -> str:
        return apply_once(self.engine, db.metadata, "notifications", event, self.handlers[event.type], clock=self.clock)

    def receive(self, event_type: str, data: dict, version: int = 1) -> events.Event:
        event = sent(event_type, data, version)
        assert self.deliver(event) == APPLIED
        return event

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, db.metadata, "notifications", clock=self.clock)

    # --- what other services send ---------------------------------------------------------------

    def contact(self, patient_id: str | None = None, email: str | None = "ida.berg@example.org", opted_out: bool = False,
                preferred: str = "email", version: int = 1) -> str:
        patient_id = patient_id or new_id()
        self.receive(events.PATIENT_CONTACT_CHANGED, {
            "patient_id": patient_id, "given_name": "Ida", "family_name": "Berg", "email": email, "phone": "+1 212 555 0100",
            "preferred_contact": preferred, "email_opt_out": opted_out, "contact_version": version})
        return patient_id

    def booking(self, patient_id: str, starts_at: datetime = TUESDAY_TEN, kind: str = "infusion", minutes: int = 150,
                appointment_id: str | None = None, version: int = 1, room_name: str = "Infusion 2") -> dict:
        return {"appointment_id": appointment_id or new_id(), "patient_id": patient_id, "kind": kind, "room_id": new_id(),
                "room_name": room_name, "starts_at": starts_at, "ends_at": starts_at + timedelta(minutes=minutes),
                "appointment_version": version}

    def book(self, patient_id: str, **booking) -> dict:
        data = self.booking(patient_id, **booking)
        self.receive(events.APPOINTMENT_BOOKED, data)
        return data

    def reschedule(self, booked: dict, starts_at: datetime, version: int) -> dict:
        data = {**booked, "starts_at": starts_at, "ends_at": starts_at + (booked["ends_at"] - booked["starts_at"]),
                "previous_starts_at": booked["starts_at"], "previous_room_id": booked["room_id"], "appointment_version": version}
        self.receive(events.APPOINTMENT_RESCHEDULED, data)
        return data

    def cancel(self, booked: dict, version: int) -> None:
        self.receive(events.APPOINTMENT_CANCELLED, {
            "appointment_id": booked["appointment_id"], "patient_id": booked["patient_id"], "kind": booked["kind"],
            "starts_at": booked["starts_at"], "appointment_version": version})

    # --- what the mail log holds ------------------------------------------------------------------

    def rows(self, **where) -> list[dict]:
        table = messages.messages
        query = sa.select(table).order_by(table.c.created_at, table.c.recipient)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as connection:
            return rows_of(connection, query)

    def appointment(self, appointment_id: str) -> dict | None:
        with self.engine.connect() as connection:
            return appointment_copies.get_appointment(connection, appointment_id)

    def renders(self, row: dict) -> str:
        """The message rendered as the sender will render it: its plain text."""
        contact = None
        if row["patient_id"]:
            with self.engine.connect() as connection:
                contact = db.get_contact(connection, row["patient_id"])
        return compose(row["kind"], row["context"], contact, CLINIC).text


@pytest.fixture
def post(notifications_engine, clock):
    return Post(notifications_engine, clock)


def utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


# --- each event, its message --------------------------------------------------------------------------


def test_an_infusion_booked_queues_the_confirmation_to_the_patients_address(post):
    patient = post.contact(email="ida.berg@example.org", preferred="phone")
    booked = post.book(patient)

    [row] = post.rows()
    assert (row["kind"], row["status"], row["recipient"]) == ("infusion_booked", "queued", "ida.berg@example.org")
    assert (row["patient_id"], row["appointment_id"]) == (patient, booked["appointment_id"])
    assert row["preferred_contact"] == "phone"  # shown in the log; email still goes
    assert row["message_id"].startswith("<") and row["message_id"].endswith(">")
    context = row["context"]
    assert context["starts_at"] == utc_text(TUESDAY_TEN) and context["ends_at"] == utc_text(TUESDAY_TEN + timedelta(minutes=150))
    assert (context["room_name"], context["kind"], context["appointment_version"]) == ("Infusion 2", "infusion", 1)
    assert "Ida" not in str(context) and "ida.berg" not in str(context)  # the name and address come from the contact
    assert "Tuesday" in post.renders(row)
    copy = post.appointment(booked["appointment_id"])
    assert (copy["status"], copy["version"], copy["room_name"]) == ("booked", 1, "Infusion 2")


def test_a_follow_up_visit_booked_queues_its_own_confirmation(post):
    patient = post.contact()
    post.book(patient, kind="follow_up", minutes=30, room_name="Exam 1")

    [row] = post.rows()
    assert (row["kind"], row["status"]) == ("follow_up_booked", "queued")
    assert post.renders(row)


def test_a_reschedule_queues_the_new_time_and_moves_the_copy(post):
    patient = post.contact()
    booked = post.book(patient)
    post.reschedule(booked, TUESDAY_TEN + timedelta(days=2), version=2)

    rescheduled = post.rows(kind="rescheduled")
    assert len(rescheduled) == 1 and len(post.rows()) == 2
    context = rescheduled[0]["context"]
    assert context["starts_at"] == utc_text(TUESDAY_TEN + timedelta(days=2))
    assert context["previous_starts_at"] == utc_text(TUESDAY_TEN)
    assert context["appointment_version"] == 2
    assert "Thursday" in post.renders(rescheduled[0])
    assert post.appointment(booked["appointment_id"])["starts_at"] == TUESDAY_TEN + timedelta(days=2)


def test_a_cancellation_queues_the_notice_with_the_room_the_copy_knew(post):
    patient = post.contact()
    booked = post.book(patient)
    post.cancel(booked, version=2)

    [row] = post.rows(kind="cancelled")
    assert row["context"]["room_name"] == "Infusion 2"  # the cancelled event names no room
    assert row["context"]["appointment_version"] == 2
    assert post.renders(row)
    assert post.appointment(booked["appointment_id"])["status"] == "cancelled"


def test_a_no_show_queues_the_note_to_call_and_rebook(post):
    patient = post.contact()
    booked = post.book(patient)
    post.receive(events.APPOINTMENT_NO_SHOW, {"appointment_id": booked["appointment_id"], "patient_id": patient,
                                              "starts_at": booked["starts_at"], "appointment_version": 2})

    [row] = post.rows(kind="no_show")
    assert row["status"] == "queued" and row["context"]["kind"] == "infusion"
    assert post.renders(row)
    assert post.appointment(booked["appointment_id"])["status"] == "no_show"


def test_a_completed_session_queues_the_post_infusion_instructions(post):
    patient = post.contact()
    appointment = new_id()
    started = TUESDAY_TEN
    post.receive(events.SESSION_COMPLETED, {
        "session_id": new_id(), "appointment_id": appointment, "patient_id": patient, "room_id": new_id(),
        "room_name": "Infusion 2", "started_at": started, "ended_at": started + timedelta(minutes=150), "drugs_given": [],
        "pain_before": 8, "pain_after": 2, "highest_news2": 1, "alerts": []})

    [row] = post.rows()
    assert (row["kind"], row["status"], row["appointment_id"]) == ("post_infusion", "queued", appointment)
    assert "pain_before" not in row["context"] and "drugs_given" not in row["context"]
    assert post.renders(row)


def test_an_alert_goes_to_every_on_call_address_and_names_no_patient(post):
    session = new_id()
    event = post.receive(events.VITALS_ALERT_RAISED, {
        "alert_id": new_id(), "session_id": session, "room_id": new_id(), "room_name": "Infusion 2", "kind": "news2",
        "level": "emergency", "escalation": True, "news2_score": 8,
        "scored": [{"parameter": "heart_rate", "points": 3}, {"parameter": "spo2", "points": 3}],
        "observed_at": TUESDAY_TEN, "raised_at": TUESDAY_TEN}, version=2)

    rows = post.rows()
    assert [row["recipient"] for row in rows] == list(ONCALL)
    for row in rows:
        assert (row["kind"], row["status"], row["patient_id"], row["event_id"]) == ("staff_alert", "queued", None, event.id)
        assert row["context"]["escalation"] is True and row["context"]["news2_score"] == 8
        assert row["context"]["scored"] == [{"parameter": "heart_rate", "points": 3}, {"parameter": "spo2", "points": 3}]
        assert row["context"]["session_id"] == session
    assert "Emergency" in compose("staff_alert", rows[0]["context"], None, CLINIC).subject


def test_a_silent_monitor_alert_goes_without_a_score(post):
    post.receive(events.VITALS_ALERT_RAISED, {
        "alert_id": new_id(), "session_id": new_id(), "room_id": new_id(), "room_name": "Infusion 2",
        "kind": "monitor_silent", "level": "urgent", "escalation": False, "raised_at": TUESDAY_TEN}, version=2)

    rows = post.rows()
    assert len(rows) == 2
    assert rows[0]["context"]["alert_kind"] == "monitor_silent" and rows[0]["context"]["news2_score"] is None
    assert post.renders(rows[0])


def test_an_alert_of_the_first_version_is_a_news2_alert_without_escalation_and_drops_the_patient(post):
    patient = new_id()
    post.receive(events.VITALS_ALERT_RAISED, {
        "alert_id": new_id(), "session_id": new_id(), "patient_id": patient, "room_name": "Infusion 2", "level": "urgent",
        "news2_score": 5, "triggered_by": ["respiratory_rate", "spo2"], "observed_at": TUESDAY_TEN}, version=1)

    rows = post.rows()
    assert len(rows) == 2
    context = rows[0]["context"]
    assert (context["alert_kind"], context["escalation"], context["news2_score"]) == ("news2", False, 5)
    assert [item["parameter"] for item in context["scored"]] == ["respiratory_rate", "spo2"]
    assert patient not in str(rows[0]) and rows[0]["patient_id"] is None


def test_an_alert_with_no_on_call_address_configured_is_applied_and_sends_nothing(notifications_engine, clock):
    post = Post(notifications_engine, clock, oncall=())
    post.receive(events.VITALS_ALERT_RAISED, {
        "alert_id": new_id(), "session_id": new_id(), "room_id": new_id(), "room_name": "Infusion 2",
        "kind": "monitor_silent", "level": "urgent", "escalation": False, "raised_at": TUESDAY_TEN}, version=2)
    assert post.rows() == []


# --- once, whatever is delivered twice -----------------------------------------------------------------


def test_the_same_event_twice_records_one_message(post):
    patient = post.contact()
    event = sent(events.APPOINTMENT_BOOKED, post.booking(patient))

    assert post.deliver(event) == APPLIED
    assert post.deliver(event) == DUPLICATE
    # And the handler on its own, as if the inbox row were gone: the mail log's key holds.
    with post.uow() as uow:
        post.handlers[event.type](UnitOfWork.joining(uow.connection, db.metadata, "notifications", now=post.clock()), event)
    assert len(post.rows()) == 1


def test_an_event_older_than_the_copy_sends_nothing(post):
    """A booking heard after its own reschedule: its time and calendar file are out of date."""
    patient = post.contact()
    booked = post.booking(patient)
    post.reschedule(booked, TUESDAY_TEN + timedelta(days=1), version=2)
    post.receive(events.APPOINTMENT_BOOKED, booked)

    assert [row["kind"] for row in post.rows()] == ["rescheduled"]
    assert post.appointment(booked["appointment_id"])["version"] == 2


# --- contacts: waiting, released, skipped ------------------------------------------------------------------


def test_a_message_waits_for_the_contact_and_is_queued_when_it_arrives(post):
    patient = new_id()
    post.book(patient)

    [waiting] = post.rows()
    assert (waiting["status"], waiting["recipient"]) == ("waiting_for_contact", f"patient:{patient}")

    post.contact(patient, email="late.arrival@example.org")
    [released] = post.rows()
    assert released["id"] == waiting["id"]
    assert (released["status"], released["recipient"]) == ("queued", "late.arrival@example.org")
    assert released["message_id"]


def test_a_patient_who_opted_out_is_skipped_with_the_reason(post):
    patient = post.contact(opted_out=True)
    post.book(patient)

    [row] = post.rows()
    assert row["status"] == "skipped" and row["reason"] == messages.OPTED_OUT


def test_a_patient_without_an_email_address_is_skipped_with_the_reason(post):
    patient = post.contact(email=None, preferred="sms")
    post.book(patient)

    [row] = post.rows()
    assert (row["status"], row["reason"], row["preferred_contact"]) == ("skipped", messages.NO_EMAIL, "sms")


def test_a_waiting_message_is_skipped_when_the_contact_arrives_opted_out(post):
    patient = new_id()
    post.book(patient)
    post.contact(patient, opted_out=True)

    [row] = post.rows()
    assert row["status"] == "skipped" and row["reason"] == messages.OPTED_OUT
