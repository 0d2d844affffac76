"""The ward board: every infusion room in use with the session in it now, how it is going (minutes,
last vitals with their NEWS2, open alerts), whether a visitor is there, whether the plan changed,
whether the room has a monitor; the same number of queries however many rooms there are."""

from __future__ import annotations

from tests.integration.sessions.support import (
    Ward,
    acknowledge,
    checked_in_session,
    raised_alert,
    registered_monitor,
    room,
    scored_reading,
    start,
    started_session,
)


def board(ward: Ward, role: str = "front_desk") -> dict[str, dict]:
    response = ward.call("GET", "/board", role=role)
    assert response.status_code == 200, response.get_data(as_text=True)
    return {entry["name"]: entry for entry in response.get_json()["rooms"]}


def test_every_infusion_room_in_use_is_on_the_board_by_name_with_its_session_now(ward):
    one, two = room(ward, "Infusion 1"), room(ward, "Infusion 2")
    room(ward, "Infusion 3")
    room(ward, "Exam A", kind="exam")
    room(ward, "Infusion 4 (closed)", active=False)
    started = started_session(ward, room_id=one)
    ward.clock.advance(minutes=10)
    checked_in_session(ward, room_id=one)               # waits for the chair: the started one is shown
    waiting = checked_in_session(ward, room_id=two)
    ward.clock.advance(minutes=35)

    shown = board(ward)
    assert list(shown) == ["Infusion 1", "Infusion 2", "Infusion 3"]
    in_one = shown["Infusion 1"]["session"]
    assert (in_one["id"], in_one["status"], in_one["patient_id"]) == (started["id"], "started", started["patient_id"])
    assert (in_one["minutes_elapsed"], in_one["planned_minutes"]) == (45, 150)
    assert (in_one["last_vitals"], in_one["open_alerts"], in_one["visitor_present"], in_one["plan_changed"]) == (None, [], False, False)
    in_two = shown["Infusion 2"]["session"]
    assert (in_two["id"], in_two["status"], in_two["minutes_elapsed"]) == (waiting["id"], "waiting", None)
    assert shown["Infusion 3"]["session"] is None


def test_the_board_shows_the_last_vitals_with_their_news2_the_open_alerts_a_visitor_and_a_monitor(ward):
    room_id = room(ward, "Infusion 1")
    registered_monitor(ward, room_id)
    session = started_session(ward, room_id=room_id)
    scored_reading(ward, session["id"], 6, "urgent", {"respiratory_rate": 3, "spo2": 2, "heart_rate": 1})
    first = raised_alert(ward, session)
    ward.clock.advance(minutes=3)
    last = scored_reading(ward, session["id"], 4, None, {"respiratory_rate": 2, "heart_rate": 2})
    second = raised_alert(ward, session, level="emergency", news2_score=7)
    acknowledge(ward, first)
    visitor = ward.call("POST", f"/sessions/{session['id']}/visitors",
                        json={"name": "Alex Doe", "relationship": "brother", "adult_confirmed": True})
    assert visitor.status_code == 201, visitor.get_data(as_text=True)

    entry = board(ward, role="nurse")["Infusion 1"]
    assert entry["monitored"] is True
    on_board = entry["session"]
    assert on_board["last_vitals"] == {"reading_id": last, "measured_at": ward.clock().isoformat(), "news2_total": 4,
                                       "points": {"respiratory_rate": 2, "heart_rate": 2}, "level": None}
    assert [(alert["id"], alert["level"], alert["news2_score"]) for alert in on_board["open_alerts"]] == [(second, "emergency", 7)]
    assert on_board["visitor_present"] is True
    # The visitor's name is theirs: not on the board.
    assert "Alex" not in ward.call("GET", "/board").get_data(as_text=True)


def test_a_room_taken_out_of_use_stays_on_the_board_while_it_has_a_session(ward):
    room_id = room(ward, "Infusion 1", version=1)
    session = checked_in_session(ward, room_id=room_id)
    room(ward, "Infusion 1", active=False, version=2, room_id=room_id)
    assert board(ward)["Infusion 1"]["active"] is False
    assert start(ward, session["id"]).status_code == 200
    assert ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "equipment"}).status_code == 200
    assert board(ward) == {}


def test_the_board_asks_the_database_as_often_for_many_rooms_as_for_one(ward):
    import sqlalchemy as sa

    statements: list[str] = []

    def count(_connection, _cursor, statement, *_rest):
        statements.append(statement)

    started_session(ward, room_id=room(ward, "Infusion 1"))
    sa.event.listen(ward.engine, "before_cursor_execute", count)
    try:
        board(ward)
        with_one = len(statements)
        for number in range(2, 9):
            session = started_session(ward, room_id=room(ward, f"Infusion {number}"))
            scored_reading(ward, session["id"], 3, None)
            raised_alert(ward, session)
        statements.clear()
        board(ward)
        assert len(statements) == with_one
    finally:
        sa.event.remove(ward.engine, "before_cursor_execute", count)


def test_only_staff_who_care_for_patients_or_the_desk_read_the_board(ward):
    assert ward.call("GET", "/board", role="admin").status_code == 403
    assert ward.call("GET", "/board", role="front_desk").status_code == 200


def test_a_patient_left_waiting_since_an_earlier_day_is_not_the_one_in_the_room_today(ward):
    room_id = room(ward, "Infusion 1")
    checked_in_session(ward, room_id=room_id)          # checked in, never started nor cancelled
    ward.clock.advance(minutes=24 * 60)
    assert board(ward)["Infusion 1"]["session"] is None
    today = checked_in_session(ward, room_id=room_id)
    assert board(ward)["Infusion 1"]["session"]["id"] == today["id"]
