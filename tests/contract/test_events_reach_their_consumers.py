"""Each event a service consumes, exactly as its producer's own code writes it, applied by the consumer's
own handler: the producer's use cases run on its own database, the rows they leave in its outbox are
read back as the consumer's worker receives them (clinic.events.parse), and applied through the
consumer's inbox on the consumer's own database. SQLite files, no broker: what is held here is the
contract between the two codebases, not the delivery (tests/integration covers that).

A consumer that starts handling a new event type fails the last test until a case here covers it.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from clinic import audit, events
from clinic.auth import Principal
from clinic.db import create_engine, row_of, rows_of
from clinic.inbox import APPLIED, apply_once
from clinic.migrations import migrate
from clinic.unit_of_work import UnitOfWork

NY = ZoneInfo("America/New_York")
MONDAY = date(2030, 1, 7)
NOW = datetime.combine(MONDAY - timedelta(days=7), time(9), tzinfo=NY)
PAIN = {"name": "ketorolac", "dose": Decimal("30"), "unit": "mg", "route": "IV", "purpose": "pain", "rate": None,
        "max_per_24h": Decimal("120")}
NAUSEA = {"name": "ondansetron", "dose": Decimal("4"), "unit": "mg", "route": "IV", "purpose": "nausea_vomiting", "rate": None,
          "max_per_24h": None}

# (event type, consuming service) pairs the cases below deliver; the last test holds it against the handlers.
COVERED: set[tuple[str, str]] = set()


class Service:
    """One service's own database, units of work as its views and workers get them, and its outbox."""

    def __init__(self, name: str, tmp_path, handlers: dict | None = None):
        package = __import__(f"{name}.db", fromlist=["db"])
        self.name, self.db, self.handlers = name, package, handlers or {}
        self.now = NOW  # the service's clock: a test moves it to the day of the infusion
        self.received: set[str] = set()
        self.engine = create_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        migrate(self.engine, package.MIGRATIONS)

    def uow(self, role: str, **options) -> UnitOfWork:
        access = audit.Access(Principal(f"{role}-1", (role,)), audit.UPDATE, "contract", None)
        return UnitOfWork(self.engine, self.db.metadata, self.name, clock=lambda: self.now, access=access, **options)

    def published(self, event_type: str) -> list[events.Event]:
        """What this service's relay would publish, as a consumer's worker loads it."""
        outbox = self.db.metadata.tables["outbox"]
        with self.engine.connect() as connection:
            bodies = connection.execute(sa.select(outbox.c.body).where(outbox.c.event_type == event_type)
                                        .order_by(outbox.c.position)).scalars().all()
        return [events.parse(body) for body in bodies]

    def receive(self, event: events.Event) -> None:
        COVERED.add((event.type, self.name))
        self.received.add(event.id)
        assert apply_once(self.engine, self.db.metadata, self.name, event, self.handlers[event.type], clock=lambda: self.now) == APPLIED

    def receive_all(self, producer: Service, *event_types: str) -> None:
        """Everything of these types the producer has published since this service last heard from it,
        in the order it published them."""
        for event_type in event_types:
            for event in producer.published(event_type):
                if event.id not in self.received:
                    self.receive(event)

    def row(self, table: str, **where):
        table = self.db.metadata.tables[table]
        with self.engine.connect() as connection:
            return row_of(connection, sa.select(table).where(*(table.c[key] == value for key, value in where.items())))

    def rows(self, table: str, **where) -> list[dict]:
        table = self.db.metadata.tables[table]
        with self.engine.connect() as connection:
            return rows_of(connection, sa.select(table).where(*(table.c[key] == value for key, value in where.items())))


@pytest.fixture
def records(tmp_path):
    from records.handlers import HANDLERS

    return Service("records", tmp_path, HANDLERS)


@pytest.fixture
def scheduling(tmp_path):
    from scheduling.domain import SchedulingRules
    from scheduling.handlers import make_handlers

    return Service("scheduling", tmp_path, make_handlers(SchedulingRules(timezone=NY)))


