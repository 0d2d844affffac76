"""A session from check-in to start: opened once per infusion check-in, closed by a cancellation while
it waits, started by a nurse (one started session per room), its plan's drugs copied and kept
whatever happens to the plan, its room and plan copies kept by version; and how sessions are read."""

from __future__ import annotations

from datetime import timedelta

from clinic import events
from clinic.inbox import APPLIED, DUPLICATE
from sessions.db import tables
from tests.integration.sessions.support import (
    KETOROLAC,
    MONDAY,
    ONDANSETRON,
    PLAN_DRUGS,
    check_in_data,
    checked_in_session,
    deliver,
    deliver_event,
    local,
    new_id,
    plan,
    retire_plan,
    room,
    sent,
    session_of_appointment,
    start,
    started_session,
)


def test_a_check_in_delivered_twice_opens_one_session_with_the_plan_and_its_drugs(ward):
    patient, room_id = new_id(), room(ward, "Infusion 1")
    plan_id = plan(ward, patient, minutes=180)
    check_in = sent(events.APPOINTMENT_CHECKED_IN, check_in_data(patient, room_id, plan_id, minutes=180))
    assert deliver_event(ward, check_in) == APPLIED
    assert deliver_event(ward, check_in) == DUPLICATE
    # The same check-in in a second event (scheduling sent it again) opens nothing more either.
    deliver(ward, events.APPOINTMENT_CHECKED_IN, {**check_in.data, "appointment_id": str(check_in.data["appointment_id"])})
    assert len(ward.rows(tables.sessions)) == 1

    row = session_of_appointment(ward, str(check_in.data["appointment_id"]))
    shown = ward.call("GET", f"/sessions/{row['id']}").get_json()
    assert (shown["status"], shown["patient_id"], shown["room_id"], shown["room_name"]) == ("waiting", patient, room_id, "Infusion 1")
    assert (shown["plan_id"], shown["planned_minutes"], shown["plan_changed"], shown["spo2_scale"]) == (plan_id, 180, False, 1)
    assert [(drug["name"], drug["dose"], drug["unit"], drug["route"], drug["rate"], drug["max_per_24h"]) for drug in shown["drugs"]] == [
        ("ketorolac", "30", "mg", "IV", None, "120"), ("ondansetron", "4", "mg", "IV", None, "16"),
        ("sodium chloride 0.9%", "1000", "mL", "IV", "500 mL/h", None)]
    assert len({drug["id"] for drug in shown["drugs"]}) == 3


def test_a_follow_up_visit_opens_no_session(ward):
    deliver(ward, events.APPOINTMENT_CHECKED_IN, check_in_data(new_id(), room(ward, "Exam A", kind="exam"), kind="follow_up", minutes=30))
    assert ward.rows(tables.sessions) == []


def test_the_planned_minutes_are_the_plans_else_the_appointments_never_below_120(ward):
    assert checked_in_session(ward, minutes=150)["planned_minutes"] == 150
    # No plan copy yet: the appointment's length, but never under the clinic's minimum.
    assert checked_in_session(ward, minutes=90, with_plan=False)["planned_minutes"] == 120
    assert checked_in_session(ward, minutes=140, with_plan=False)["planned_minutes"] == 140


def test_drugs_arrive_with_the_plan_when_the_check_in_came_first(ward):
    patient, plan_id = new_id(), new_id()
    data = check_in_data(patient, room(ward), plan_id, minutes=150)
    deliver(ward, events.APPOINTMENT_CHECKED_IN, data)
    session_id = session_of_appointment(ward, data["appointment_id"])["id"]
    assert ward.call("GET", f"/sessions/{session_id}").get_json()["drugs"] == []

    plan(ward, patient, [KETOROLAC], minutes=200, plan_id=plan_id)
    shown = ward.call("GET", f"/sessions/{session_id}").get_json()
    assert [drug["name"] for drug in shown["drugs"]] == ["ketorolac"]
    assert shown["planned_minutes"] == 200
    # Delivered again (a second event for the same activation), nothing is copied twice.
    plan(ward, patient, [KETOROLAC], minutes=200, plan_id=plan_id)
    assert len(ward.rows(tables.session_drugs, session_id=session_id)) == 1


