"""Scheduling's use cases called directly, without HTTP: each service function with a unit of work on a
SQLite database in a temporary file, migrated as the service's own is. The clinic's clock is fixed
(Monday 7 January 2030, 06:00 in New York)."""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import time, timedelta

import pytest
import sqlalchemy as sa

from clinic.audit import Access
from clinic.auth import Principal
from clinic.db import create_engine, rows_of
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.migrations import migrate
from clinic.unit_of_work import UnitOfWork
from scheduling import SERVICE
from scheduling.db import MIGRATIONS, metadata, plan_copies, tables
from scheduling.domain import PlanCopy, SchedulingRules
from scheduling.local_time import OpenInterval
from scheduling.services import after_session, availability, booking, calendar, during_session, lifecycle, rooms
from scheduling.services.plan_copies import keep_plan_copy
from tests.integration.scheduling.support import MONDAY, NY, Clock, apply, local, plan_activated

RULES = SchedulingRules(timezone=NY)
WEEKDAYS_8_TO_6 = [OpenInterval(day, time(8), time(18)) for day in range(5)]


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """A migrated scheduling database file, copied for each test (migrating takes longer than a test)."""
    path = tmp_path_factory.mktemp("scheduling") / "migrated.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate(engine, MIGRATIONS)
    engine.dispose()
    return path


class Desk:
    """The service functions' surroundings: a database, the clinic's clock, a unit of work per call."""

    def __init__(self, engine):
        self.engine = engine
        self.clock = Clock(local(MONDAY, "06:00"))
        self.sequences: dict[str, int] = {}

    def uow(self, **options) -> UnitOfWork:
        return UnitOfWork(self.engine, metadata, SERVICE, clock=self.clock, **options)

    def plan(self, minutes: int = 150, patient_id: str | None = None) -> str:
        """A patient with an active plan, made as records' event makes it (through the worker's inbox)."""
        patient_id = patient_id or str(uuid.uuid4())
        self.sequences[patient_id] = self.sequences.get(patient_id, 0) + 1
        apply(self.engine, plan_activated(patient_id, minutes, sequence=self.sequences[patient_id]))
        return patient_id

    def book(self, patient_id: str, hhmm: str, kind: str = "infusion", room_id: str | None = None, day=MONDAY) -> dict:
        request = booking.BookingRequest(patient_id, kind, local(day, hhmm), room_id, "desk-ana")
        return booking.book(self.uow(refusals=booking.REFUSALS), RULES, request)

    def events(self, about: str = "appointment") -> list[tuple[str, dict]]:
        """The outbox's scheduling.<about>.* events, oldest first: [(verb, data)]."""
        with self.engine.connect() as connection:
            bodies = connection.execute(sa.select(tables.outbox.c.body).order_by(tables.outbox.c.position)).scalars().all()
        found = [json.loads(body) for body in bodies]
        return [(event["type"].rsplit(".", 1)[1], event["data"]) for event in found if event["type"].startswith(f"scheduling.{about}.")]

    def rows(self, table) -> list[dict]:
        with self.engine.connect() as connection:
            return rows_of(connection, sa.select(table))


@pytest.fixture
def desk(migrated, tmp_path):
    path = tmp_path / "scheduling.db"
    shutil.copy(migrated, path)
    engine = create_engine(f"sqlite:///{path}")
    desk = Desk(engine)
    calendar.replace_office_hours(desk.uow(), NY, WEEKDAYS_8_TO_6)
    yield desk
    engine.dispose()


@pytest.fixture
def infusion_room(desk) -> dict:
    return rooms.add_room(desk.uow(), "Infusion 1", "infusion")


@pytest.fixture
def exam_room(desk) -> dict:
    return rooms.add_room(desk.uow(), "Exam A", "exam")


# --- booking and rescheduling ---------------------------------------------------------------


def test_a_booking_is_version_1_and_its_event_is_written_with_it(desk, infusion_room):
    patient = desk.plan(minutes=150)
    booked = desk.book(patient, "09:00")
    assert (booked["room_id"], booked["status"], booked["version"], booked["booked_by"]) == (infusion_room["id"], "booked", 1, "desk-ana")
    assert booked["ends_at"] - booked["starts_at"] == timedelta(minutes=150)
    [(kind, data)] = desk.events()
    assert (kind, data["appointment_id"], data["appointment_version"]) == ("booked", booked["id"], 1)


