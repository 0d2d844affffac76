"""How a session ends: a discharge to an adult escort, refused with every unmet condition listed and
nothing written, or completing the session with one sessions.session.completed carrying what records
and scheduling need; an early discharge by a neurologist only; an abort with a reason code (the note
stays in sessions)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from clinic import events
from sessions.db import tables
from tests.integration.sessions.support import (
    DISCHARGE,
    Ward,
    acknowledge,
    checked_in_session,
    new_id,
    raised_alert,
    scored_reading,
    started_session,
)


def discharge(ward: Ward, session_id: str, body: dict | None = None, role: str = "nurse"):
    return ward.call("POST", f"/sessions/{session_id}/discharge", role=role, json=DISCHARGE if body is None else body)


def abort(ward: Ward, session_id: str, body: dict, role: str = "nurse"):
    return ward.call("POST", f"/sessions/{session_id}/abort", role=role, json=body)


def unmet(response) -> list[str]:
    assert response.status_code == 422, response.get_data(as_text=True)
    return [item["condition"] for item in response.get_json()["error"]["details"]["unmet"]]


def test_a_discharge_too_soon_without_escort_or_instructions_and_with_an_alert_lists_every_unmet_condition(ward):
    session = started_session(ward)
    scored_reading(ward, session["id"], 6, "urgent")
    raised_alert(ward, session)
    ward.clock.advance(minutes=30)
    before = ward.session_row(session["id"])

    response = discharge(ward, session["id"], {})
    assert unmet(response) == ["escort", "instructions", "open_alerts", "last_news2", "planned_minutes"]
    details = response.get_json()["error"]["details"]["unmet"]
    assert details[1]["missing"] == ["rest_today", "call_if_problems", "return_visit"]
    assert "30 of its 150 planned minutes" in details[4]["message"]
    # Nothing written: the session as it was, no event.
    assert ward.session_row(session["id"]) == before
    assert ward.events(events.SESSION_COMPLETED) == []


def test_confirmations_left_out_are_listed_with_the_other_unmet_conditions(ward):
    session = started_session(ward)
    raised_alert(ward, session)
    ward.clock.advance(minutes=30)
    escort = {key: value for key, value in DISCHARGE["escort"].items() if key != "adult_present"}
    response = discharge(ward, session["id"], {"escort": escort, "instructions": {"rest_today": True}})
    assert unmet(response) == ["escort", "instructions", "open_alerts", "planned_minutes"]
    assert response.get_json()["error"]["details"]["unmet"][1]["missing"] == ["call_if_problems", "return_visit"]
    assert ward.session_row(session["id"])["status"] == "started"


def test_each_condition_is_named_on_its_own(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=150)
    escort_absent = {**DISCHARGE, "escort": {**DISCHARGE["escort"], "adult_present": False}}
    assert unmet(discharge(ward, session["id"], escort_absent)) == ["escort"]
    one_instruction_missing = {**DISCHARGE, "instructions": {**DISCHARGE["instructions"], "return_visit": False}}
    response = discharge(ward, session["id"], one_instruction_missing)
    assert unmet(response) == ["instructions"]
    assert response.get_json()["error"]["details"]["unmet"][0]["missing"] == ["return_visit"]

    alert_id = raised_alert(ward, session, kind="monitor_silent", news2_score=None)
    assert unmet(discharge(ward, session["id"])) == ["open_alerts"]
    acknowledge(ward, alert_id)
    scored_reading(ward, session["id"], 7, "emergency")
    assert unmet(discharge(ward, session["id"])) == ["last_news2"]
    # The last score is what counts: a calm reading after it, and the patient may go.
    ward.clock.advance(minutes=5)
    scored_reading(ward, session["id"], 1, None)
    assert discharge(ward, session["id"]).status_code == 200


def test_a_discharge_completes_the_session_and_session_completed_leaves_once_with_the_record(ward):
    session = started_session(ward)
    started_at = ward.clock()
    ketorolac = next(drug for drug in session["drugs"] if drug["name"] == "ketorolac")
    pain = f"/sessions/{session['id']}/pain-scores"
    assert ward.call("POST", pain, json={"score": 8, "measured_at": started_at.isoformat()}).status_code == 201
    ward.clock.advance(minutes=10)
    given = ward.call("POST", f"/sessions/{session['id']}/medications",
                      json={"session_drug_id": ketorolac["id"], "dose": "30", "unit": "mg", "route": "IV",
                            "given_at": ward.clock().isoformat()})
    assert given.status_code == 201, given.get_data(as_text=True)
    given_at = ward.clock()
    scored_reading(ward, session["id"], 5, "urgent")
    alert_id = raised_alert(ward, session)
    acknowledge(ward, alert_id)
    ward.clock.advance(minutes=100)
    scored_reading(ward, session["id"], 2, None)
    ward.clock.advance(minutes=50)
    assert ward.call("POST", pain, json={"score": 2, "measured_at": ward.clock().isoformat()}).status_code == 201

    response = discharge(ward, session["id"])
    assert response.status_code == 200, response.get_data(as_text=True)
    done = response.get_json()
    assert (done["status"], done["ended_at"], done["ended_by"], done["early_discharge_reason"]) == (
        "completed", ward.clock().isoformat(), "tester", None)
    assert (done["escort"], done["instructions_given"]) == (DISCHARGE["escort"], DISCHARGE["instructions"])
    [event] = ward.events(events.SESSION_COMPLETED)
    assert event["data"] == {
        "session_id": session["id"], "appointment_id": session["appointment_id"], "patient_id": session["patient_id"],
        "room_id": session["room_id"], "room_name": session["room_name"], "started_at": started_at.isoformat(),
        "ended_at": ward.clock().isoformat(),
        "drugs_given": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "given_at": given_at.isoformat(), "rate": None}],
        "pain_before": 8, "pain_after": 2, "highest_news2": 5,
        "alerts": [{"kind": "news2", "level": "urgent", "news2_score": 5, "observed_at": given_at.isoformat(), "escalation": False}],
    }
    # The escort is PHI: kept in sessions, never in the event.
    assert "Sam Rivera" not in json.dumps(event)

    again = discharge(ward, session["id"])
    assert again.status_code == 409
    assert again.get_json()["error"]["details"]["status"] == "completed"
    assert len(ward.events(events.SESSION_COMPLETED)) == 1


def test_a_session_not_started_cannot_be_discharged(ward):
    session = checked_in_session(ward)
    ward.clock.advance(minutes=200)
    response = discharge(ward, session["id"])
    assert response.status_code == 409
    assert response.get_json()["error"]["details"] == {"session_id": session["id"], "status": "waiting"}
    assert discharge(ward, new_id()).status_code == 404


def test_only_a_neurologist_discharges_early_and_with_a_reason(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=119)
    with_reason = {**DISCHARGE, "early_discharge_reason": "headache resolved; patient asked to leave"}
    response = discharge(ward, session["id"], with_reason, role="nurse")
    assert unmet(response) == ["planned_minutes"]
    assert "only a neurologist" in response.get_json()["error"]["details"]["unmet"][0]["message"]
    response = discharge(ward, session["id"], role="neurologist")
    assert unmet(response) == ["planned_minutes"]
    assert "give the reason" in response.get_json()["error"]["details"]["unmet"][0]["message"]
    assert discharge(ward, session["id"], role="front_desk").status_code == 403

    response = discharge(ward, session["id"], with_reason, role="neurologist")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["early_discharge_reason"] == "headache resolved; patient asked to leave"
    [event] = ward.events(events.SESSION_COMPLETED)
    assert "early_discharge_reason" not in event["data"]


def test_at_the_planned_minutes_a_nurse_discharges(ward):
    session = started_session(ward, minutes=150)
    ward.clock.advance(minutes=149)
    assert unmet(discharge(ward, session["id"])) == ["planned_minutes"]
    ward.clock.advance(minutes=1)
    assert discharge(ward, session["id"]).status_code == 200


def test_an_abort_emits_the_reason_code_only_and_keeps_the_note_here(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=40)
    note = "Rash on both forearms twenty minutes in; infusion stopped."
    response = abort(ward, session["id"], {"reason": "adverse_reaction", "note": note}, role="neurologist")
    assert response.status_code == 200, response.get_data(as_text=True)
    aborted = response.get_json()
    assert (aborted["status"], aborted["abort_reason"], aborted["abort_note"]) == ("aborted", "adverse_reaction", note)
    [event] = ward.events(events.SESSION_ABORTED)
    assert event["data"] == {"session_id": session["id"], "appointment_id": session["appointment_id"],
                             "patient_id": session["patient_id"], "room_id": session["room_id"],
                             "ended_at": ward.clock().isoformat(), "reason": "adverse_reaction"}
    with ward.engine.connect() as connection:
        bodies = connection.execute(sa.select(tables.outbox.c.body)).scalars().all()
    assert not any("Rash" in body for body in bodies)
    assert abort(ward, session["id"], {"reason": "other"}).status_code == 409
    assert discharge(ward, session["id"]).status_code == 409


def test_a_waiting_session_may_be_aborted_the_patient_going_home_without_the_infusion(ward):
    session = checked_in_session(ward)
    response = abort(ward, session["id"], {"reason": "patient_unwell"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["started_at"] is None
    [event] = ward.events(events.SESSION_ABORTED)
    assert event["data"]["reason"] == "patient_unwell"


def test_an_abort_needs_a_known_reason_and_a_nurse_or_neurologist(ward):
    session = started_session(ward)
    assert abort(ward, session["id"], {"reason": "bored"}).status_code == 422
    assert abort(ward, session["id"], {}).status_code == 422
    assert abort(ward, session["id"], {"reason": "other"}, role="front_desk").status_code == 403
    assert abort(ward, new_id(), {"reason": "other"}).status_code == 404
    assert ward.session_row(session["id"])["status"] == "started"
    assert ward.events(events.SESSION_ABORTED) == []