def test_a_plan_retired_during_the_session_leaves_its_drugs_and_shows_the_change(ward):
    session = started_session(ward)
    patient, plan_id = session["patient_id"], session["plan_id"]
    new_plan = new_id()
    retire_plan(ward, patient, plan_id, sequence=2, replaced_by=new_plan)
    plan(ward, patient, [ONDANSETRON], plan_id=new_plan, sequence=3)

    shown = ward.call("GET", f"/sessions/{session['id']}").get_json()
    assert shown["plan_changed"] is True
    assert shown["plan_id"] == plan_id
    assert [drug["name"] for drug in shown["drugs"]] == [drug["name"] for drug in PLAN_DRUGS]
    [on_board] = [entry["session"] for entry in ward.call("GET", "/board").get_json()["rooms"] if entry["session"]]
    assert on_board["plan_changed"] is True


def test_a_retirement_that_arrives_before_the_activation_keeps_the_drugs_it_brought(ward):
    patient, plan_id = new_id(), new_id()
    retire_plan(ward, patient, plan_id, sequence=2)
    plan(ward, patient, [KETOROLAC], plan_id=plan_id, sequence=1)
    [copy] = ward.rows(tables.plans, plan_id=plan_id)
    assert (copy["active"], copy["version"], [drug["name"] for drug in copy["drugs"]]) == (False, 2, ["ketorolac"])
    # A session checked in under that plan (it was active at check-in) still gets its drugs.
    data = check_in_data(patient, room(ward), plan_id)
    deliver(ward, events.APPOINTMENT_CHECKED_IN, data)
    session_id = session_of_appointment(ward, data["appointment_id"])["id"]
    shown = ward.call("GET", f"/sessions/{session_id}").get_json()
    assert ([drug["name"] for drug in shown["drugs"]], shown["plan_changed"]) == (["ketorolac"], True)


def test_plan_copies_are_kept_by_the_patients_plan_sequence_never_by_arrival(ward):
    patient, plan_id = new_id(), new_id()
    plan(ward, patient, plan_id=plan_id, sequence=3)
    retire_plan(ward, patient, plan_id, sequence=2)     # older: ignored
    assert ward.rows(tables.plans, plan_id=plan_id)[0]["active"] is True
    retire_plan(ward, patient, plan_id, sequence=4)
    assert ward.rows(tables.plans, plan_id=plan_id)[0]["active"] is False


def test_plan_events_from_before_plan_sequences_count_as_0_and_never_replace_a_sequenced_copy(ward):
    patient, plan_id = new_id(), new_id()
    plan(ward, patient, plan_id=plan_id, sequence=None)
    retire_plan(ward, patient, plan_id, sequence=None)      # both unversioned: applied as they arrive
    assert (ward.rows(tables.plans, plan_id=plan_id)[0]["active"], ward.rows(tables.plans, plan_id=plan_id)[0]["version"]) == (False, 0)
    plan(ward, patient, plan_id=plan_id, sequence=1)
    retire_plan(ward, patient, plan_id, sequence=None)      # unversioned: never over a sequenced copy
    assert ward.rows(tables.plans, plan_id=plan_id)[0]["active"] is True


def test_the_room_copy_is_kept_by_the_rooms_version(ward):
    room_id = room(ward, "Infusion 1", version=2)
    room(ward, "Infusion One", version=1, room_id=room_id)              # older: ignored
    assert ward.rows(tables.rooms, id=room_id)[0]["name"] == "Infusion 1"
    room(ward, "Infusion 1", active=False, version=3, room_id=room_id)
    [copy] = ward.rows(tables.rooms, id=room_id)
    assert (copy["active"], copy["version"]) == (False, 3)