def test_a_booking_into_a_taken_room_is_a_conflict_naming_it_and_writes_nothing(desk, infusion_room):
    first = desk.book(desk.plan(), "09:00", room_id=infusion_room["id"])
    with pytest.raises(Conflict) as refused:
        desk.book(desk.plan(), "10:00", room_id=infusion_room["id"])
    assert refused.value.details == {"appointment_id": first["id"], "room_id": infusion_room["id"]}
    assert len(desk.rows(tables.appointments)) == 1 and len(desk.events()) == 1


def test_a_booking_outside_office_hours_or_without_a_plan_is_refused(desk, infusion_room):
    with pytest.raises(RuleViolation, match="outside office hours"):
        desk.book(desk.plan(), "17:00")
    with pytest.raises(RuleViolation, match="no active treatment plan"):
        desk.book(str(uuid.uuid4()), "09:00")


def test_rescheduling_moves_the_appointment_with_its_next_version(desk, infusion_room):
    other = rooms.add_room(desk.uow(), "Infusion 2", "infusion")
    booked = desk.book(desk.plan(minutes=120), "09:00", room_id=infusion_room["id"])
    moved = booking.reschedule(desk.uow(refusals=booking.REFUSALS), RULES, booked["id"], local(MONDAY, "11:00"), other["id"], "desk-ben")
    assert (moved["room_id"], moved["starts_at"], moved["version"], moved["updated_by"]) == (other["id"], local(MONDAY, "11:00"), 2,
                                                                                               "desk-ben")
    same = booking.reschedule(desk.uow(refusals=booking.REFUSALS), RULES, booked["id"], local(MONDAY, "11:00"), None, "desk-ben")
    assert same["version"] == 2
    assert [(kind, data["appointment_version"]) for kind, data in desk.events()] == [("booked", 1), ("rescheduled", 2)]
    with pytest.raises(NotFound):
        booking.reschedule(desk.uow(refusals=booking.REFUSALS), RULES, "no-such-id", local(MONDAY, "11:00"), None, "desk-ben")


# --- at the desk ----------------------------------------------------------------------------


def test_check_in_then_cancel_each_bump_the_version_and_a_second_cancel_is_refused(desk, infusion_room):
    booked = desk.book(desk.plan(), "09:00")
    desk.clock.set(local(MONDAY, "08:50"))
    arrived = lifecycle.check_in(desk.uow(), RULES, booked["id"], "desk-ben")
    assert (arrived["status"], arrived["checked_in_by"], arrived["version"]) == ("checked_in", "desk-ben", 2)
    cancelled = lifecycle.cancel(desk.uow(), booked["id"], "unwell", "desk-ana")
    assert (cancelled["status"], cancelled["cancel_reason"], cancelled["version"]) == ("cancelled", "unwell", 3)
    with pytest.raises(Conflict, match="cancelled already"):
        lifecycle.cancel(desk.uow(), booked["id"], "again", "desk-ana")
    assert [(kind, data["appointment_version"]) for kind, data in desk.events()] == [("booked", 1), ("checked_in", 2), ("cancelled", 3)]


def test_a_no_show_waits_for_the_grace_period(desk, infusion_room):
    booked = desk.book(desk.plan(), "09:00")
    desk.clock.set(local(MONDAY, "09:10"))
    with pytest.raises(RuleViolation, match="09:15"):
        lifecycle.mark_no_show(desk.uow(), RULES, booked["id"], "desk-ana")
    desk.clock.set(local(MONDAY, "09:15"))
    missed = lifecycle.mark_no_show(desk.uow(), RULES, booked["id"], "desk-ana")
    assert (missed["status"], missed["version"]) == ("no_show", 2)
    assert desk.events()[-1] == ("no_show", {"appointment_id": booked["id"], "patient_id": booked["patient_id"],
                                             "starts_at": "2030-01-07T14:00:00+00:00", "appointment_version": 2})