@pytest.fixture
def sessions(tmp_path):
    from sessions.handlers import make_handlers

    return Service("sessions", tmp_path, make_handlers())


ONCALL = "oncall@clinic.example"


@pytest.fixture
def notifications(tmp_path):
    from notifications.config import load_mail_settings
    from notifications.handlers import make_handlers

    return Service("notifications", tmp_path, make_handlers(load_mail_settings(env={"ONCALL_EMAILS": ONCALL})))


def registered(records: Service, email: str = "ana@example.org") -> dict:
    from records.services import patients

    return patients.register_patient(records.uow("front_desk"), {
        "given_name": "Ana", "family_name": "Reyes", "birth_date": date(1984, 3, 9), "sex": "female", "email": email,
        "phone": None, "preferred_contact": "email", "email_opt_out": False})


def active_plan(records: Service, patient_id: str, minutes: int = 150) -> dict:
    from records.services import plans

    draft = plans.write_draft(records.uow("neurologist"), patient_id,
                              {"infusion_minutes": minutes, "drugs": [PAIN, NAUSEA], "notes": None}, by="neuro-1")
    return plans.activate_plan(records.uow("neurologist"), draft["id"], by="neuro-1")


def test_contact_changes_reach_notifications_in_any_order(records, notifications):
    from records.services import patients

    patient = registered(records)
    patients.change_patient(records.uow("front_desk"), patient["id"], {"email": "ana.reyes@example.org"})
    patients.change_patient(records.uow("front_desk"), patient["id"], {"email_opt_out": True})
    changes = records.published(events.PATIENT_CONTACT_CHANGED)
    assert [change.data["contact_version"] for change in changes] == [1, 2, 3]
    for change in reversed(changes):
        notifications.receive(change)
    copy = notifications.row("contacts", patient_id=patient["id"])
    assert (copy["email"], copy["email_opt_out"], copy["version"]) == ("ana.reyes@example.org", True, 3)
    # Contact details only: nothing else about the patient travels.
    assert set(changes[0].data) == {"patient_id", "given_name", "family_name", "email", "phone", "preferred_contact",
                                    "email_opt_out", "contact_version"}


def test_plans_activated_replaced_and_retired_reach_scheduling_in_any_order(records, scheduling):
    from records.services import plans

    patient = registered(records)
    first = active_plan(records, patient["id"], minutes=150)
    second = active_plan(records, patient["id"], minutes=180)  # retires the first in the same transaction
    announced = records.published(events.PLAN_ACTIVATED) + records.published(events.PLAN_RETIRED)
    latest = max(announced, key=lambda event: event.data["plan_sequence"])
    assert (latest.type, str(latest.data["plan_id"])) == (events.PLAN_ACTIVATED, second["id"])
    for event in sorted(announced, key=lambda event: -event.data["plan_sequence"]):
        scheduling.receive(event)
    copy = scheduling.row("plan_copies", patient_id=patient["id"])
    assert (copy["plan_id"], copy["infusion_minutes"]) == (second["id"], 180)
    assert first["id"] != second["id"]

    plans.retire_plan(records.uow("neurologist"), second["id"], by="neuro-1")
    retired = [event for event in records.published(events.PLAN_RETIRED) if str(event.data["plan_id"]) == second["id"]]
    scheduling.receive(retired[0])
    assert scheduling.row("plan_copies", patient_id=patient["id"])["plan_id"] is None


def booked_infusion(scheduling: Service, records: Service, patient_id: str) -> tuple[dict, dict]:
    """An infusion booked by scheduling's own use cases, for a patient whose plan came from records."""
    from scheduling.local_time import OpenInterval
    from scheduling.services import booking, calendar, rooms

    for event in records.published(events.PLAN_ACTIVATED):
        scheduling.receive(event)
    room = rooms.add_room(scheduling.uow("admin"), "Infusion 1", "infusion")
    rooms.add_room(scheduling.uow("admin"), "Exam 1", "exam")
    calendar.replace_office_hours(scheduling.uow("admin"), NY, [OpenInterval(day, time(8), time(18)) for day in range(5)])
    request = booking.BookingRequest(patient_id, "infusion", datetime.combine(MONDAY, time(9), tzinfo=NY), room["id"], "desk-1")
    appointment = booking.book(scheduling.uow("front_desk", refusals=booking.REFUSALS), _rules(), request)
    return appointment, room


