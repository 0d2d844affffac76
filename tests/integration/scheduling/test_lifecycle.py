"""An appointment's life over HTTP (reschedule, cancel, check-in, no-show), the lists the staff apps
read (appointments, the day board) and the slot finder; on PostgreSQL and on SQLite."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from clinic.testing import assert_error
from tests.integration.scheduling.support import MONDAY, local

TUESDAY = MONDAY + timedelta(days=1)


# --- reschedule -----------------------------------------------------------------------------


def test_rescheduling_moves_the_appointment_and_says_where_from(clinic):
    one, two = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    patient = clinic.plan(minutes=120)
    booked = clinic.booked(patient, local(MONDAY, "09:00"), room_id=one["id"])
    # Overlapping its own old time is fine: an appointment does not collide with itself.
    response = clinic.call("POST", f"/appointments/{booked['id']}/reschedule", json={"starts_at": local(MONDAY, "10:00").isoformat()})
    assert response.status_code == 200, response.get_data(as_text=True)
    moved = response.get_json()
    assert (moved["id"], moved["room_id"], moved["starts_at_local"]) == (booked["id"], one["id"], "2030-01-07T10:00:00-05:00")
    moved = clinic.call("POST", f"/appointments/{booked['id']}/reschedule", json={"room_id": two["id"]}).get_json()
    assert (moved["room_id"], moved["starts_at_local"]) == (two["id"], "2030-01-07T10:00:00-05:00")

    first, second = clinic.events("scheduling.appointment.rescheduled")
    assert first["data"]["previous_starts_at"] == "2030-01-07T14:00:00+00:00" and first["data"]["starts_at"] == "2030-01-07T15:00:00+00:00"
    assert second["data"]["previous_room_id"] == one["id"] and second["data"]["room_id"] == two["id"]
    assert second["data"]["room_name"] == "Infusion 2"
    # The old place is free again.
    assert clinic.book(clinic.plan(), local(MONDAY, "09:00"), room_id=one["id"]).status_code == 201


def test_rescheduling_follows_the_same_rules_as_booking(clinic):
    room = clinic.room("Infusion 1")
    other = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "13:00"), room_id=room["id"])
    booked = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"])
    path = f"/appointments/{booked['id']}/reschedule"
    error = assert_error(clinic.call("POST", path, json={"starts_at": local(MONDAY, "14:00").isoformat()}), 409)
    assert error["details"]["appointment_id"] == other["id"]
    assert_error(clinic.call("POST", path, json={"starts_at": local(MONDAY, "17:00").isoformat()}), 422)   # runs past 18:00
    assert_error(clinic.call("POST", path, json={"starts_at": local(MONDAY, "05:00").isoformat()}), 422)   # the past
    assert_error(clinic.call("POST", path, json={}), 422, "validation_failed")
    assert_error(clinic.call("POST", f"/appointments/{uuid.uuid4()}/reschedule", json={"room_id": room["id"]}), 404)
    assert clinic.call("GET", f"/appointments/{booked['id']}").get_json()["starts_at_local"] == "2030-01-07T09:00:00-05:00"


def test_without_a_room_a_rescheduled_appointment_moves_rooms_only_when_its_own_is_taken(clinic):
    one, two = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    booked = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=two["id"])
    clinic.booked(clinic.plan(minutes=120), local(MONDAY, "13:00"), room_id=two["id"])
    path = f"/appointments/{booked['id']}/reschedule"
    assert clinic.call("POST", path, json={"starts_at": local(MONDAY, "10:00").isoformat()}).get_json()["room_id"] == two["id"]
    assert clinic.call("POST", path, json={"starts_at": local(MONDAY, "14:00").isoformat()}).get_json()["room_id"] == one["id"]


def test_a_cancelled_appointment_cannot_be_rescheduled(clinic):
    clinic.room("Infusion 1")
    booked = clinic.booked(clinic.plan(), local(MONDAY, "09:00"))
    clinic.call("POST", f"/appointments/{booked['id']}/cancel", json={"reason": "patient unwell"})
    error = assert_error(clinic.call("POST", f"/appointments/{booked['id']}/reschedule",
                                     json={"starts_at": local(TUESDAY, "09:00").isoformat()}), 409, "conflict")
    assert error["details"] == {"appointment_id": booked["id"], "status": "cancelled"}
    assert "cancelled" in error["message"]


def test_each_change_is_the_appointments_next_version_and_its_event_says_which(clinic):
    one, two = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    booked = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=one["id"])
    path = f"/appointments/{booked['id']}"
    moved = clinic.call("POST", f"{path}/reschedule", json={"starts_at": local(MONDAY, "10:00").isoformat()}).get_json()
    unchanged = clinic.call("POST", f"{path}/reschedule", json={"starts_at": local(MONDAY, "10:00").isoformat()}).get_json()
    again = clinic.call("POST", f"{path}/reschedule", json={"room_id": two["id"]}).get_json()
    clinic.clock.set(local(MONDAY, "09:55"))
    arrived = clinic.call("POST", f"{path}/check-in").get_json()
    cancelled = clinic.call("POST", f"{path}/cancel", json={"reason": "felt unwell at the desk"}).get_json()
    assert [booked["version"], moved["version"], unchanged["version"], again["version"], arrived["version"], cancelled["version"]] == \
        [1, 2, 2, 3, 4, 5]
    published = [(e["type"].rsplit(".", 1)[1], e["data"]["appointment_version"]) for e in clinic.events()
                 if e["type"].startswith("scheduling.appointment.")]
    assert published == [("booked", 1), ("rescheduled", 2), ("rescheduled", 3), ("checked_in", 4), ("cancelled", 5)]


@pytest.mark.parametrize("first, then, message", [
    ("no-show", "no-show", "the appointment is a no-show already"),
    ("no-show", "check-in", "cannot check in an appointment that is a no-show (only one that is booked)"),
    ("cancel", "cancel", "the appointment is cancelled already"),
])
def test_a_refused_change_says_why_in_words(clinic, first, then, message):
    clinic.room("Infusion 1")
    booked = clinic.booked(clinic.plan(), local(MONDAY, "09:00"))
    clinic.clock.set(local(MONDAY, "09:20"))
    body = {"json": {"reason": "unwell"}} if first == "cancel" else {}
    assert clinic.call("POST", f"/appointments/{booked['id']}/{first}", **body).status_code == 200
    body = {"json": {"reason": "unwell"}} if then == "cancel" else {}
    error = assert_error(clinic.call("POST", f"/appointments/{booked['id']}/{then}", **body), 409, "conflict")
    assert error["message"] == message


# --- cancel ---------------------------------------------------------------------------------


def test_cancelling_frees_the_room_and_the_patient_and_tells_the_others(clinic):
    room = clinic.room("Infusion 1")
    patient = clinic.plan()
    booked = clinic.booked(patient, local(MONDAY, "09:00"), room_id=room["id"])
    assert_error(clinic.call("POST", f"/appointments/{booked['id']}/cancel", json={}), 422, "validation_failed")
    response = clinic.call("POST", f"/appointments/{booked['id']}/cancel", json={"reason": "patient unwell"})
    assert response.status_code == 200
    assert (response.get_json()["status"], response.get_json()["cancel_reason"]) == ("cancelled", "patient unwell")
    [event] = clinic.events("scheduling.appointment.cancelled")
    assert event["data"] == {"appointment_id": booked["id"], "patient_id": patient, "kind": "infusion",
                             "starts_at": "2030-01-07T14:00:00+00:00", "appointment_version": 2}  # the free-text reason stays here
    assert clinic.book(patient, local(MONDAY, "09:00"), room_id=room["id"]).status_code == 201
    assert_error(clinic.call("POST", f"/appointments/{booked['id']}/cancel", json={"reason": "again"}), 409)
    assert_error(clinic.call("POST", f"/appointments/{uuid.uuid4()}/cancel", json={"reason": "x"}), 404)


# --- check-in and no-show -------------------------------------------------------------------


def test_check_in_on_the_day_carries_the_active_plan(clinic):
    room = clinic.room("Infusion 1")
    plan_id = str(uuid.uuid4())
    patient = clinic.plan(plan_id=plan_id)
    booked = clinic.booked(patient, local(MONDAY, "09:00"), room_id=room["id"])
    tomorrow = clinic.booked(patient, local(TUESDAY, "09:00"), room_id=room["id"])
    clinic.clock.set(local(MONDAY, "08:50"))
    assert_error(clinic.call("POST", f"/appointments/{tomorrow['id']}/check-in"), 422)
    assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in", role="nurse"), 403)
    response = clinic.call("POST", f"/appointments/{booked['id']}/check-in")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "checked_in"
    [event] = clinic.events("scheduling.appointment.checked_in")
    assert event["data"]["plan_id"] == plan_id and event["data"]["room_name"] == "Infusion 1"
    assert event["data"]["checked_in_at"].startswith("2030-01-07T13:50:00")
    assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in"), 409)


def test_check_in_is_refused_after_the_plan_was_retired_or_the_time_is_over(clinic):
    clinic.room("Infusion 1")
    patient = clinic.plan(minutes=120)
    booked = clinic.booked(patient, local(MONDAY, "09:00"))
    clinic.clock.set(local(MONDAY, "11:00"))
    error = assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in"), 422)
    assert "over" in error["message"]
    clinic.clock.set(local(MONDAY, "09:05"))
    clinic.retire(patient)
    error = assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in"), 422)
    assert "active treatment plan" in error["message"]


def test_check_in_is_refused_when_a_longer_plan_was_activated_since_the_booking(clinic):
    room = clinic.room("Infusion 1")
    patient = clinic.plan(minutes=120)
    booked = clinic.booked(patient, local(MONDAY, "09:00"), room_id=room["id"])
    clinic.plan(patient, minutes=240)  # the room may well be booked from 11:15 by someone else
    clinic.clock.set(local(MONDAY, "08:55"))
    error = assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in"), 422)
    assert "240 minutes" in error["message"] and "reschedule" in error["message"]
    assert clinic.events("scheduling.appointment.checked_in") == []


def test_a_no_show_waits_for_the_grace_period_and_frees_the_room(clinic):
    room = clinic.room("Infusion 1")
    patient = clinic.plan()
    booked = clinic.booked(patient, local(MONDAY, "09:00"), room_id=room["id"])
    clinic.clock.set(local(MONDAY, "09:14"))
    error = assert_error(clinic.call("POST", f"/appointments/{booked['id']}/no-show"), 422)
    assert "09:15" in error["message"]
    clinic.clock.set(local(MONDAY, "09:15"))
    response = clinic.call("POST", f"/appointments/{booked['id']}/no-show")
    assert response.status_code == 200 and response.get_json()["status"] == "no_show"
    [event] = clinic.events("scheduling.appointment.no_show")
    assert event["data"] == {"appointment_id": booked["id"], "patient_id": patient, "starts_at": "2030-01-07T14:00:00+00:00",
                             "appointment_version": 2}
    assert clinic.book(clinic.plan(minutes=120), local(MONDAY, "09:30"), room_id=room["id"]).status_code == 201
    assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in"), 409)


def test_who_booked_checked_in_cancelled_or_marked_a_no_show_is_recorded(clinic):
    room = clinic.room("Infusion 1")
    patient = clinic.plan()
    desk = {"role": "front_desk", "subject": "desk-ana"}
    response = clinic.call("POST", "/appointments", json={"patient_id": patient, "kind": "infusion", "room_id": room["id"],
                                                          "starts_at": local(MONDAY, "09:00").isoformat()}, **desk)
    booked = response.get_json()
    assert (booked["booked_by"], booked["updated_by"], booked["cancelled_by"]) == ("desk-ana", "desk-ana", None)
    moved = clinic.call("POST", f"/appointments/{booked['id']}/reschedule", json={"starts_at": local(MONDAY, "10:00").isoformat()},
                        role="front_desk", subject="desk-ben").get_json()
    assert (moved["booked_by"], moved["updated_by"]) == ("desk-ana", "desk-ben")
    cancelled = clinic.call("POST", f"/appointments/{booked['id']}/cancel", json={"reason": "unwell"}, **desk).get_json()
    assert (cancelled["cancelled_by"], cancelled["updated_by"]) == ("desk-ana", "desk-ana")

    arrived = clinic.booked(patient, local(MONDAY, "13:00"), room_id=room["id"])
    away = clinic.booked(clinic.plan(), local(MONDAY, "09:00"), room_id=room["id"])
    clinic.clock.set(local(MONDAY, "12:55"))
    checked_in = clinic.call("POST", f"/appointments/{arrived['id']}/check-in", role="front_desk", subject="desk-ben").get_json()
    assert (checked_in["checked_in_by"], checked_in["updated_by"]) == ("desk-ben", "desk-ben")
    missed = clinic.call("POST", f"/appointments/{away['id']}/no-show", **desk).get_json()
    assert (missed["no_show_by"], missed["booked_by"], missed["updated_by"]) == ("desk-ana", "tester", "desk-ana")
    # The day board and the lists show the same, for the desk to see who did what.
    [shown] = clinic.call("GET", f"/appointments?patient_id={patient}&status=cancelled", role="nurse").get_json()
    assert (shown["booked_by"], shown["cancelled_by"]) == ("desk-ana", "desk-ana")


# --- reading --------------------------------------------------------------------------------


def test_appointments_are_listed_by_local_date_room_patient_and_status(clinic):
    one, two = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    patient = clinic.plan(minutes=120)
    a = clinic.booked(patient, local(MONDAY, "08:00"), room_id=two["id"])
    b = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "16:00"), room_id=one["id"])   # 21:00 UTC: still Monday locally
    c = clinic.booked(patient, local(TUESDAY, "08:00"), room_id=one["id"])
    clinic.call("POST", f"/appointments/{c['id']}/cancel", json={"reason": "moved"})

    def ids(query):
        response = clinic.call("GET", f"/appointments?{query}", role="neurologist")
        assert response.status_code == 200, response.get_data(as_text=True)
        return [appointment["id"] for appointment in response.get_json()]

    assert ids("date=2030-01-07") == [a["id"], b["id"]]
    assert ids(f"room_id={one['id']}") == [b["id"], c["id"]]
    assert ids(f"patient_id={patient}") == [a["id"], c["id"]]
    assert ids("status=cancelled") == [c["id"]]
    assert ids("limit=1&offset=1") == [b["id"]]
    assert_error(clinic.call("GET", "/appointments?status=lost"), 422)
    assert_error(clinic.call("GET", "/appointments", role="admin"), 403)
    assert_error(clinic.call("GET", f"/appointments/{uuid.uuid4()}"), 404)


def test_the_day_board_shows_each_room_with_its_appointments_in_order(clinic):
    exam, one, two = clinic.room("Exam A", kind="exam"), clinic.room("Infusion 1"), clinic.room("Infusion 2")
    late = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "13:00"), room_id=one["id"])
    early = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "08:00"), room_id=one["id"])
    clinic.booked(clinic.plan(), local(TUESDAY, "08:00"), room_id=two["id"])
    clinic.call("POST", f"/appointments/{early['id']}/cancel", json={"reason": "unwell"})
    board = clinic.call("GET", "/board?date=2030-01-07", role="nurse").get_json()
    assert (board["date"], board["timezone"]) == ("2030-01-07", "America/New_York")
    assert [room["name"] for room in board["rooms"]] == ["Exam A", "Infusion 1", "Infusion 2"]
    rooms = {room["room_id"]: room for room in board["rooms"]}
    assert [(a["id"], a["status"]) for a in rooms[one["id"]]["appointments"]] == [(early["id"], "cancelled"), (late["id"], "booked")]
    assert rooms[two["id"]]["appointments"] == [] and rooms[exam["id"]]["appointments"] == []
    # Without a date: the clinic's today.
    assert clinic.call("GET", "/board").get_json()["date"] == "2030-01-07"


def test_a_room_out_of_use_is_on_the_board_only_on_days_it_has_appointments(clinic):
    room = clinic.room("Infusion 1")
    booked = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"])
    clinic.clock.set(local(MONDAY, "12:00"))
    assert_error(clinic.call("POST", f"/appointments/{booked['id']}/check-in"), 422)   # too late: stays booked
    assert clinic.call("POST", f"/appointments/{booked['id']}/no-show").get_json()["status"] == "no_show"
    assert clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", json={"active": False}).status_code == 200
    assert [r["name"] for r in clinic.call("GET", "/board?date=2030-01-07").get_json()["rooms"]] == ["Infusion 1"]
    assert clinic.call("GET", "/board?date=2030-01-08").get_json()["rooms"] == []


# --- the slot finder ------------------------------------------------------------------------


def slots(clinic, patient: str, kind: str, start: datetime, end: datetime, **extra) -> list[tuple[str, str]]:
    query = {"patient_id": patient, "kind": kind, "from": start.isoformat(), "to": end.isoformat(), **extra}
    response = clinic.call("GET", "/availability", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [(slot["room_name"], slot["starts_at_local"][11:16]) for slot in response.get_json()]


def test_free_slots_are_on_the_grid_inside_office_hours_and_clear_of_holds(clinic):
    one = clinic.room("Infusion 1")
    clinic.room("Infusion 2")
    clinic.booked(clinic.plan(minutes=120), local(MONDAY, "08:00"), room_id=one["id"])      # holds room 1 until 10:15
    patient = clinic.plan(minutes=120)
    clinic.booked(patient, local(MONDAY, "11:00"), kind="follow_up", room_id=clinic.room("Exam A", kind="exam")["id"])
    found = slots(clinic, clinic.plan(minutes=120), "infusion", local(MONDAY, "07:00"), local(MONDAY, "18:00"), limit=500)
    assert found[:3] == [("Infusion 2", "08:00"), ("Infusion 2", "08:15"), ("Infusion 2", "08:30")]
    # Room 1 holds its 08:00-10:00 infusion and the turnover gap after it.
    assert ("Infusion 1", "10:15") in found and ("Infusion 1", "10:00") not in found
    found = slots(clinic, patient, "infusion", local(MONDAY, "07:00"), local(MONDAY, "18:00"), limit=500)
    # The patient's 11:00-11:30 visit: no infusion may overlap it, in any room.
    assert not [s for s in found if "09:01" <= s[1] <= "11:29"]
    assert ("Infusion 2", "11:30") in found and found[-1] == ("Infusion 2", "16:00")
    assert found == sorted(found, key=lambda s: (s[1], s[0]))


def test_free_slots_skip_closures_and_past_times_and_fit_the_kind(clinic):
    clinic.room("Exam A", kind="exam")
    clinic.call("POST", "/closures", role="admin", json={"date": "2030-01-08", "reason": "training"})
    patient = clinic.plan()
    clinic.clock.set(local(MONDAY, "17:10"))
    found = slots(clinic, patient, "follow_up", local(MONDAY, "00:00"), local(date(2030, 1, 9), "09:00"))
    assert found == [("Exam A", "17:15"), ("Exam A", "17:30"), ("Exam A", "08:00"), ("Exam A", "08:15"), ("Exam A", "08:30")]
    assert slots(clinic, patient, "follow_up", local(MONDAY, "00:00"), local(date(2030, 1, 9), "09:00"), limit=2) == found[:2]


@pytest.mark.parametrize("query, status", [
    ({"kind": "infusion", "from": "2030-01-07T08:00:00-05:00", "to": "2030-01-07T07:00:00-05:00"}, 422),
    ({"kind": "infusion", "from": "2030-01-07T08:00:00-05:00", "to": "2030-03-07T08:00:00-05:00"}, 422),
    ({"kind": "infusion", "from": "2030-01-07T08:00:00", "to": "2030-01-08T08:00:00-05:00"}, 422),
    ({"kind": "infusion", "from": "2030-01-07T08:00:00-05:00"}, 422),
])
def test_a_bad_slot_query_is_a_422(clinic, query, status):
    clinic.room("Infusion 1")
    assert_error(clinic.call("GET", "/availability", query_string={"patient_id": clinic.plan(), **query}), status)


def test_no_slots_for_an_infusion_without_an_active_plan(clinic):
    clinic.room("Infusion 1")
    error = assert_error(clinic.call("GET", "/availability", query_string={
        "patient_id": str(uuid.uuid4()), "kind": "infusion", "from": "2030-01-07T08:00:00-05:00",
        "to": "2030-01-08T08:00:00-05:00"}), 422)
    assert "active treatment plan" in error["message"]


def test_every_offered_slot_can_be_booked(clinic):
    clinic.room("Infusion 1")
    clinic.room("Infusion 2")
    clinic.booked(clinic.plan(minutes=200), local(MONDAY, "09:10"))
    patient = clinic.plan(minutes=135)
    response = clinic.call("GET", "/availability", query_string={
        "patient_id": patient, "kind": "infusion", "from": local(MONDAY, "08:00").isoformat(), "to": local(MONDAY, "18:00").isoformat(),
        "limit": 500})
    offered = response.get_json()
    assert offered
    for slot in offered[::7]:
        booking = clinic.book(patient, datetime.fromisoformat(slot["starts_at"]).astimezone(timezone.utc), room_id=slot["room_id"])
        assert booking.status_code == 201, (slot, booking.get_data(as_text=True))
        clinic.call("POST", f"/appointments/{booking.get_json()['id']}/cancel", json={"reason": "probe"})
