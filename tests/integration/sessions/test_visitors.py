"""Visitors over HTTP, on PostgreSQL and on SQLite: one adult at a time, the second refused naming
the first, another welcome once the first has left; two arriving at once make one visit (the
database's partial unique index decides); a visitor's name in no event and no log line."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sessions.db import care
from tests.integration.sessions.support import checked_in_session, new_id, started_session
from tests.integration.sessions.support_care import care_rows, race

ALEX = {"name": "Alex Moreau", "relationship": "brother", "adult_confirmed": True}
JO = {"name": "Jo Lindqvist", "relationship": "friend", "adult_confirmed": True}


def arrive(ward, session_id: str, visitor: dict, role: str = "nurse"):
    return ward.call("POST", f"/sessions/{session_id}/visitors", role=role, subject="nurse-ana", json=visitor)


def arrived(ward, session_id: str, visitor: dict) -> dict:
    response = arrive(ward, session_id, visitor)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def leave(ward, session_id: str, visitor_id: str, role: str = "nurse"):
    return ward.call("POST", f"/sessions/{session_id}/visitors/{visitor_id}/leave", role=role, subject="nurse-bo")


def test_a_second_visitor_is_refused_naming_the_one_there_and_welcome_once_they_left(ward):
    session = checked_in_session(ward)  # waiting: a visitor may sit with the patient before the start too
    alex = arrived(ward, session["id"], ALEX)
    assert (alex["name"], alex["relationship"], alex["arrived_by"], alex["left_at"]) == ("Alex Moreau", "brother", "nurse-ana", None)
    response = arrive(ward, session["id"], JO)
    assert response.status_code == 409
    details = response.get_json()["error"]["details"]
    assert (details["visitor_id"], details["name"]) == (alex["id"], "Alex Moreau")
    assert care_rows(ward)["visitors"] == 1
    ward.clock.advance(minutes=40)
    gone = leave(ward, session["id"], alex["id"])
    assert gone.status_code == 200 and gone.get_json()["left_by"] == "nurse-bo"
    assert gone.get_json()["left_at"] == ward.clock().isoformat()
    jo = arrived(ward, session["id"], JO)
    listed = ward.call("GET", f"/sessions/{session['id']}/visitors", role="front_desk")
    assert listed.status_code == 200
    assert [(item["id"], item["left_at"] is None) for item in listed.get_json()] == [(alex["id"], False), (jo["id"], True)]
    [audit] = ward.audit_trail(action="read", resource="visitor")
    assert audit["patient_id"] == session["patient_id"]


def test_leaving_twice_or_someone_not_there_is_refused(ward):
    session = started_session(ward)
    alex = arrived(ward, session["id"], ALEX)
    assert leave(ward, session["id"], alex["id"]).status_code == 200
    again = leave(ward, session["id"], alex["id"])
    assert again.status_code == 409 and again.get_json()["error"]["details"]["visitor_id"] == alex["id"]
    other = started_session(ward)
    assert leave(ward, other["id"], alex["id"]).status_code == 404
    assert leave(ward, other["id"], new_id()).status_code == 404
    assert leave(ward, new_id(), alex["id"]).status_code == 404


def test_visitors_come_to_open_sessions_and_may_leave_after_the_end(ward):
    session = started_session(ward)
    alex = arrived(ward, session["id"], ALEX)
    ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "patient_unwell"})
    assert leave(ward, session["id"], alex["id"]).status_code == 200
    response = arrive(ward, session["id"], JO)
    assert response.status_code == 409 and response.get_json()["error"]["details"]["status"] == "aborted"
    assert arrive(ward, new_id(), JO).status_code == 404
    assert care_rows(ward)["visitors"] == 1


@pytest.mark.parametrize("changes, field", [
    ({"adult_confirmed": False}, "adult_confirmed"), ({"adult_confirmed": "yes"}, "adult_confirmed"),
    ({"adult_confirmed": None}, "adult_confirmed"), ({"name": " "}, "name"), ({"relationship": "a\x07b"}, "relationship")])
def test_a_visitor_not_confirmed_as_an_adult_or_unnamed_is_422(ward, changes, field):
    session = started_session(ward)
    response = arrive(ward, session["id"], {**ALEX, **changes})
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]
    assert care_rows(ward)["visitors"] == 0


def test_only_nurses_and_neurologists_let_visitors_in_the_front_desk_reads(ward):
    session = started_session(ward)
    assert arrive(ward, session["id"], ALEX, role="front_desk").status_code == 403
    assert arrive(ward, session["id"], ALEX, role="admin").status_code == 403
    assert ward.call("GET", f"/sessions/{session['id']}/visitors", role="admin").status_code == 403
    assert care_rows(ward)["visitors"] == 0
    alex = arrive(ward, session["id"], ALEX, role="neurologist").get_json()
    assert leave(ward, session["id"], alex["id"], role="front_desk").status_code == 403
    assert leave(ward, session["id"], alex["id"], role="neurologist").status_code == 200
    [audit] = ward.audit_trail(action="create", resource="visitor", outcome="allowed")
    assert (audit["patient_id"], audit["resource_id"]) == (session["patient_id"], alex["id"])


def test_a_visitors_name_is_in_no_event_and_no_log_line(ward, caplog):
    caplog.set_level(logging.DEBUG)
    session = started_session(ward)
    alex = arrived(ward, session["id"], ALEX)
    arrive(ward, session["id"], JO)
    leave(ward, session["id"], alex["id"])
    ward.call("GET", f"/sessions/{session['id']}/visitors")
    assert caplog.records, "the requests were logged"
    for name in ("Alex", "Moreau", "Jo Lindqvist", "Lindqvist"):
        assert name not in caplog.text
        assert all(name not in str(event) for event in ward.events())


def test_the_board_learns_which_sessions_have_a_visitor(ward):
    with_one, without, left = (started_session(ward) for _ in range(3))
    arrived(ward, with_one["id"], ALEX)
    gone = arrived(ward, left["id"], JO)
    leave(ward, left["id"], gone["id"])
    with ward.engine.connect() as connection:
        assert care.visitors_present(connection, [with_one["id"], without["id"], left["id"]]) == {with_one["id"]}
        assert care.visitors_present(connection, []) == set()


ROUNDS = 5


def test_two_visitors_arriving_at_once_make_one_visit(racing_ward):
    ward = racing_ward
    for round_number in range(ROUNDS):
        session = started_session(ward)
        results = race(ward, [(f"/sessions/{session['id']}/visitors", visitor) for visitor in (ALEX, JO)])
        assert sorted(status for status, _ in results) == [201, 409], (round_number, results)
        [winner] = [answer for status, answer in results if status == 201]
        [refused] = [answer for status, answer in results if status == 409]
        assert (refused["error"]["details"]["visitor_id"], refused["error"]["details"]["name"]) == (winner["id"], winner["name"])
        assert len(ward.rows(care.visitors, session_id=session["id"])) == 1
        ward.clock.advance(minutes=1)


def test_the_database_itself_refuses_a_second_present_visitor(ward):
    """The rule is the index's, not the service's: rows written past the application are refused too."""
    session = started_session(ward)
    now = ward.clock()

    def visitor(left_at=None):
        return {"id": new_id(), "session_id": session["id"], "name": "V", "relationship": "friend", "adult_confirmed": True,
                "arrived_at": now, "arrived_by": "x", "left_at": left_at, "left_by": None}

    with ward.engine.begin() as connection:
        connection.execute(care.visitors.insert().values(**visitor(left_at=now)))
        connection.execute(care.visitors.insert().values(**visitor(left_at=now + timedelta(minutes=1))))
        connection.execute(care.visitors.insert().values(**visitor()))
    with pytest.raises(sa.exc.IntegrityError):
        with ward.engine.begin() as connection:
            connection.execute(care.visitors.insert().values(**visitor()))
    assert care_rows(ward)["visitors"] == 3