def _rules():
    from scheduling.domain import SchedulingRules

    return SchedulingRules(timezone=NY)


def checked_in_session(records: Service, scheduling: Service, sessions: Service, email: str = "ana@example.org") -> tuple[dict, dict, str]:
    """A patient with a plan, booked and checked in by scheduling's own use cases; sessions hears of the
    room, the plan and the check-in as each producer wrote them. (appointment, room, session id)."""
    from scheduling.services import lifecycle

    patient = registered(records, email)
    active_plan(records, patient["id"])
    appointment, room = booked_infusion(scheduling, records, patient["id"])
    scheduling.now = sessions.now = datetime.combine(MONDAY, time(8, 50), tzinfo=NY)
    lifecycle.check_in(scheduling.uow("front_desk"), _rules(), appointment["id"], "desk-1")
    sessions.receive_all(scheduling, events.ROOM_CHANGED)
    sessions.receive_all(records, events.PLAN_ACTIVATED)
    sessions.receive_all(scheduling, events.APPOINTMENT_CHECKED_IN)
    session = sessions.row("sessions", appointment_id=appointment["id"])
    assert (session["status"], session["patient_id"], session["room_id"]) == ("waiting", patient["id"], room["id"])
    assert sessions.row("rooms", id=room["id"])["name"] == "Infusion 1"
    return appointment, room, session["id"]


def started_session(records: Service, scheduling: Service, sessions: Service, email: str = "ana@example.org") -> tuple[dict, dict, str]:
    """The session started by a nurse, and scheduling told (the appointment is then in progress)."""
    from sessions.services.sessions import start_session

    appointment, room, session_id = checked_in_session(records, scheduling, sessions, email)
    scheduling.now = sessions.now = datetime.combine(MONDAY, time(9), tzinfo=NY)
    start_session(sessions.uow("nurse"), session_id, "nurse-1")
    scheduling.receive_all(sessions, events.SESSION_STARTED)
    assert scheduling.row("appointments", id=appointment["id"])["status"] == "in_progress"
    return appointment, room, session_id


def test_a_completed_session_reaches_records_and_scheduling(records, scheduling, sessions):
    from sessions.domain import care
    from sessions.domain.rules import SessionRules
    from sessions.services import discharge, medications, pain
    from sessions.services.sessions import drugs_of

    appointment, room, session_id = started_session(records, scheduling, sessions)
    rules = SessionRules()
    with sessions.engine.connect() as connection:
        ketorolac = next(drug for drug in drugs_of(connection, session_id) if drug["name"] == "ketorolac")
    sessions.now = datetime.combine(MONDAY, time(9, 10), tzinfo=NY)
    pain.record(sessions.uow("nurse"), rules, session_id, 8, datetime.combine(MONDAY, time(8, 55), tzinfo=NY), "nurse-1")
    medications.give(sessions.uow("nurse"), rules, session_id, {
        "session_drug_id": ketorolac["id"], "dose": Decimal("30"), "unit": "mg", "route": "IV", "rate": None,
        "given_at": datetime.combine(MONDAY, time(9, 5), tzinfo=NY)}, "nurse-1")
    sessions.now = datetime.combine(MONDAY, time(11, 40), tzinfo=NY)
    pain.record(sessions.uow("nurse"), rules, session_id, 3, datetime.combine(MONDAY, time(11, 35), tzinfo=NY), "nurse-1")
    escort = care.Escort(name="Sam Rivera", relationship="spouse", phone="+1 212 555 0100", adult_present=True)
    discharge.discharge(sessions.uow("nurse"), session_id,
                        care.Discharge(escort=escort, instructions=dict.fromkeys(care.INSTRUCTIONS, True)), "nurse-1")
    (completed,) = sessions.published(events.SESSION_COMPLETED)

    records.receive(completed)
    encounter = records.row("encounters", session_id=session_id)
    assert (encounter["patient_id"], encounter["pain_before"], encounter["pain_after"]) == (appointment["patient_id"], 8, 3)
    assert [(drug["name"], drug["dose"]) for drug in encounter["drugs_given"]] == [("ketorolac", "30")]

    scheduling.now = sessions.now
    scheduling.receive(completed)
    assert scheduling.row("appointments", id=appointment["id"])["status"] == "completed"
    follow_up = scheduling.row("appointments", follow_up_of=appointment["id"])
    assert follow_up is not None and follow_up["kind"] == "follow_up"
    # Nothing about the escort leaves sessions.
    assert "Sam" not in json.dumps(completed.data, default=str)