def test_a_change_names_its_patient_in_the_audit_written_with_it(desk, infusion_room):
    booked = desk.book(desk.plan(), "09:00")
    access = Access(Principal("desk-ana", ("front_desk",)), "update", "appointment", booked["id"])
    lifecycle.cancel(desk.uow(access=access), booked["id"], "unwell", "desk-ana")
    [row] = desk.rows(tables.audit_log)
    assert (row["subject"], row["patient_id"], row["resource_id"], row["outcome"]) == ("desk-ana", booked["patient_id"], booked["id"],
                                                                                       "allowed")
    refused = Access(Principal("desk-ana", ("front_desk",)), "update", "appointment", booked["id"])
    with pytest.raises(Conflict):
        lifecycle.cancel(desk.uow(access=refused), booked["id"], "again", "desk-ana")
    assert len(desk.rows(tables.audit_log)) == 1 and not refused.recorded   # the view records the refusal on its own


# --- after the session ----------------------------------------------------------------------


def test_a_completed_infusion_frees_the_room_and_books_one_follow_up(desk, infusion_room, exam_room):
    infusion = desk.book(desk.plan(minutes=150), "09:00")
    ended = local(MONDAY, "11:00")
    follow_up = after_session.record_session_end(desk.uow(), RULES, infusion["id"], ended, "completed")
    assert after_session.record_session_end(desk.uow(), RULES, infusion["id"], ended, "completed") is None
    stored = {row["id"]: row for row in desk.rows(tables.appointments)}
    done = stored[infusion["id"]]
    assert (done["status"], done["room_blocked_until"], done["version"]) == ("completed", local(MONDAY, "11:15"), 2)
    assert (stored[follow_up]["room_id"], stored[follow_up]["follow_up_of"], stored[follow_up]["version"]) == (exam_room["id"],
                                                                                                              infusion["id"], 1)
    assert stored[follow_up]["starts_at"] == local(MONDAY + timedelta(days=14), "08:00")
    assert [kind for kind, _ in desk.events()] == ["booked", "booked"]
    with pytest.raises(after_session.UnknownAppointment):
        after_session.record_session_end(desk.uow(), RULES, "no-such-id", ended, "completed")


def test_a_started_session_puts_the_checked_in_infusion_in_progress_once_and_its_end_completes_it(desk, infusion_room, exam_room):
    infusion = desk.book(desk.plan(minutes=150), "09:00")
    started = local(MONDAY, "09:03")
    assert not during_session.record_session_start(desk.uow(), infusion["id"], started)         # booked, not checked in
    desk.clock.set(local(MONDAY, "08:55"))
    lifecycle.check_in(desk.uow(), RULES, infusion["id"], "desk-ben")
    assert during_session.record_session_start(desk.uow(), infusion["id"], started)
    assert not during_session.record_session_start(desk.uow(), infusion["id"], started)         # told twice
    [stored] = [row for row in desk.rows(tables.appointments) if row["id"] == infusion["id"]]
    assert (stored["status"], stored["started_at"], stored["version"], stored["updated_by"]) == ("in_progress", started, 3, None)
    with pytest.raises(Conflict, match="abort the session in sessions"):
        lifecycle.cancel(desk.uow(), infusion["id"], "unwell", "desk-ana")
    assert [kind for kind, _ in desk.events()] == ["booked", "checked_in"]                       # the start is told to no one

    assert after_session.record_session_end(desk.uow(), RULES, infusion["id"], local(MONDAY, "11:30"), "completed") is not None
    assert not during_session.record_session_start(desk.uow(), infusion["id"], started)         # late: the session is over
    [stored] = [row for row in desk.rows(tables.appointments) if row["id"] == infusion["id"]]
    assert (stored["status"], stored["session_outcome"], stored["version"]) == ("completed", "completed", 4)
    with pytest.raises(after_session.UnknownAppointment):
        during_session.record_session_start(desk.uow(), "no-such-id", started)


# --- rooms and the calendar -----------------------------------------------------------------


def test_each_room_added_or_changed_is_its_next_version_told_in_the_same_transaction(desk, infusion_room):
    assert infusion_room["version"] == 1
    renamed = rooms.change_room(desk.uow(), infusion_room["id"], {"name": "Infusion One"})
    assert rooms.change_room(desk.uow(), infusion_room["id"], {"name": "Infusion One"}) == renamed      # nothing to change
    assert renamed["version"] == 2
    assert desk.events("room") == [
        ("changed", {"room_id": infusion_room["id"], "name": "Infusion 1", "kind": "infusion", "active": True, "room_version": 1}),
        ("changed", {"room_id": infusion_room["id"], "name": "Infusion One", "kind": "infusion", "active": True, "room_version": 2}),
    ]
    [stored] = desk.rows(tables.rooms)
    assert stored["version"] == 2


