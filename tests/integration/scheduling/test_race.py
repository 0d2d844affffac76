"""No double booking under concurrency: 50 requests race for one room, or for one patient in 50 rooms,
at the same moment. Exactly one wins; the 49 others get a 409 naming the winner; the database holds
one appointment. On PostgreSQL the exclusion constraints decide; on SQLite the serialised write
transaction does.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from clinic.auth import issue_token
from clinic.db import create_engine, new_id, utcnow
from clinic.migrations import migrate
from clinic.testing.concurrency import at_once
from scheduling.app import create_app
from scheduling.db import MIGRATIONS, booking_sql, calendar, tables
from scheduling.domain import SchedulingRules
from scheduling.services.booking import lost_a_race
from tests.integration.scheduling.support import MONDAY, NY, OFFICE_HOURS, Clinic, Clock, local

RACERS = 50


def race(clinic: Clinic, bodies: list[dict]) -> list[tuple[int, dict]]:
    """POST every body to /appointments from its own thread, all released at once."""
    headers = {"Authorization": f"Bearer {issue_token(clinic.settings, 'desk', ['front_desk'])}"}

    def booking(body: dict):
        client = clinic.app.test_client()
        return lambda: (lambda response: (response.status_code, response.get_json()))(
            client.post("/appointments", json=body, headers=headers))

    return at_once([booking(body) for body in bodies])


def assert_one_winner(results: list[tuple[int, dict]]) -> str:
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * (RACERS - 1), statuses
    [winner] = [body["id"] for status, body in results if status == 201]
    named = {body["error"]["details"].get("appointment_id") for status, body in results if status == 409}
    assert named == {winner}, "every refused booking names the one that won"
    return winner


def holding(clinic: Clinic) -> list[tuple[str, str]]:
    with clinic.engine.connect() as connection:
        return connection.execute(sa.select(tables.appointments.c.id, tables.appointments.c.status)).all()


def test_50_bookings_racing_for_one_room_and_time_make_one_appointment(racing_clinic):
    clinic = racing_clinic
    room = clinic.room("Infusion 1")
    starts_at = local(MONDAY, "09:00").isoformat()
    bodies = [{"patient_id": clinic.plan(minutes=120), "kind": "infusion", "starts_at": starts_at, "room_id": room["id"]}
              for _ in range(RACERS)]
    winner = assert_one_winner(race(clinic, bodies))
    assert holding(clinic) == [(winner, "booked")]
    assert len(clinic.events("scheduling.appointment.booked")) == 1


def test_one_patient_booked_into_50_rooms_at_once_gets_one_appointment(racing_clinic):
    clinic = racing_clinic
    patient = clinic.plan(minutes=120)
    rooms = [clinic.room(f"Infusion {number:02d}") for number in range(RACERS)]
    # Staggered starts that all overlap: each room is free, only the patient is contended.
    bodies = [{"patient_id": patient, "kind": "infusion", "starts_at": local(MONDAY, f"09:{index:02d}").isoformat(), "room_id": room["id"]}
              for index, room in enumerate(rooms)]
    winner = assert_one_winner(race(clinic, bodies))
    assert holding(clinic) == [(winner, "booked")]


def test_racing_without_a_room_fills_the_free_rooms_and_no_more(racing_clinic):
    clinic = racing_clinic
    rooms = {clinic.room(f"Infusion {number}")["id"] for number in range(3)}
    bodies = [{"patient_id": clinic.plan(minutes=120), "kind": "infusion", "starts_at": local(MONDAY, "09:00").isoformat()}
              for _ in range(12)]
    results = race(clinic, bodies)
    won = [body for status, body in results if status == 201]
    assert sorted(status for status, _ in results) == [201] * 3 + [409] * 9
    assert {body["room_id"] for body in won} == rooms
    assert len(holding(clinic)) == 3


@pytest.fixture
def bare_postgres_database(postgres):
    url = postgres.create_database("scheduling")
    engine = create_engine(url)
    migrate(engine, MIGRATIONS)
    yield engine
    engine.dispose()
    postgres.drop_database(url)


def test_postgresql_itself_refuses_a_room_or_a_patient_held_twice(bare_postgres_database):
    """The rule lives in the database: rows written past the application are refused just the same."""
    engine = bare_postgres_database
    now = utcnow()
    rooms = [new_id(), new_id()]
    with engine.begin() as connection:
        for number, room_id in enumerate(rooms):
            connection.execute(tables.rooms.insert().values(id=room_id, name=f"Infusion {number}", kind="infusion", active=True,
                                                         created_at=now, updated_at=now))
    start = local(MONDAY, "09:00")

    def insert(room_id, patient_id, starts_at, minutes=120, turnover=15, status="booked"):
        ends_at = starts_at + timedelta(minutes=minutes)
        with engine.begin() as connection:
            connection.execute(tables.appointments.insert().values(
                id=new_id(), patient_id=patient_id, kind="infusion", status=status, room_id=room_id, starts_at=starts_at,
                ends_at=ends_at, room_blocked_until=ends_at + timedelta(minutes=turnover), patient_busy_until=ends_at,
                booked_at=now, updated_at=now))

    def refused(*args, **kwargs):
        with pytest.raises(sa.exc.IntegrityError) as caught:
            insert(*args, **kwargs)
        assert lost_a_race(caught.value)
        return {tables.ROOM_CONSTRAINT: "room", tables.PATIENT_CONSTRAINT: "patient"}[caught.value.orig.diag.constraint_name]

    patient = new_id()
    insert(rooms[0], patient, start)
    assert refused(rooms[0], new_id(), start + timedelta(minutes=60)) == "room"
    assert refused(rooms[0], new_id(), start + timedelta(minutes=120)) == "room"         # inside the turnover gap
    assert refused(rooms[1], patient, start + timedelta(minutes=119)) == "patient"
    insert(rooms[0], new_id(), start + timedelta(minutes=135))                            # after the gap
    insert(rooms[1], patient, start + timedelta(minutes=120))                             # the patient is free again
    insert(rooms[0], new_id(), start, status="cancelled")                                 # cancelled holds nothing


# --- bookings and calendar changes ------------------------------------------------------------


def test_a_calendar_change_made_through_another_process_reaches_this_ones_bookings(racing_clinic, settings_for):
    """Each process caches the calendar; the version an admin's change bumps makes every process read it again."""
    desk = racing_clinic
    admin_app = create_app(desk.settings, rules=SchedulingRules(timezone=NY), clock=Clock(local(MONDAY, "06:00")))
    admin = Clinic(admin_app, admin_app.extensions["clinic.clock"], desk.settings)
    room = desk.room("Infusion 1")
    tuesday, wednesday = MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)
    assert desk.book(desk.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"]).status_code == 201   # caches the calendar
    assert admin.call("POST", "/closures", role="admin", json={"date": tuesday.isoformat(), "reason": "training"}).status_code == 201
    later = {**OFFICE_HOURS, "wednesday": [{"opens": "10:00", "closes": "18:00"}]}
    assert admin.call("PUT", "/office-hours", role="admin", json=later).status_code == 200
    refused = desk.book(desk.plan(minutes=120), local(tuesday, "09:00"), room_id=room["id"])
    assert refused.status_code == 422 and "closed on" in refused.get_json()["error"]["message"]
    assert desk.book(desk.plan(minutes=120), local(wednesday, "09:00"), room_id=room["id"]).status_code == 422
    assert desk.book(desk.plan(minutes=120), local(wednesday, "10:00"), room_id=room["id"]).status_code == 201
    admin.engine.dispose()


def test_a_booking_that_read_the_calendar_just_before_a_change_is_made_again(racing_clinic, monkeypatch):
    """The window the insert's version check closes: the first statement's snapshot predates a change that
    committed while it waited for the calendar lock. Simulated by having that statement report the old version
    while this process still caches the old calendar."""
    clinic = racing_clinic
    room = clinic.room("Infusion 1")
    with clinic.engine.connect() as connection:
        current = calendar.read_calendar(connection)
        calendar.remember(connection, calendar.Calendar(current.version - 1, current.template, current.closures))
    real_context, calls = booking_sql.booking_context, []

    def stale_first(connection, patient_id, room_id):
        context = real_context(connection, patient_id, room_id)
        calls.append(context.calendar_version)
        if len(calls) == 1:
            return booking_sql.BookingContext(context.calendar_version - 1, context.plan, context.room)
        return context

    monkeypatch.setattr(booking_sql, "booking_context", stale_first)
    response = clinic.book(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"])
    assert response.status_code == 201, response.get_data(as_text=True)
    postgresql = clinic.engine.dialect.name == "postgresql"
    # PostgreSQL: the insert reports the newer version, so the booking is made again from fresh reads.
    # SQLite: the transaction holds the write lock from its start, so its reads cannot be stale: made once.
    assert len(calls) == (2 if postgresql else 1)
    assert clinic.count() == 1 and len(clinic.events("scheduling.appointment.booked")) == 1
