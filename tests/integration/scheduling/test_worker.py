"""The scheduling worker on the real RabbitMQ (and PostgreSQL, and SQLite as `make run` uses):
the plan copy from records' events, and what happens after an infusion session ends."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pika
import pytest
import sqlalchemy as sa

from clinic import events
from clinic.db import rows_of
from clinic.testing import assert_error, eventually
from clinic.testing.concurrency import publishing, running
from clinic.testing.listening import listening
from clinic.worker import Worker
from scheduling.db import metadata, plan_copies, tables
from scheduling.domain import SchedulingRules
from scheduling.handlers import make_handlers
from tests.integration.scheduling.support import MONDAY, NY, local, plan_activated, plan_retired, session_ended, session_started

TWO_WEEKS_LATER = MONDAY + timedelta(days=14)


@pytest.fixture
def worker(clinic):
    """The scheduling worker (consumer and outbox relay) on the clinic's database, the test's bus namespace and clock,
    with short retry delays (a failing event reaches the dead letters within the tests' waits)."""
    settings = clinic.settings.with_changes(retry_delays_seconds=(0.1, 0.2))
    with running(Worker(settings, metadata, make_handlers(SchedulingRules(timezone=NY)), engine=clinic.engine,
                        clock=clinic.clock), "scheduling-worker") as worker:
        yield worker


@pytest.fixture
def publish(clinic):
    """publish(event) onto the test's exchange, as another service's relay would."""
    with publishing(clinic.settings) as send:
        yield send


@pytest.fixture
def appointment_events(clinic):
    """What scheduling publishes, as another service would see it: received() -> [event body, ...]."""
    with listening(clinic.settings, "scheduling.appointment.*") as received:
        yield lambda: [json.loads(body) for _, body in received()]


def plan_copy(clinic, patient_id: str):
    with clinic.engine.connect() as connection:
        return plan_copies.get(connection, patient_id)


def applied(clinic, event: events.Event) -> bool:
    with clinic.engine.connect() as connection:
        return connection.execute(sa.select(tables.inbox.c.event_id).where(tables.inbox.c.event_id == event.id)).first() is not None


def follow_ups_of(clinic, appointment_id: str) -> list[dict]:
    with clinic.engine.connect() as connection:
        return rows_of(connection, sa.select(tables.appointments).where(tables.appointments.c.follow_up_of == appointment_id))


def test_the_plan_copy_follows_records_and_decides_who_may_have_an_infusion(clinic, worker, publish):
    clinic.room("Infusion 1")
    patient = str(uuid.uuid4())
    assert_error(clinic.book(patient, local(MONDAY, "09:00")), 422)

    activated = publish(plan_activated(patient, minutes=165, sequence=1))
    eventually(lambda: plan_copy(clinic, patient), message="the plan copy")
    booked = clinic.booked(patient, local(MONDAY, "09:00"))
    assert booked["ends_at_local"] == "2030-01-07T11:45:00-05:00"
    assert booked["plan_id"] == activated.data["plan_id"]

    # A newer plan replaces it: the next booking lasts the new plan's time.
    newer = publish(plan_activated(patient, minutes=200, sequence=3))
    eventually(lambda: plan_copy(clinic, patient).plan_id == newer.data["plan_id"], message="the newer plan")
    # Retiring the replaced plan, late, changes nothing; retiring the active one stops infusions.
    stale = publish(plan_retired(patient, activated.data["plan_id"], sequence=2))
    eventually(lambda: applied(clinic, stale), message="the late retirement handled")
    assert clinic.booked(patient, local(MONDAY + timedelta(days=1), "09:00"))["ends_at_local"] == "2030-01-08T12:20:00-05:00"
    retired = publish(plan_retired(patient, newer.data["plan_id"], sequence=4))
    eventually(lambda: applied(clinic, retired), message="the retirement applied")
    error = assert_error(clinic.book(patient, local(MONDAY + timedelta(days=2), "09:00")), 422)
    assert "active treatment plan" in error["message"]
    assert clinic.book(patient, local(MONDAY + timedelta(days=2), "09:00"), kind="follow_up", room_id=clinic.room(
        "Exam A", kind="exam")["id"]).status_code == 201


def test_a_completed_infusion_frees_the_room_from_its_end_and_books_one_follow_up_however_often_it_is_told(
        clinic, worker, publish, appointment_events):
    room = clinic.room("Infusion 1")
    clinic.room("Exam B", kind="exam")
    exam_a = clinic.room("Exam A", kind="exam")
    patient = clinic.plan(minutes=150)
    infusion = clinic.booked(patient, local(MONDAY, "09:00"), room_id=room["id"])          # until 11:30, room held until 11:45
    assert_error(clinic.book(clinic.plan(minutes=120), local(MONDAY, "11:35"), room_id=room["id"]), 409)
    # Exam A is taken at 08:00 on the day the follow-up is due: the follow-up gets the first free slot.
    taken = clinic.booked(clinic.plan(), local(TWO_WEEKS_LATER, "08:00"), kind="follow_up", room_id=exam_a["id"])
    clinic.clock.set(local(MONDAY, "08:55"))
    assert clinic.call("POST", f"/appointments/{infusion['id']}/check-in").status_code == 200

    ended_at = local(MONDAY, "11:20")
    completed = session_ended(infusion, ended_at)
    publish(completed)
    publish(completed)                                         # the same event, redelivered
    again = publish(session_ended(infusion, ended_at))        # the same news under another event id
    eventually(lambda: applied(clinic, again), message="all three deliveries handled")

    [follow_up] = follow_ups_of(clinic, infusion["id"])
    assert (follow_up["kind"], follow_up["status"], follow_up["patient_id"]) == ("follow_up", "booked", patient)
    assert follow_up["starts_at"] == local(TWO_WEEKS_LATER, "08:00") and follow_up["room_id"] != taken["room_id"]
    assert follow_up["booked_by"] is None                     # booked by the clinic's software, not by a person
    shown = clinic.call("GET", f"/appointments/{infusion['id']}").get_json()
    assert (shown["status"], shown["session_outcome"], shown["follow_up_id"]) == ("completed", "completed", follow_up["id"])
    assert (shown["booked_by"], shown["checked_in_by"], shown["updated_by"]) == ("tester", "tester", None)
    assert datetime.fromisoformat(shown["room_free_at"]) == local(MONDAY, "11:35")
    # The room is free from the actual end (plus the turnover gap), not from the planned one.
    assert clinic.book(clinic.plan(minutes=120), local(MONDAY, "11:35"), room_id=room["id"]).status_code == 201

    def follow_up_published():
        booked = [e for e in appointment_events() if e["type"] == "scheduling.appointment.booked" and e["data"]["kind"] == "follow_up"
                  and e["data"]["patient_id"] == patient]
        assert booked, "no follow-up booked event yet"
        return booked

    [published] = eventually(follow_up_published, message="the follow-up's booked event on the bus")
    assert published["data"]["appointment_id"] == follow_up["id"] and published["data"]["room_name"] == "Exam B"
    assert published["data"]["starts_at"].startswith(f"{TWO_WEEKS_LATER.isoformat()}T13:00:00")


def test_an_aborted_session_completes_the_appointment_without_a_follow_up(clinic, worker, publish):
    clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    infusion = clinic.booked(clinic.plan(minutes=180), local(MONDAY, "09:00"))
    clinic.clock.set(local(MONDAY, "09:00"))
    clinic.call("POST", f"/appointments/{infusion['id']}/check-in")
    aborted = publish(session_ended(infusion, local(MONDAY, "09:40"), completed=False))
    eventually(lambda: applied(clinic, aborted), message="the aborted session handled")
    shown = clinic.call("GET", f"/appointments/{infusion['id']}").get_json()
    assert (shown["status"], shown["session_outcome"], shown["follow_up_id"]) == ("completed", "aborted", None)
    assert follow_ups_of(clinic, infusion["id"]) == []
    assert clinic.call("GET", "/appointments?needs_follow_up=true").get_json() == []


def test_a_session_that_ran_although_the_appointment_was_cancelled_keeps_the_status_and_who_cancelled(clinic, worker, publish):
    clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    infusion = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"))
    cancelled = clinic.call("POST", f"/appointments/{infusion['id']}/cancel", json={"reason": "called in sick"}, subject="desk-ana")
    assert cancelled.status_code == 200
    done = publish(session_ended(infusion, local(MONDAY, "11:00")))     # the cancel and the session crossed
    eventually(lambda: applied(clinic, done), message="the completed session handled")
    shown = clinic.call("GET", f"/appointments/{infusion['id']}").get_json()
    assert (shown["status"], shown["session_outcome"]) == ("cancelled", "completed")
    assert (shown["cancelled_by"], shown["updated_by"]) == ("desk-ana", None)   # the latest change came from sessions
    assert shown["follow_up_id"] is not None                                   # the infusion happened: its return visit is booked


def test_a_follow_up_that_finds_no_free_slot_is_listed_for_the_front_desk(clinic, worker, publish):
    clinic.room("Infusion 1")
    infusion = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"))    # the clinic has no exam room
    done = publish(session_ended(infusion, local(MONDAY, "11:00")))
    eventually(lambda: applied(clinic, done), message="the completed session handled")
    assert clinic.call("GET", f"/appointments/{infusion['id']}").get_json()["status"] == "completed"
    assert [a["id"] for a in clinic.call("GET", "/appointments?needs_follow_up=true").get_json()] == [infusion["id"]]


def test_an_event_for_an_appointment_scheduling_never_made_is_dead_lettered(clinic, worker, publish):
    stranger = {"id": str(uuid.uuid4()), "patient_id": str(uuid.uuid4()), "room_id": str(uuid.uuid4()), "room_name": "?"}
    publish(session_ended(stranger, local(MONDAY, "11:00")))
    connection = pika.BlockingConnection(pika.URLParameters(clinic.settings.rabbitmq_url))
    try:
        eventually(lambda: connection.channel().queue_declare(clinic.settings.dead_letter_queue, passive=True).method.message_count == 1,
                   timeout=20, message="the event in scheduling's dead-letter queue")
    finally:
        connection.close()
    assert clinic.count() == 0


def test_once_sessions_says_the_infusion_started_the_desk_cannot_cancel_it_and_its_end_completes_it(clinic, worker, publish):
    room = clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    infusion = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"])
    clinic.clock.set(local(MONDAY, "08:55"))
    assert clinic.call("POST", f"/appointments/{infusion['id']}/check-in").status_code == 200
    path = f"/appointments/{infusion['id']}"

    started = publish(session_started(infusion, local(MONDAY, "09:05")))
    eventually(lambda: applied(clinic, started), message="the started session handled")
    shown = clinic.call("GET", path).get_json()
    assert (shown["status"], shown["version"]) == ("in_progress", 3)
    assert datetime.fromisoformat(shown["started_at"]) == local(MONDAY, "09:05")
    error = assert_error(clinic.call("POST", f"{path}/cancel", json={"reason": "wants to go home"}), 409, "conflict")
    assert "abort the session in sessions" in error["message"]
    assert clinic.call("GET", path).get_json() == shown

    done = publish(session_ended(infusion, local(MONDAY, "11:10")))
    eventually(lambda: applied(clinic, done), message="the completed session handled")
    shown = clinic.call("GET", path).get_json()
    assert (shown["status"], shown["session_outcome"]) == ("completed", "completed")
    assert shown["follow_up_id"] is not None
