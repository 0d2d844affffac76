"""Pain scores over HTTP, on PostgreSQL and on SQLite: 0-10 with the time measured, on a waiting
session (the pain the patient came with) and a started one; the pain before and after the start as
the discharge reads them; times in the future and ended sessions refused, nothing written."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessions.db import care
from tests.integration.sessions.support import checked_in_session, new_id, start, started_session
from tests.integration.sessions.support_care import care_rows


def score(ward, session_id: str, value, measured_at=None, role: str = "nurse"):
    body = {"score": value, "measured_at": (measured_at or ward.clock()).isoformat()}
    return ward.call("POST", f"/sessions/{session_id}/pain-scores", role=role, subject="nurse-ana", json=body)


def test_pain_before_the_start_and_during_the_infusion_are_recorded_and_read_in_time_order(ward):
    session = checked_in_session(ward)
    arrived = ward.clock()
    ward.clock.advance(minutes=5)
    response = score(ward, session["id"], 8, measured_at=arrived)
    assert response.status_code == 201, response.get_data(as_text=True)
    recorded = response.get_json()
    assert (recorded["score"], recorded["loinc"], recorded["recorded_by"]) == (8, "72514-3", "nurse-ana")
    assert score(ward, session["id"], 7).status_code == 201
    started = start(ward, session["id"]).get_json()["started_at"]
    ward.clock.advance(minutes=90)
    assert score(ward, session["id"], 3, role="neurologist").status_code == 201
    assert score(ward, session["id"], 2, measured_at=ward.clock() - timedelta(minutes=30)).status_code == 201
    answer = ward.call("GET", f"/sessions/{session['id']}/pain-scores")
    assert answer.status_code == 200
    assert [item["score"] for item in answer.get_json()] == [8, 7, 2, 3]
    [audit] = ward.audit_trail(action="read", resource="pain_score")
    assert audit["patient_id"] == session["patient_id"]
    with ward.engine.connect() as connection:
        row = ward.session_row(session["id"])
        assert care.pain_before_after(connection, session["id"], row["started_at"]) == (7, 3)
        assert started == row["started_at"].isoformat()


def test_pain_before_and_after_with_none_on_either_side(ward):
    session = started_session(ward)
    with ward.engine.connect() as connection:
        assert care.pain_before_after(connection, session["id"], ward.session_row(session["id"])["started_at"]) == (None, None)
    assert score(ward, session["id"], 6).status_code == 201  # measured at the very start: before
    with ward.engine.connect() as connection:
        started_at = ward.session_row(session["id"])["started_at"]
        assert care.pain_before_after(connection, session["id"], started_at) == (6, None)
        assert care.pain_before_after(connection, session["id"], None) == (6, None)


@pytest.mark.parametrize("value", [-1, 11, 5.5, "5", None, True])
def test_a_score_outside_0_to_10_is_422_and_nothing_is_written(ward, value):
    session = started_session(ward)
    response = score(ward, session["id"], value)
    assert response.status_code == 422
    assert "score" in response.get_json()["error"]["details"]
    assert care_rows(ward)["pain_scores"] == 0


def test_a_score_timed_in_the_future_is_refused(ward):
    session = started_session(ward)
    assert score(ward, session["id"], 4, measured_at=ward.clock() + timedelta(seconds=120)).status_code == 201
    response = score(ward, session["id"], 4, measured_at=ward.clock() + timedelta(seconds=121))
    assert response.status_code == 422
    assert "in the future" in response.get_json()["error"]["details"]["measured_at"]
    assert care_rows(ward)["pain_scores"] == 1


def test_an_ended_or_unknown_session_takes_no_pain_score(ward):
    session = started_session(ward)
    ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "patient_left"})
    response = score(ward, session["id"], 4)
    assert response.status_code == 409 and response.get_json()["error"]["details"]["status"] == "aborted"
    assert score(ward, new_id(), 4).status_code == 404
    assert ward.call("GET", f"/sessions/{new_id()}/pain-scores").status_code == 404
    assert care_rows(ward)["pain_scores"] == 0


def test_only_nurses_and_neurologists_record_and_read_pain(ward):
    session = started_session(ward)
    for role in ("front_desk", "admin"):
        assert score(ward, session["id"], 4, role=role).status_code == 403
        assert ward.call("GET", f"/sessions/{session['id']}/pain-scores", role=role).status_code == 403
    assert care_rows(ward)["pain_scores"] == 0
    assert score(ward, session["id"], 4, role="neurologist").status_code == 201
    [audit] = ward.audit_trail(action="create", resource="pain_score", outcome="allowed")
    assert audit["patient_id"] == session["patient_id"]