def test_a_room_first_heard_of_in_a_check_in_is_an_infusion_room_until_scheduling_says_more(ward):
    room_id = new_id()
    session = checked_in_session(ward, room_id=room_id, room_name="Infusion 9")
    assert session["room_name"] == "Infusion 9"
    assert [entry["name"] for entry in ward.call("GET", "/board").get_json()["rooms"]] == ["Infusion 9"]
    room(ward, "Infusion 9 (window)", version=1, room_id=room_id)
    assert ward.call("GET", f"/sessions/{session['id']}").get_json()["room_name"] == "Infusion 9 (window)"


def test_a_cancelled_appointment_closes_its_waiting_session_but_never_a_started_one(ward):
    waiting = checked_in_session(ward)
    started = started_session(ward)
    for session in (waiting, started):
        deliver(ward, events.APPOINTMENT_CANCELLED, {"appointment_id": session["appointment_id"], "patient_id": session["patient_id"],
                                                     "kind": "infusion", "starts_at": local(MONDAY, "09:00"), "appointment_version": 3})
    assert ward.session_row(waiting["id"])["status"] == "cancelled"
    assert ward.session_row(started["id"])["status"] == "started"
    assert start(ward, waiting["id"]).status_code == 409
    # An appointment never checked in has no session: nothing to do.
    deliver(ward, events.APPOINTMENT_CANCELLED, {"appointment_id": new_id(), "patient_id": new_id(), "kind": "infusion",
                                                 "starts_at": local(MONDAY, "10:00")})


def test_a_cancellation_that_overtook_its_check_in_leaves_no_session_open(ward):
    """A retried or redelivered check-in may arrive after the appointment's cancellation: the late
    check-in opens no session, which nobody could close any more."""
    patient_id, room_id = new_id(), room(ward)
    late = check_in_data(patient_id, room_id, plan(ward, patient_id))
    deliver(ward, events.APPOINTMENT_CANCELLED, {"appointment_id": late["appointment_id"], "patient_id": patient_id,
                                                 "kind": "infusion", "starts_at": late["starts_at"], "appointment_version": 3})
    deliver(ward, events.APPOINTMENT_CANCELLED, {"appointment_id": late["appointment_id"], "patient_id": patient_id,
                                                 "kind": "infusion", "starts_at": late["starts_at"], "appointment_version": 3})
    deliver(ward, events.APPOINTMENT_CHECKED_IN, late)
    assert session_of_appointment(ward, late["appointment_id"]) is None
    assert len(ward.rows(tables.cancelled_appointments, appointment_id=late["appointment_id"])) == 1
    # Another appointment of the patient's is not affected.
    assert checked_in_session(ward, patient_id=patient_id, room_id=room_id)["status"] == "waiting"


def test_a_nurse_starts_the_session_once_and_session_started_leaves_through_the_outbox(ward):
    session = checked_in_session(ward)
    ward.clock.advance(minutes=5)
    response = start(ward, session["id"])
    assert response.status_code == 200, response.get_data(as_text=True)
    started = response.get_json()
    assert (started["status"], started["started_by"]) == ("started", "tester")
    assert started["started_at"] == ward.clock().isoformat()
    again = start(ward, session["id"])
    assert again.status_code == 409
    assert again.get_json()["error"]["details"] == {"session_id": session["id"], "status": "started"}
    [event] = ward.events(events.SESSION_STARTED)
    assert event["data"] == {"session_id": session["id"], "appointment_id": session["appointment_id"],
                             "patient_id": session["patient_id"], "room_id": session["room_id"], "started_at": ward.clock().isoformat()}