def test_an_aborted_session_reaches_scheduling_with_its_reason_code_only(records, scheduling, sessions):
    from sessions.services import discharge

    appointment, room, session_id = started_session(records, scheduling, sessions)
    discharge.abort(sessions.uow("nurse"), session_id, "patient_unwell", "felt faint after the first bag", "nurse-1")
    (aborted,) = sessions.published(events.SESSION_ABORTED)
    assert aborted.data["reason"] == "patient_unwell" and "faint" not in json.dumps(aborted.data, default=str)
    scheduling.receive(aborted)
    ended = scheduling.row("appointments", id=appointment["id"])
    assert (ended["status"], ended["session_outcome"]) == ("completed", "aborted")
    assert scheduling.row("appointments", follow_up_of=appointment["id"]) is None


def test_a_cancelled_check_in_closes_the_waiting_session(records, scheduling, sessions):
    from scheduling.services import lifecycle

    appointment, _room, session_id = checked_in_session(records, scheduling, sessions)
    lifecycle.cancel(scheduling.uow("front_desk"), appointment["id"], "patient unwell", "desk-1")
    sessions.receive_all(scheduling, events.APPOINTMENT_CANCELLED)
    assert sessions.row("sessions", id=session_id)["status"] == "cancelled"


def test_a_plan_replaced_during_a_session_leaves_its_drugs_and_reaches_sessions(records, scheduling, sessions):
    from sessions.services.sessions import shown

    appointment, _room, session_id = started_session(records, scheduling, sessions)
    active_plan(records, appointment["patient_id"], minutes=180)  # retires the plan the session runs under
    sessions.receive_all(records, events.PLAN_RETIRED, events.PLAN_ACTIVATED)
    with sessions.engine.connect() as connection:
        session = shown(connection, session_id)
    assert session["plan_changed"] is True
    assert sorted(drug["name"] for drug in session["drugs"]) == ["ketorolac", "ondansetron"]


def test_appointment_changes_reach_notifications_as_emails_to_the_patient(records, scheduling, notifications):
    from scheduling.services import booking, lifecycle

    patient = registered(records)
    notifications.receive_all(records, events.PATIENT_CONTACT_CHANGED)
    active_plan(records, patient["id"])
    appointment, room = booked_infusion(scheduling, records, patient["id"])
    booking.reschedule(scheduling.uow("front_desk", refusals=booking.REFUSALS), _rules(), appointment["id"],
                       datetime.combine(MONDAY, time(11), tzinfo=NY), None, "desk-1")
    lifecycle.cancel(scheduling.uow("front_desk"), appointment["id"], "patient unwell", "desk-1")
    late = booking.book(scheduling.uow("front_desk", refusals=booking.REFUSALS), _rules(), booking.BookingRequest(
        patient["id"], "infusion", datetime.combine(MONDAY, time(14), tzinfo=NY), room["id"], "desk-1"))
    scheduling.now = datetime.combine(MONDAY, time(14, 30), tzinfo=NY)
    lifecycle.mark_no_show(scheduling.uow("front_desk"), _rules(), late["id"], "desk-1")
    notifications.receive_all(scheduling, events.APPOINTMENT_BOOKED, events.APPOINTMENT_RESCHEDULED, events.APPOINTMENT_CANCELLED,
                              events.APPOINTMENT_NO_SHOW)
    mail = {(message["appointment_id"], message["kind"]): message for message in notifications.rows("messages", patient_id=patient["id"])}
    assert set(mail) == {(appointment["id"], "infusion_booked"), (appointment["id"], "rescheduled"), (appointment["id"], "cancelled"),
                         (late["id"], "infusion_booked"), (late["id"], "no_show")}
    assert {(message["recipient"], message["status"]) for message in mail.values()} == {("ana@example.org", "queued")}


