"""An appointment while its infusion session runs: sessions.session.started puts a checked-in appointment
in progress; the desk can then no longer cancel, reschedule or mark it a no-show (the session is aborted
in sessions instead), and the session's end completes it. Events applied through the inbox as the worker
applies them (the delivery itself is test_worker's); on PostgreSQL and on SQLite."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from clinic.db import new_id, violated_constraint
from clinic.inbox import APPLIED, DUPLICATE, FAILED
from clinic.testing import assert_error
from scheduling.db import appointments, tables
from scheduling.db.tables import PATIENT_CONSTRAINT, ROOM_CONSTRAINT
from tests.integration.scheduling.support import MONDAY, local, session_ended, session_started

TWO_WEEKS_LATER = MONDAY + timedelta(days=14)


def checked_in(clinic, hhmm: str = "09:00", minutes: int = 120, room_id: str | None = None) -> dict:
    """An infusion booked on Monday at `hhmm` and checked in five minutes before, as shown."""
    infusion = clinic.booked(clinic.plan(minutes=minutes), local(MONDAY, hhmm), room_id=room_id)
    clinic.clock.set(local(MONDAY, hhmm) - timedelta(minutes=5))
    response = clinic.call("POST", f"/appointments/{infusion['id']}/check-in")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def shown(clinic, appointment: dict) -> dict:
    return clinic.call("GET", f"/appointments/{appointment['id']}").get_json()


def test_a_started_session_puts_the_appointment_in_progress_quietly_and_the_lists_show_it(clinic):
    room = clinic.room("Infusion 1")
    infusion = checked_in(clinic, room_id=room["id"])
    published = clinic.events()

    assert clinic.deliver(session_started(infusion, local(MONDAY, "09:04"))) == APPLIED
    now = shown(clinic, infusion)
    assert (now["status"], now["version"], now["updated_by"]) == ("in_progress", infusion["version"] + 1, None)
    assert datetime.fromisoformat(now["started_at"]) == local(MONDAY, "09:04")
    assert (now["checked_in_by"], now["checked_in_at"]) == ("tester", infusion["checked_in_at"])
    assert clinic.events() == published                                  # scheduling tells no one

    assert [a["id"] for a in clinic.call("GET", "/appointments?status=in_progress").get_json()] == [infusion["id"]]
    assert clinic.call("GET", "/appointments?status=checked_in").get_json() == []
    [board_room] = clinic.call("GET", f"/board?date={MONDAY.isoformat()}", role="nurse").get_json()["rooms"]
    assert [(a["id"], a["status"]) for a in board_room["appointments"]] == [(infusion["id"], "in_progress")]


def test_an_in_progress_appointment_keeps_its_room_and_its_patient_held(clinic):
    room, other_room = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    infusion = checked_in(clinic, room_id=room["id"])
    clinic.deliver(session_started(infusion, local(MONDAY, "09:04")))

    error = assert_error(clinic.book(clinic.plan(), local(MONDAY, "10:00"), room_id=room["id"]), 409)
    assert error["details"]["appointment_id"] == infusion["id"]
    error = assert_error(clinic.book(infusion["patient_id"], local(MONDAY, "10:00"), room_id=other_room["id"]), 409)
    assert error["details"]["appointment_id"] == infusion["id"]
    if clinic.engine.dialect.name == "postgresql":
        # The exclusion constraints hold it too, whatever writes the row.
        for patient, into, constraint in ((new_id(), room["id"], ROOM_CONSTRAINT),
                                          (infusion["patient_id"], other_room["id"], PATIENT_CONSTRAINT)):
            starts, ends = local(MONDAY, "10:00"), local(MONDAY, "10:30")
            with pytest.raises(IntegrityError) as refused, clinic.engine.begin() as connection:
                appointments.insert(connection, {"id": new_id(), "patient_id": patient, "kind": "follow_up", "status": "booked",
                                                 "room_id": into, "starts_at": starts, "ends_at": ends, "room_blocked_until": ends,
                                                 "patient_busy_until": ends, "booked_at": clinic.clock(), "updated_at": clinic.clock()})
            assert violated_constraint(refused.value) == constraint


@pytest.mark.parametrize("action, body, words", [
    ("cancel", {"reason": "wants to go home"}, "cancelling"),
    ("reschedule", {"starts_at": local(MONDAY + timedelta(days=1), "09:00").isoformat()}, "rescheduling"),
    ("no-show", None, "recording a no-show for"),
])
def test_the_desk_cannot_stop_an_appointment_whose_infusion_session_has_started(clinic, action, body, words):
    clinic.room("Infusion 1")
    infusion = checked_in(clinic)
    clinic.deliver(session_started(infusion, local(MONDAY, "09:04")))
    before, published = shown(clinic, infusion), clinic.events()
    clinic.clock.set(local(MONDAY, "09:30"))                     # past the no-show grace period

    error = assert_error(clinic.call("POST", f"/appointments/{infusion['id']}/{action}", json=body), 409, "conflict")
    assert error["message"] == f"the infusion session has started; abort the session in sessions instead of {words} the appointment"
    assert error["details"] == {"appointment_id": infusion["id"], "status": "in_progress"}
    assert shown(clinic, infusion) == before and clinic.events() == published


@pytest.mark.parametrize("completed", [True, False], ids=["completed", "aborted"])
def test_the_sessions_end_completes_an_in_progress_appointment_as_it_does_a_checked_in_one(clinic, completed):
    room = clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    infusion = checked_in(clinic, minutes=180, room_id=room["id"])
    clinic.deliver(session_started(infusion, local(MONDAY, "09:04")))
    assert clinic.deliver(session_ended(infusion, local(MONDAY, "11:10"), completed=completed)) == APPLIED

    done = shown(clinic, infusion)
    assert (done["status"], done["session_outcome"]) == ("completed", "completed" if completed else "aborted")
    assert datetime.fromisoformat(done["started_at"]) == local(MONDAY, "09:04")
    assert datetime.fromisoformat(done["room_free_at"]) == local(MONDAY, "11:25")      # the actual end plus the turnover gap
    assert clinic.book(clinic.plan(minutes=120), local(MONDAY, "11:25"), room_id=room["id"]).status_code == 201
    if completed:
        follow_up = shown(clinic, {"id": done["follow_up_id"]})
        assert (follow_up["kind"], follow_up["status"]) == ("follow_up", "booked")
        assert datetime.fromisoformat(follow_up["starts_at"]) == local(TWO_WEEKS_LATER, "08:00")
    else:
        assert done["follow_up_id"] is None


def test_a_start_told_twice_or_after_the_session_ended_changes_nothing(clinic):
    clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    infusion = checked_in(clinic)
    started = session_started(infusion, local(MONDAY, "09:04"))
    assert clinic.deliver(started) == APPLIED
    in_progress = shown(clinic, infusion)
    assert clinic.deliver(started) == DUPLICATE                                 # redelivered: the inbox knows it
    assert clinic.deliver(session_started(infusion, local(MONDAY, "09:06"))) == APPLIED   # the same news again
    assert shown(clinic, infusion) == in_progress

    # The session's end arrives before its start: the start is over by then.
    later = checked_in(clinic, hhmm="13:00")
    started_then = session_started(later, local(MONDAY, "13:02"))
    clinic.deliver(session_ended(later, local(MONDAY, "15:05"), session_id=started_then.data["session_id"]))
    completed = shown(clinic, later)
    assert clinic.deliver(started_then) == APPLIED
    assert shown(clinic, later) == completed
    assert (completed["status"], completed["started_at"]) == ("completed", None)


def test_a_start_that_crossed_a_cancellation_keeps_it_and_one_for_an_unknown_appointment_fails(clinic):
    clinic.room("Infusion 1")
    infusion = checked_in(clinic)
    assert clinic.call("POST", f"/appointments/{infusion['id']}/cancel", json={"reason": "felt unwell"}).status_code == 200
    cancelled = shown(clinic, infusion)
    assert clinic.deliver(session_started(infusion, local(MONDAY, "09:04"))) == APPLIED
    assert shown(clinic, infusion) == cancelled

    stranger = session_started({"id": new_id(), "patient_id": new_id(), "room_id": new_id()}, local(MONDAY, "09:04"))
    assert clinic.deliver(stranger) == FAILED                  # retried by the broker, then dead-lettered
    with clinic.engine.connect() as connection:
        assert connection.execute(sa.select(tables.inbox.c.event_id).where(tables.inbox.c.event_id == stranger.id)).first() is None