def test_a_second_start_in_the_room_is_refused_naming_the_session_there(ward):
    room_id = room(ward)
    first = started_session(ward, room_id=room_id)
    second = checked_in_session(ward, room_id=room_id)
    response = start(ward, second["id"])
    assert response.status_code == 409
    assert response.get_json()["error"]["details"]["session_id"] == first["id"]
    assert ward.session_row(second["id"])["status"] == "waiting"
    assert len(ward.events(events.SESSION_STARTED)) == 1
    # Once the first has ended, the room takes the next.
    assert ward.call("POST", f"/sessions/{first['id']}/abort", json={"reason": "equipment"}).status_code == 200
    assert start(ward, second["id"]).status_code == 200


def test_starting_needs_a_nurse_or_a_neurologist_and_a_known_session(ward):
    session = checked_in_session(ward)
    assert start(ward, session["id"], role="front_desk").status_code == 403
    assert start(ward, session["id"], role="admin").status_code == 403
    assert ward.call("POST", f"/sessions/{new_id()}/start").status_code == 404
    assert ward.session_row(session["id"])["status"] == "waiting"
    assert start(ward, session["id"], role="neurologist").status_code == 200


def test_a_neurologist_sets_the_spo2_scale(ward):
    session = checked_in_session(ward)
    path = f"/sessions/{session['id']}"
    assert ward.call("PATCH", path, role="nurse", json={"spo2_scale": 2}).status_code == 403
    assert ward.call("PATCH", path, role="neurologist", json={"spo2_scale": 3}).status_code == 422
    assert ward.call("PATCH", path, role="neurologist", json={"spo2_scale": "2"}).status_code == 422
    response = ward.call("PATCH", path, role="neurologist", json={"spo2_scale": 2})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["spo2_scale"] == 2
    assert ward.session_row(session["id"])["version"] == 2
    assert ward.call("POST", f"{path}/abort", json={"reason": "patient_left"}).status_code == 200
    assert ward.call("PATCH", path, role="neurologist", json={"spo2_scale": 1}).status_code == 409


def test_sessions_are_listed_by_status_room_and_the_clinics_local_date_and_paged(ward):
    room_a, room_b = room(ward, "Infusion A"), room(ward, "Infusion B")
    morning = started_session(ward, room_id=room_a)
    ward.clock.set(local(MONDAY, "23:30"))   # Tuesday in UTC, Monday in New York
    late = checked_in_session(ward, room_id=room_b)
    ward.clock.set(local(MONDAY + timedelta(days=1), "08:00"))
    tuesday = checked_in_session(ward, room_id=room_b)

    def listed(**query) -> list[str]:
        response = ward.call("GET", "/sessions", role="front_desk", query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [session["id"] for session in response.get_json()]

    assert listed() == [tuesday["id"], late["id"], morning["id"]]
    assert listed(date=MONDAY.isoformat()) == [late["id"], morning["id"]]
    assert listed(status="started") == [morning["id"]]
    assert listed(room_id=room_b, status="waiting") == [tuesday["id"], late["id"]]
    assert listed(limit=1, offset=1) == [late["id"]]
    assert ward.call("GET", "/sessions", query_string={"status": "finished"}).status_code == 422


def test_every_read_is_audited_with_the_patient_and_admins_read_nothing(ward):
    session = checked_in_session(ward)
    ward.call("GET", "/sessions", role="front_desk")
    ward.call("GET", "/board", role="neurologist")
    assert ward.call("GET", f"/sessions/{session['id']}", role="admin").status_code == 403
    trail = ward.audit_trail(patient_id=session["patient_id"])
    assert [(row["action"], row["resource"], row["outcome"]) for row in trail] == [
        ("read", "session", "allowed"), ("search", "session", "allowed"), ("read", "board", "allowed")]
    [denied] = ward.audit_trail(outcome="denied")
    assert (denied["resource_id"], denied["roles"]) == (session["id"], "admin")
    start(ward, session["id"])
    assert ward.audit_trail(patient_id=session["patient_id"], action="update")[0]["outcome"] == "allowed"
