"""Scheduling over HTTP, on the real PostgreSQL and on SQLite: rooms, office hours, closures, booking.

Every rule answers with a clear 4xx naming its reason, never a 500. The fixtures are in conftest.py,
the clinic's fixed clock and the steps tests take in support.py.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

import pytest

from clinic.testing import assert_error
from tests.integration.scheduling.support import MONDAY, OFFICE_HOURS, WEEKDAY_HOURS, local

# --- rooms ----------------------------------------------------------------------------------


def test_an_admin_adds_rooms_and_staff_read_them(clinic):
    recliner = clinic.room("Infusion 2")
    clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    names = [room["name"] for room in clinic.call("GET", "/rooms", role="nurse").get_json()]
    assert names == ["Exam A", "Infusion 1", "Infusion 2"]
    infusion = clinic.call("GET", "/rooms?kind=infusion", role="neurologist").get_json()
    assert [room["name"] for room in infusion] == ["Infusion 1", "Infusion 2"]
    assert clinic.call("GET", f"/rooms/{recliner['id']}").get_json() == recliner
    assert recliner["active"] is True and recliner["kind"] == "infusion"


def test_only_an_admin_manages_rooms(clinic):
    assert_error(clinic.call("POST", "/rooms", role="front_desk", json={"name": "X", "kind": "exam"}), 403, "forbidden")
    room = clinic.room("Exam B", kind="exam")
    assert_error(clinic.call("PATCH", f"/rooms/{room['id']}", role="nurse", json={"active": False}), 403)


def test_a_second_room_with_the_same_name_is_a_409_naming_the_first(clinic):
    first = clinic.room("Infusion 1")
    error = assert_error(clinic.call("POST", "/rooms", role="admin", json={"name": "Infusion 1", "kind": "exam"}), 409, "conflict")
    assert error["details"]["room_id"] == first["id"]
    other = clinic.room("Infusion 9")
    error = assert_error(clinic.call("PATCH", f"/rooms/{other['id']}", role="admin", json={"name": "Infusion 1"}), 409)
    assert error["details"]["room_id"] == first["id"]


@pytest.mark.parametrize("name", ["infusion 1", "INFUSION 1", "  Infusion 1  "])
def test_room_names_are_unique_whatever_their_case(clinic, name):
    first = clinic.room("Infusion 1")
    error = assert_error(clinic.call("POST", "/rooms", role="admin", json={"name": name, "kind": "infusion"}), 409, "conflict")
    assert error["details"] == {"room_id": first["id"]} and "Infusion 1" in error["message"]
    other = clinic.room("Infusion 2")
    error = assert_error(clinic.call("PATCH", f"/rooms/{other['id']}", role="admin", json={"name": name}), 409)
    assert error["details"] == {"room_id": first["id"]}
    # A room may change the case of its own name.
    renamed = clinic.call("PATCH", f"/rooms/{first['id']}", role="admin", json={"name": "INFUSION 1"})
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "INFUSION 1"
    assert [room["name"] for room in clinic.call("GET", "/rooms").get_json()] == ["INFUSION 1", "Infusion 2"]


@pytest.mark.parametrize("body", [{}, None])
def test_a_room_change_with_nothing_to_change_is_a_422_and_changes_nothing(clinic, body):
    room = clinic.room("Infusion 1")
    clinic.clock.set(local(MONDAY, "07:00"))
    response = clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", **({"json": body} if body is not None else {}))
    assert_error(response, 422)
    assert clinic.call("GET", f"/rooms/{room['id']}").get_json() == room


@pytest.mark.parametrize("body, field", [({"name": "", "kind": "exam"}, "name"), ({"name": "R", "kind": "ward"}, "kind"),
                                         ({"name": "R"}, "kind"), ({"name": "R", "kind": "exam", "beds": 2}, "beds")])
def test_a_bad_room_is_a_422_naming_the_field(clinic, body, field):
    error = assert_error(clinic.call("POST", "/rooms", role="admin", json=body), 422)
    assert field in error["details"]


def test_a_room_with_bookings_to_come_cannot_leave_use_until_they_move(clinic):
    room = clinic.room("Infusion 1")
    booking = clinic.booked(clinic.plan(), local(MONDAY, "09:00"), room_id=room["id"])
    for change in ({"active": False}, {"kind": "exam"}):
        error = assert_error(clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", json=change), 409)
        assert error["details"]["appointment_ids"] == [booking["id"]]
    assert clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", json={"name": "Infusion One"}).status_code == 200
    clinic.call("POST", f"/appointments/{booking['id']}/cancel", json={"reason": "room out of use"})
    retired = clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", json={"active": False})
    assert retired.status_code == 200 and retired.get_json()["active"] is False
    error = assert_error(clinic.book(clinic.plan(), local(MONDAY, "09:00"), room_id=room["id"]), 422, "rule_violation")
    assert "not in use" in error["message"]


def test_an_unknown_room_is_a_404(clinic):
    assert_error(clinic.call("GET", f"/rooms/{uuid.uuid4()}"), 404, "not_found")
    assert_error(clinic.call("PATCH", f"/rooms/{uuid.uuid4()}", role="admin", json={"active": False}), 404)


# --- office hours and closures --------------------------------------------------------------


def test_office_hours_round_trip_in_local_time(clinic):
    week = {"monday": [{"opens": "08:00", "closes": "12:00"}, {"opens": "13:00", "closes": "17:30"}], "saturday": [{"opens": "09:00",
                                                                                                                     "closes": "12:00"}]}
    response = clinic.call("PUT", "/office-hours", role="admin", json=week)
    assert response.status_code == 200, response.get_data(as_text=True)
    shown = clinic.call("GET", "/office-hours", role="nurse").get_json()
    assert shown["timezone"] == "America/New_York"
    assert shown["monday"] == week["monday"] and shown["saturday"] == week["saturday"]
    assert shown["tuesday"] == [] and shown["sunday"] == []


@pytest.mark.parametrize("week, field", [
    ({"monday": [{"opens": "08:00", "closes": "12:00"}, {"opens": "11:00", "closes": "17:00"}]}, "monday"),
    ({"tuesday": [{"opens": "17:00", "closes": "08:00"}]}, "tuesday"),
    ({"monday": [{"opens": "8am", "closes": "17:00"}]}, "monday"),
    ({"monday": [{"opens": "24:00", "closes": "17:00"}]}, "monday"),
    ({"funday": []}, "funday"),
])
def test_bad_office_hours_are_a_422_naming_the_day(clinic, week, field):
    error = assert_error(clinic.call("PUT", "/office-hours", role="admin", json=week), 422)
    assert field in error["details"]


@pytest.mark.parametrize("body", [{}, None])
def test_office_hours_without_a_week_are_a_422_not_a_closed_clinic(clinic, body):
    response = clinic.call("PUT", "/office-hours", role="admin", **({"json": body} if body is not None else {}))
    assert_error(response, 422)
    assert clinic.call("GET", "/office-hours").get_json()["monday"] == WEEKDAY_HOURS
    # Closing every day is still possible, by saying so day by day.
    closed = {name: [] for name in OFFICE_HOURS}
    assert clinic.call("PUT", "/office-hours", role="admin", json=closed).status_code == 200
    assert clinic.call("GET", "/office-hours").get_json()["monday"] == []


def test_office_hours_that_would_strand_a_booking_are_refused(clinic):
    room = clinic.room("Infusion 1")
    booking = clinic.booked(clinic.plan(), local(MONDAY, "15:00"), room_id=room["id"])
    shorter = {**OFFICE_HOURS, "monday": [{"opens": "08:00", "closes": "16:00"}]}
    error = assert_error(clinic.call("PUT", "/office-hours", role="admin", json=shorter), 409)
    assert error["details"]["appointment_id"] == booking["id"]
    assert clinic.call("GET", "/office-hours").get_json()["monday"] == WEEKDAY_HOURS
    assert_error(clinic.call("PUT", "/office-hours", role="front_desk", json=OFFICE_HOURS), 403)


def test_closures_are_listed_and_can_be_lifted(clinic):
    for day, reason in ((date(2030, 1, 9), "staff training"), (date(2030, 12, 25), "Christmas")):
        assert clinic.call("POST", "/closures", role="admin", json={"date": day.isoformat(), "reason": reason}).status_code == 201
    listed = clinic.call("GET", "/closures?from=2030-01-01&to=2030-06-30", role="nurse").get_json()
    assert [(c["date"], c["reason"]) for c in listed] == [("2030-01-09", "staff training")]
    assert_error(clinic.call("POST", "/closures", role="admin", json={"date": "2030-01-09", "reason": "again"}), 409)
    assert clinic.call("DELETE", "/closures/2030-01-09", role="admin").status_code == 204
    assert_error(clinic.call("DELETE", "/closures/2030-01-09", role="admin"), 404)
    error = assert_error(clinic.call("DELETE", "/closures/not-a-date", role="admin"), 422, "validation_failed")
    assert "day" in error["details"]
    assert_error(clinic.call("DELETE", "/closures/2030-02-30", role="admin"), 422)
    assert [c["date"] for c in clinic.call("GET", "/closures").get_json()] == ["2030-12-25"]


def test_a_day_with_bookings_cannot_be_closed_and_a_past_day_neither(clinic):
    room = clinic.room("Infusion 1")
    booking = clinic.booked(clinic.plan(), local(MONDAY + timedelta(days=1), "10:00"), room_id=room["id"])
    error = assert_error(clinic.call("POST", "/closures", role="admin", json={"date": "2030-01-08", "reason": "snow"}), 409)
    assert error["details"]["appointment_ids"] == [booking["id"]]
    assert_error(clinic.call("POST", "/closures", role="admin", json={"date": "2030-01-06", "reason": "late"}), 422)


# --- booking --------------------------------------------------------------------------------


def test_an_infusion_lasts_the_plan_and_takes_the_first_free_infusion_room(clinic):
    clinic.room("Exam A", kind="exam")
    first = clinic.room("Infusion 1")
    patient = clinic.plan(minutes=150)
    response = clinic.book(patient, local(MONDAY, "09:00"))
    assert response.status_code == 201, response.get_data(as_text=True)
    booked = response.get_json()
    assert (booked["room_id"], booked["room_name"], booked["status"], booked["kind"]) == (first["id"], "Infusion 1", "booked", "infusion")
    assert booked["starts_at"].startswith("2030-01-07T14:00:00") and booked["ends_at"].startswith("2030-01-07T16:30:00")
    assert booked["starts_at_local"] == "2030-01-07T09:00:00-05:00" and booked["ends_at_local"] == "2030-01-07T11:30:00-05:00"
    assert booked["room_free_at"].startswith("2030-01-07T16:45:00")
    assert clinic.call("GET", f"/appointments/{booked['id']}", role="nurse").get_json() == booked

    [event] = clinic.events("scheduling.appointment.booked")
    assert event["data"] == {"appointment_id": booked["id"], "patient_id": patient, "kind": "infusion", "room_id": first["id"],
                             "room_name": "Infusion 1", "starts_at": "2030-01-07T14:00:00+00:00", "ends_at": "2030-01-07T16:30:00+00:00",
                             "appointment_version": 1}
    assert booked["version"] == 1


def test_an_infusion_never_lasts_less_than_two_hours_and_a_follow_up_takes_an_exam_room(clinic):
    clinic.room("Infusion 1")
    exam = clinic.room("Exam A", kind="exam")
    patient = clinic.plan(minutes=120)
    infusion = clinic.booked(patient, local(MONDAY, "08:00"))
    assert infusion["ends_at_local"] == "2030-01-07T10:00:00-05:00"
    visit = clinic.booked(patient, local(MONDAY, "10:00"), kind="follow_up")
    assert (visit["room_id"], visit["ends_at_local"]) == (exam["id"], "2030-01-07T10:30:00-05:00")


def test_a_room_taken_at_that_time_is_a_409_naming_the_appointment(clinic):
    room = clinic.room("Infusion 1")
    first = clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"])
    error = assert_error(clinic.book(clinic.plan(), local(MONDAY, "10:30"), room_id=room["id"]), 409, "conflict")
    assert error["details"]["appointment_id"] == first["id"]
    # Ending at the first's start is fine only with the turnover gap before it: 06:45 would end at 09:00 (+15).
    error = assert_error(clinic.book(clinic.plan(minutes=120), local(MONDAY, "08:00"), room_id=room["id"]), 409)
    assert error["details"]["appointment_id"] == first["id"]


def test_the_turnover_gap_follows_an_infusion_but_not_a_visit(clinic):
    room = clinic.room("Infusion 1")
    exam = clinic.room("Exam A", kind="exam")
    clinic.booked(clinic.plan(minutes=120), local(MONDAY, "09:00"), room_id=room["id"])
    error = assert_error(clinic.book(clinic.plan(), local(MONDAY, "11:00"), room_id=room["id"]), 409)
    assert "turnover" in error["message"]
    assert_error(clinic.book(clinic.plan(), local(MONDAY, "11:14"), room_id=room["id"]), 409)
    assert clinic.book(clinic.plan(), local(MONDAY, "11:15"), room_id=room["id"]).status_code == 201
    clinic.booked(clinic.plan(), local(MONDAY, "09:00"), kind="follow_up", room_id=exam["id"])
    assert clinic.book(clinic.plan(), local(MONDAY, "09:30"), kind="follow_up", room_id=exam["id"]).status_code == 201


def test_without_a_room_the_next_free_room_of_the_kind_is_taken_and_when_none_is_free_a_409(clinic):
    one, two = clinic.room("Infusion 1"), clinic.room("Infusion 2")
    first = clinic.booked(clinic.plan(), local(MONDAY, "09:00"))
    second = clinic.booked(clinic.plan(), local(MONDAY, "09:00"))
    assert (first["room_id"], second["room_id"]) == (one["id"], two["id"])
    error = assert_error(clinic.book(clinic.plan(), local(MONDAY, "10:00")), 409)
    assert error["details"]["appointment_id"] in (first["id"], second["id"])
    assert sorted(error["details"]["appointment_ids"]) == sorted([first["id"], second["id"]])


def test_a_patient_cannot_be_in_two_places_at_once(clinic):
    clinic.room("Infusion 1")
    clinic.room("Infusion 2")
    clinic.room("Exam A", kind="exam")
    patient = clinic.plan(minutes=180)
    infusion = clinic.booked(patient, local(MONDAY, "09:00"))
    for kind, at in (("infusion", "11:00"), ("follow_up", "11:30"), ("follow_up", "08:45")):
        error = assert_error(clinic.book(patient, local(MONDAY, at), kind=kind), 409)
        assert error["details"] == {"appointment_id": infusion["id"], "patient_id": patient}
    assert clinic.book(patient, local(MONDAY, "12:00"), kind="follow_up").status_code == 201


def test_a_patient_without_an_active_plan_cannot_have_an_infusion(clinic):
    clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    error = assert_error(clinic.book(str(uuid.uuid4()), local(MONDAY, "09:00")), 422, "rule_violation")
    assert "active treatment plan" in error["message"] and "patient_id" in error["details"]
    patient = clinic.plan()
    clinic.retire(patient)
    error = assert_error(clinic.book(patient, local(MONDAY, "09:00")), 422)
    assert "active treatment plan" in error["message"]
    # A follow-up visit needs a patient scheduling knows (one who has or had a plan), not an active plan.
    assert clinic.book(patient, local(MONDAY, "09:00"), kind="follow_up").status_code == 201
    error = assert_error(clinic.book(str(uuid.uuid4()), local(MONDAY, "09:00"), kind="follow_up"), 422)
    assert "knows no patient" in error["message"]


@pytest.mark.parametrize("at, why", [
    (local(MONDAY, "05:00"), "in the past"),
    (local(MONDAY, "07:30"), "outside office hours"),
    (local(MONDAY, "16:30"), "outside office hours"),          # 150 minutes run past 18:00
    (local(MONDAY, "19:00"), "outside office hours"),
    (local(MONDAY - timedelta(days=1) + timedelta(days=7), "10:00"), "no office hours on Sundays"),
    (local(date(2030, 1, 9), "10:00"), "closed on 2030-01-09: staff training"),
    (local(MONDAY, "09:00") + timedelta(seconds=30), "whole minute"),
    (local(date(2031, 6, 2), "09:00"), "days ahead"),
])
def test_a_start_the_rules_refuse_is_a_422_saying_why(clinic, at, why):
    clinic.room("Infusion 1")
    clinic.call("POST", "/closures", role="admin", json={"date": "2030-01-09", "reason": "staff training"})
    error = assert_error(clinic.book(clinic.plan(minutes=150), at), 422, "rule_violation")
    assert why in error["message"]
    assert clinic.count() == 0


def test_the_wrong_unknown_or_inactive_room_is_a_422_saying_so(clinic):
    exam = clinic.room("Exam A", kind="exam")
    infusion = clinic.room("Infusion 1")
    patient = clinic.plan()
    error = assert_error(clinic.book(patient, local(MONDAY, "09:00"), room_id=exam["id"]), 422)
    assert error["message"] == "an infusion appointment needs an infusion room; Exam A is an exam room"
    assert error["details"] == {"room_id": ["not an infusion room"]}
    error = assert_error(clinic.book(patient, local(MONDAY, "09:00"), kind="follow_up", room_id=infusion["id"]), 422)
    assert error["message"] == "a follow-up appointment needs an exam room; Infusion 1 is an infusion room"
    error = assert_error(clinic.book(patient, local(MONDAY, "09:00"), room_id=str(uuid.uuid4())), 422)
    assert error["details"] == {"room_id": ["unknown room"]}
    clinic.call("PATCH", f"/rooms/{exam['id']}", role="admin", json={"active": False})
    error = assert_error(clinic.book(patient, local(MONDAY, "09:00"), kind="follow_up"), 422)
    assert "no exam room in use" in error["message"]


@pytest.mark.parametrize("body, field", [
    ({"kind": "infusion", "starts_at": "2030-01-07T09:00:00-05:00"}, "patient_id"),
    ({"patient_id": "nope", "kind": "infusion", "starts_at": "2030-01-07T09:00:00-05:00"}, "patient_id"),
    ({"patient_id": str(uuid.uuid4()), "kind": "massage", "starts_at": "2030-01-07T09:00:00-05:00"}, "kind"),
    ({"patient_id": str(uuid.uuid4()), "kind": "infusion", "starts_at": "2030-01-07T09:00:00"}, "starts_at"),
    ({"patient_id": str(uuid.uuid4()), "kind": "infusion", "starts_at": "tomorrow"}, "starts_at"),
    ({"patient_id": str(uuid.uuid4()), "kind": "infusion", "starts_at": "2030-01-07T09:00:00Z", "room_id": 7}, "room_id"),
    ({"patient_id": str(uuid.uuid4()), "kind": "infusion", "starts_at": "2030-01-07T09:00:00Z", "notes": "x"}, "notes"),
])
def test_malformed_bookings_are_a_422_naming_the_field(clinic, body, field):
    error = assert_error(clinic.call("POST", "/appointments", json=body), 422, "validation_failed")
    assert field in error["details"]


def test_a_body_that_is_not_json_is_a_400_and_roles_are_checked_first(clinic):
    assert_error(clinic.call("POST", "/appointments", data="{nope", content_type="application/json"), 400)
    patient = clinic.plan()
    for role in ("nurse", "neurologist", "admin"):
        assert_error(clinic.book(patient, local(MONDAY, "09:00"), role=role), 403, "forbidden")
    assert_error(clinic.client.post("/appointments", json={}), 401, "unauthorized")


def test_office_hours_hold_on_both_sides_of_the_clock_change(clinic):
    """New York moves from UTC-5 to UTC-4 on Sunday 10 March 2030: 08:00 stays 08:00 local, an hour earlier in UTC."""
    room = clinic.room("Infusion 1")
    clinic.clock.set(local(date(2030, 3, 8), "06:00"))
    before = clinic.booked(clinic.plan(minutes=120), datetime(2030, 3, 8, 13, 0, tzinfo=timezone.utc), room_id=room["id"])
    after = clinic.booked(clinic.plan(minutes=120), datetime(2030, 3, 11, 12, 0, tzinfo=timezone.utc), room_id=room["id"])
    assert before["starts_at_local"] == "2030-03-08T08:00:00-05:00" and after["starts_at_local"] == "2030-03-11T08:00:00-04:00"
    # 11:30 UTC on the Monday after is 07:30 local: before opening, though it was inside the hours a week before.
    error = assert_error(clinic.book(clinic.plan(), datetime(2030, 3, 11, 11, 30, tzinfo=timezone.utc), room_id=room["id"]), 422)
    assert "07:30" in error["message"]
    # Stored in UTC, the Friday booking did not move when the clocks changed.
    assert clinic.call("GET", f"/appointments/{before['id']}").get_json()["starts_at"].startswith("2030-03-08T13:00:00")