def test_room_names_are_unique_whatever_their_case(desk, infusion_room):
    with pytest.raises(Conflict) as refused:
        rooms.add_room(desk.uow(), " infusion 1 ", "exam")
    assert refused.value.details == {"room_id": infusion_room["id"]}
    other = rooms.add_room(desk.uow(), "Infusion 2", "infusion")
    with pytest.raises(Conflict):
        rooms.change_room(desk.uow(), other["id"], {"name": "INFUSION 1"})
    assert rooms.change_room(desk.uow(), infusion_room["id"], {"name": "INFUSION 1"})["name"] == "INFUSION 1"


def test_a_room_with_bookings_to_come_cannot_leave_use(desk, infusion_room):
    booked = desk.book(desk.plan(), "09:00")
    with pytest.raises(Conflict) as refused:
        rooms.change_room(desk.uow(), infusion_room["id"], {"active": False})
    assert refused.value.details["appointment_ids"] == [booked["id"]]
    with pytest.raises(NotFound):
        rooms.change_room(desk.uow(), "no-such-room", {"active": False})


def test_closing_a_day_keeps_bookings_off_it_and_reopening_it_lets_them_in(desk, infusion_room):
    tuesday = MONDAY + timedelta(days=1)
    desk.book(desk.plan(minutes=120), "09:00")             # a booking reads and caches the calendar
    closure = calendar.close_day(desk.uow(), NY, tuesday, " training ")
    assert (closure["day"], closure["reason"]) == (tuesday, "training")
    with pytest.raises(RuleViolation, match="closed on 2030-01-08"):
        desk.book(desk.plan(), "09:00", day=tuesday)
    with pytest.raises(Conflict, match="already closed"):
        calendar.close_day(desk.uow(), NY, tuesday, "again")
    with pytest.raises(RuleViolation, match="past"):
        calendar.close_day(desk.uow(), NY, MONDAY - timedelta(days=1), "late")
    calendar.reopen_day(desk.uow(), tuesday)
    assert desk.book(desk.plan(), "09:00", day=tuesday)["status"] == "booked"
    with pytest.raises(Conflict, match="booked on 2030-01-08"):
        calendar.close_day(desk.uow(), NY, tuesday, "snow")
    with pytest.raises(NotFound):
        calendar.reopen_day(desk.uow(), MONDAY + timedelta(days=3))


def test_office_hours_that_would_strand_a_booking_are_refused(desk, infusion_room):
    booked = desk.book(desk.plan(minutes=120), "15:00")
    shorter = [OpenInterval(day, time(8), time(16)) for day in range(5)]
    with pytest.raises(Conflict) as refused:
        calendar.replace_office_hours(desk.uow(), NY, shorter)
    assert refused.value.details["appointment_id"] == booked["id"]
    with pytest.raises(RuleViolation, match="not a valid weekly template"):
        calendar.replace_office_hours(desk.uow(), NY, [OpenInterval(0, time(17), time(8))])
    assert len(desk.rows(tables.office_hours)) == 5


# --- what scheduling knows of patients, and where they fit ----------------------------------------


def test_a_plan_copy_is_replaced_only_by_a_higher_plan_sequence(desk):
    assert keep_plan_copy(desk.uow(), PlanCopy("patient-1", "plan-2", 180, 2))
    assert not keep_plan_copy(desk.uow(), PlanCopy("patient-1", "plan-1", 150, 1))
    assert not keep_plan_copy(desk.uow(), PlanCopy("patient-1", None, None, 2))
    assert keep_plan_copy(desk.uow(), PlanCopy("patient-1", None, None, 3))
    with desk.engine.connect() as connection:
        assert plan_copies.get(connection, "patient-1") == PlanCopy("patient-1", None, None, 3)


def test_free_slots_leave_out_what_is_held(desk, infusion_room):
    desk.book(desk.plan(minutes=120), "08:00")                                   # holds the room until 10:15
    with desk.engine.connect() as connection:
        slots = availability.find_availability(connection, RULES, desk.clock(), desk.plan(minutes=120), "infusion",
                                               local(MONDAY, "08:00"), local(MONDAY, "14:00"))
    assert [slot["starts_at"].astimezone(NY).strftime("%H:%M") for slot in slots][:2] == ["10:15", "10:30"]