def test_an_alert_reaches_the_on_call_staff_without_the_patient(records, scheduling, sessions, notifications):
    from sessions.domain.rules import SessionRules
    from sessions.services import vitals

    _appointment, _room, session_id = started_session(records, scheduling, sessions)
    sessions.now = datetime.combine(MONDAY, time(9, 30), tzinfo=NY)
    vitals.record_by_hand(sessions.uow("nurse"), SessionRules(), session_id, [
        {"measured_at": sessions.now, "heart_rate": 135, "systolic": 88, "respiratory_rate": 16, "spo2": 97, "on_oxygen": False,
         "temperature": Decimal("36.8"), "consciousness": "alert"}], "nurse-1")
    (alert,) = sessions.published(events.VITALS_ALERT_RAISED)
    assert alert.version == 2 and "patient_id" not in alert.data
    notifications.receive(alert)
    (staff,) = notifications.rows("messages", kind="staff_alert")
    assert (staff["recipient"], staff["status"], staff["patient_id"]) == (ONCALL, "queued", None)


def test_a_completed_session_reaches_notifications_as_the_post_infusion_instructions(records, scheduling, sessions, notifications):
    completed = _completed_elsewhere(records, scheduling, sessions)
    notifications.receive_all(records, events.PATIENT_CONTACT_CHANGED)
    notifications.receive(completed)
    (instructions,) = notifications.rows("messages", kind="post_infusion")
    assert (instructions["status"], instructions["recipient"]) == ("queued", "ben@example.org")
    assert instructions["patient_id"] == str(completed.data["patient_id"])


def _completed_elsewhere(records: Service, scheduling: Service, sessions: Service) -> events.Event:
    """A patient's infusion from booking to discharge, by each service's own use cases: its session.completed."""
    from sessions.domain import care
    from sessions.services import discharge

    _appointment, _room, session_id = started_session(records, scheduling, sessions, email="ben@example.org")
    sessions.now = datetime.combine(MONDAY, time(11, 40), tzinfo=NY)
    escort = care.Escort(name="Sam Rivera", relationship="spouse", phone="+1 212 555 0100", adult_present=True)
    given = care.Discharge(escort=escort, instructions=dict.fromkeys(care.INSTRUCTIONS, True))
    discharge.discharge(sessions.uow("nurse"), session_id, given, "nurse-1")
    (completed,) = sessions.published(events.SESSION_COMPLETED)
    return completed


def test_every_event_a_service_consumes_is_delivered_above_as_its_producer_writes_it():
    """Runs after the cases above (pytest keeps a module's order): every handled pair was delivered."""
    from notifications.config import load_mail_settings
    from notifications.handlers import make_handlers as notification_handlers
    from records.handlers import HANDLERS as records_handlers
    from scheduling.handlers import make_handlers
    from sessions.handlers import HANDLERS as sessions_handlers

    handled = ({(event_type, "records") for event_type in records_handlers}
               | {(event_type, "scheduling") for event_type in make_handlers(_rules())}
               | {(event_type, "notifications") for event_type in notification_handlers(load_mail_settings(env={}))}
               | {(event_type, "sessions") for event_type in sessions_handlers})
    assert handled - COVERED == set(), "consumed events with no contract case above"
