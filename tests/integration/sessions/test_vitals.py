"""Vital signs as bedside monitors post them and nurses enter them: stored once whatever is sent again,
refused whole when any reading is wrong (nothing stored), scored with NEWS2 (partial sets completed
from the readings just before), voided readings left out. On PostgreSQL and SQLite."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from clinic.testing import assert_error
from sessions.db import monitoring
from tests.integration.sessions.support import NY, checked_in_session, room, started_session
from tests.integration.sessions.support_monitoring import (
    EMERGENCY,
    by_hand,
    monitor,
    post_vitals,
    posted,
    reading,
)


def stored(ward, **where) -> list[dict]:
    return sorted(ward.rows(monitoring.readings, **where), key=lambda row: (row["measured_at"], row["received_at"]))


def a_monitored_session(ward):
    room_id = room(ward)
    device, token = monitor(ward, room_id)
    session = started_session(ward, room_id=room_id)
    return session, device, token


def test_a_monitor_posts_readings_to_the_session_started_in_its_room_each_scored(ward):
    session, device, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    first, second = ward.clock() - timedelta(minutes=1), ward.clock()
    answer = posted(ward, token, reading(first), reading(second, EMERGENCY))
    assert answer["session_id"] == session["id"]
    steady, ill = answer["readings"]
    assert (steady["device_id"], steady["already_stored"]) == (device["id"], False)
    assert "heart_rate" not in steady, "a post is answered with where each reading is kept and its score, not its values again"
    assert steady["news2"] == {"total": 0, "complete": True, "filled_in": [],
                               "points": {"respiratory_rate": 0, "spo2": 0, "on_oxygen": 0, "systolic": 0, "heart_rate": 0,
                                          "consciousness": 0, "temperature": 0}}
    assert steady["alert_level"] is None
    assert ill["news2"]["total"] == 8 and ill["news2"]["points"]["heart_rate"] == 3 and ill["alert_level"] == "emergency"
    rows = stored(ward, session_id=session["id"])
    assert [row["id"] for row in rows] == [steady["id"], ill["id"]]
    assert rows[1]["heart_rate"] == 135 and rows[1]["news2_total"] == 8 and rows[1]["device_id"] == device["id"]
    assert str(rows[0]["temperature"]) == "36.8"
    [audit] = ward.audit_trail(subject=f"device:{device['id']}")
    assert (audit["action"], audit["resource"], audit["resource_id"], audit["patient_id"], audit["outcome"]) == \
        ("create", "vitals", session["id"], session["patient_id"], "allowed")


def test_a_batch_sent_again_stores_nothing_twice_and_gets_the_same_answer(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    # Timed in the clinic's own zone: answered in UTC, the first time and again.
    batch = [reading((ward.clock() - timedelta(seconds=30 * n)).astimezone(NY)) for n in range(3)]
    first = post_vitals(ward, token, *batch)
    again = post_vitals(ward, token, *batch)
    assert (first.status_code, again.status_code) == (201, 201)
    strip = [{key: value for key, value in row.items() if key != "already_stored"} for row in first.get_json()["readings"]]
    assert [{key: value for key, value in row.items() if key != "already_stored"} for row in again.get_json()["readings"]] == strip
    assert all(row["already_stored"] for row in again.get_json()["readings"])
    assert len(stored(ward, session_id=session["id"])) == 3


def test_a_partly_repeated_batch_stores_only_the_new_readings_and_says_which_were_there(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    old, new = ward.clock() - timedelta(minutes=1), ward.clock()
    first = posted(ward, token, reading(old))
    answer = posted(ward, token, reading(old), reading(new, heart_rate=80), reading(new, heart_rate=80))
    assert [row["already_stored"] for row in answer["readings"]] == [True, False, False]
    assert answer["readings"][0]["id"] == first["readings"][0]["id"]
    assert answer["readings"][1]["id"] == answer["readings"][2]["id"], "one time in a batch twice is one reading"
    assert [row["heart_rate"] for row in stored(ward, session_id=session["id"])] == [72, 80]


def test_a_batch_sent_twice_at_the_same_moment_is_stored_once(racing_ward):
    ward = racing_ward
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    batch = [reading(ward.clock() - timedelta(seconds=10 * n)) for n in range(20)]
    start = threading.Barrier(4)
    answers = []

    def monitor_sending():
        client = ward.app.test_client()
        start.wait()
        response = client.post("/vitals", json={"readings": batch}, headers={"Authorization": f"Bearer {token}"})
        answers.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=monitor_sending) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [status for status, _ in answers] == [201] * 4, answers
    assert len({tuple(row["id"] for row in body["readings"]) for _, body in answers}) == 1, "every answer names the same readings"
    assert sum(not row["already_stored"] for _, body in answers for row in body["readings"]) == 20
    assert len(stored(ward, session_id=session["id"])) == 20


def test_readings_stored_between_a_posts_read_and_its_write_are_answered_as_stored(ward, monkeypatch):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    batch = [reading(ward.clock() - timedelta(seconds=10 * n)) for n in range(3)]
    first = posted(ward, token, *batch)
    found = monitoring.device_context
    calls = []

    def blind_the_first_time(*args, **kwargs):
        context, sent = found(*args, **kwargs)
        calls.append(len(sent))
        return context, (sent if len(calls) > 1 else [])   # as if the first post had not committed yet

    monkeypatch.setattr(monitoring, "device_context", blind_the_first_time)
    again = posted(ward, token, *batch)
    assert calls == [3, 3], "read, refused by the unique key, read again"
    assert [row["id"] for row in again["readings"]] == [row["id"] for row in first["readings"]]
    assert all(row["already_stored"] for row in again["readings"])
    assert len(stored(ward, session_id=session["id"])) == 3


def test_other_values_for_a_time_already_stored_are_refused_naming_the_reading_and_nothing_is_stored(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    old, new = ward.clock() - timedelta(minutes=1), ward.clock()
    first = posted(ward, token, reading(old))
    error = assert_error(post_vitals(ward, token, reading(new), reading(old, heart_rate=99)), 409, "conflict")
    assert error["details"]["readings"] == {"1": {"reading_id": first["readings"][0]["id"], "measured_at": old.isoformat(),
                                                  "differs_in": ["heart_rate"]}}
    assert len(stored(ward, session_id=session["id"])) == 1
    error = assert_error(post_vitals(ward, token, reading(new), reading(new, heart_rate=99)), 422)
    assert "1" in error["details"]["readings"]


def test_no_session_started_in_the_monitors_room_is_a_409_and_nothing_is_stored(ward):
    room_id = room(ward)
    device, token = monitor(ward, room_id)
    error = assert_error(post_vitals(ward, token, reading(ward.clock())), 409, "conflict")
    assert error["details"]["room_id"] == room_id
    waiting = checked_in_session(ward, room_id=room_id)
    assert_error(post_vitals(ward, token, reading(ward.clock())), 409)
    assert stored(ward) == []
    assert ward.audit_trail(subject=f"device:{device['id']}") == []
    assert waiting["status"] == "waiting"


def test_an_unknown_or_revoked_token_is_a_401(ward):
    _, device, token = a_monitored_session(ward)
    ward.clock.advance(minutes=1)
    assert_error(post_vitals(ward, "dev_" + "x" * 43, reading(ward.clock())), 401, "unauthorized")
    assert_error(ward.client.post("/vitals", json={"readings": [reading(ward.clock())]}), 401)
    assert ward.call("POST", f"/devices/{device['id']}/revoke", role="admin").status_code == 200
    assert_error(post_vitals(ward, token, reading(ward.clock())), 401, "unauthorized")
    assert stored(ward) == []


def test_values_no_living_person_shows_are_refused_naming_the_reading_and_the_field(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    at = ward.clock()
    error = assert_error(post_vitals(ward, token, reading(at - timedelta(minutes=1)), reading(at, heart_rate=400)), 422)
    assert list(error["details"]["readings"]) == ["1"] and "heart_rate" in error["details"]["readings"]["1"]
    error = assert_error(post_vitals(ward, token, reading(at, systolic=80, diastolic=90)), 422)
    assert "diastolic" in error["details"]["readings"]["0"]
    error = assert_error(post_vitals(ward, token, reading(at, consciousness="drowsy", spo2=97.5)), 422)
    assert set(error["details"]["readings"]["0"]) == {"consciousness", "spo2"}
    assert_error(post_vitals(ward, token, {"measured_at": at.isoformat()}), 422)
    # A temperature sent as a JSON number too long to read to a tenth: refused by name, by a monitor or a nurse.
    for response in (post_vitals(ward, token, reading(at, temperature=1e30)), by_hand(ward, session["id"], reading(at, temperature=1e30))):
        assert "temperature" in assert_error(response, 422)["details"]["readings"]["0"]
    assert_error(post_vitals(ward, token, *[reading(at - timedelta(seconds=n)) for n in range(101)]), 422)
    assert_error(post_vitals(ward, token), 422)
    assert stored(ward) == []


def test_readings_timed_in_the_future_or_before_the_session_started_are_refused_naming_them(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    now = ward.clock()
    error = assert_error(post_vitals(ward, token, reading(now), reading(now + timedelta(minutes=3)),
                                     reading(now - timedelta(minutes=6))), 422)
    assert set(error["details"]["readings"]) == {"1", "2"}
    assert "measured_at" in error["details"]["readings"]["1"] and "before the session started" in \
        error["details"]["readings"]["2"]["measured_at"][0]
    assert posted(ward, token, reading(now + timedelta(seconds=100)))["readings"][0]["already_stored"] is False  # within the skew
    assert len(stored(ward, session_id=session["id"])) == 1


def test_staff_tokens_cannot_post_for_a_monitor_and_a_device_token_can_do_nothing_else(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=1)
    assert_error(ward.call("POST", "/vitals", role="nurse", json={"readings": [reading(ward.clock())]}), 403, "forbidden")
    device_headers = {"Authorization": f"Bearer {token}"}
    for method, path, body in (("GET", "/devices", None), ("GET", f"/sessions/{session['id']}", None),
                               ("POST", f"/sessions/{session['id']}/vitals", {"readings": [reading(ward.clock())]}),
                               ("GET", f"/sessions/{session['id']}/vitals", None), ("GET", "/alerts", None), ("GET", "/board", None),
                               ("POST", "/devices", {"room_id": session["room_id"], "name": "Another"})):
        assert_error(ward.client.open(path, method=method, json=body, headers=device_headers), 401)
    assert stored(ward) == []


def test_a_partial_set_is_completed_from_the_latest_values_within_the_scoring_window(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=30)
    now = ward.clock()
    posted(ward, token, reading(now - timedelta(minutes=20), EMERGENCY), reading(now - timedelta(minutes=10)))
    [partial] = posted(ward, token, {"measured_at": now.isoformat(), "heart_rate": 115})["readings"]
    # Pulse 115 scores 2; the other six come from the full set 10 minutes earlier (all 0), not from the older one.
    assert partial["news2"]["total"] == 2 and partial["news2"]["complete"] is True
    assert set(partial["news2"]["filled_in"]) == {"respiratory_rate", "spo2", "on_oxygen", "systolic", "consciousness", "temperature"}
    [kept] = ward.rows(monitoring.readings, id=partial["id"])
    assert kept["heart_rate"] == 115 and kept["systolic"] is None, "the reading is stored as it came"
    ward.clock.advance(minutes=30)
    [alone] = posted(ward, token, {"measured_at": ward.clock().isoformat(), "respiratory_rate": 26})["readings"]
    assert alone["news2"] == {"total": 3, "points": {"respiratory_rate": 3}, "complete": False, "filled_in": []}
    assert alone["alert_level"] == "urgent", "a 3 in a single parameter"
    [blank] = by_hand(ward, session["id"], {"measured_at": ward.clock().isoformat(), "diastolic": 70}).get_json()["readings"]
    assert blank["news2"]["points"]["respiratory_rate"] == 3, "filled in from the reading just before"


def test_a_nurse_enters_baseline_readings_on_a_waiting_session_and_none_once_it_has_ended(ward):
    session = checked_in_session(ward)
    ward.clock.advance(minutes=2)
    response = by_hand(ward, session["id"], reading(ward.clock()))
    assert response.status_code == 201, response.get_data(as_text=True)
    [baseline] = response.get_json()["readings"]
    assert (baseline["entered_by"], baseline["device_id"]) == ("nurse-ines", None)
    assert_error(by_hand(ward, session["id"], reading(ward.clock() - timedelta(minutes=5))), 422)  # before the check-in
    assert_error(by_hand(ward, session["id"], reading(ward.clock()), role="front_desk"), 403)
    assert_error(by_hand(ward, "00000000-0000-4000-8000-000000000000", reading(ward.clock())), 404)
    aborted = ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "patient_unwell"})
    assert aborted.status_code == 200, aborted.get_data(as_text=True)
    error = assert_error(by_hand(ward, session["id"], reading(ward.clock())), 409, "conflict")
    assert error["details"]["status"] == "aborted"
    assert len(stored(ward, session_id=session["id"])) == 1
    [audit] = ward.audit_trail(subject="nurse-ines", action="create", outcome="allowed")
    assert (audit["patient_id"], audit["resource_id"]) == (session["patient_id"], session["id"])


def test_a_sessions_readings_are_listed_newest_last_in_pages_and_since_a_moment(ward):
    session, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=10)
    times = [ward.clock() - timedelta(minutes=n) for n in (4, 3, 2, 1)]
    posted(ward, token, *[reading(at) for at in reversed(times)])
    listed = ward.call("GET", f"/sessions/{session['id']}/vitals")
    assert listed.status_code == 200
    assert [row["measured_at"] for row in listed.get_json()] == [at.isoformat() for at in times]
    page = ward.call("GET", f"/sessions/{session['id']}/vitals", query_string={"limit": 2, "offset": 1}).get_json()
    assert [row["measured_at"] for row in page] == [at.isoformat() for at in times[1:3]]
    since = ward.call("GET", f"/sessions/{session['id']}/vitals", query_string={"since": times[1].isoformat()}).get_json()
    assert [row["measured_at"] for row in since] == [at.isoformat() for at in times[2:]]
    assert all(row["news2"]["total"] == 0 for row in since)
    assert_error(ward.call("GET", "/sessions/00000000-0000-4000-8000-000000000000/vitals"), 404)
    assert ward.audit_trail(action="read", resource="vitals", outcome="allowed")[-1]["patient_id"] == session["patient_id"]


def test_a_voided_reading_stays_in_the_history_and_is_left_out_of_scores_from_then_on(ward):
    session = started_session(ward)
    ward.clock.advance(minutes=10)
    now = ward.clock()
    [wrong] = by_hand(ward, session["id"], reading(now - timedelta(minutes=2), EMERGENCY)).get_json()["readings"]
    assert wrong["alert"]["level"] == "emergency"
    void = ward.call("POST", f"/sessions/{session['id']}/vitals/{wrong['id']}/void", json={"reason": "typed into the wrong chart"})
    assert void.status_code == 200, void.get_data(as_text=True)
    assert void.get_json()["voided_at"] is not None and void.get_json()["void_reason"] == "typed into the wrong chart"
    [partial] = by_hand(ward, session["id"], {"measured_at": now.isoformat(), "spo2": 97}).get_json()["readings"]
    assert partial["news2"] == {"total": 0, "points": {"spo2": 0}, "complete": False, "filled_in": []}
    [listed] = [row for row in ward.call("GET", f"/sessions/{session['id']}/vitals").get_json() if row["id"] == wrong["id"]]
    assert listed["voided_by"] == "tester" and listed["news2"]["total"] == 8
    with ward.engine.connect() as connection:
        assert monitoring.highest_news2(connection, session["id"]) == 0
        assert monitoring.latest_scores(connection, [session["id"]])[session["id"]]["reading_id"] == partial["id"]
    assert_error(ward.call("POST", f"/sessions/{session['id']}/vitals/{wrong['id']}/void", json={"reason": "again"}), 409)
    assert_error(ward.call("POST", f"/sessions/{session['id']}/vitals/{session['id']}/void", json={"reason": "x"}), 404)
    # A new reading at an alert level opens a new episode: the voided one no longer holds one open.
    [again] = by_hand(ward, session["id"], reading(now, EMERGENCY)).get_json()["readings"]
    assert again["alert"]["level"] == "emergency"


def test_a_post_is_the_same_few_statements_whatever_the_number_of_readings(ward):
    _, _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=30)
    posted(ward, token, reading(ward.clock() - timedelta(minutes=29)))   # statements are prepared from here on

    def statements_for(count: int, first) -> list[str]:
        seen = []

        def note(_connection, _cursor, statement, *_):
            seen.append(statement)

        batch = [reading(first + timedelta(seconds=n)) for n in range(count)]
        sa.event.listen(ward.engine, "before_cursor_execute", note)
        try:
            posted(ward, token, *batch)
        finally:
            sa.event.remove(ward.engine, "before_cursor_execute", note)
        return seen

    one, many = statements_for(1, ward.clock() - timedelta(minutes=20)), statements_for(100, ward.clock() - timedelta(minutes=10))
    assert len(one) == len(many), (one, many)
    assert sum("INSERT INTO readings" in statement for statement in many) == 1
    if ward.engine.dialect.name == "postgresql":
        # The lock on the session; the device, its session and what it sent before at these times; the
        # readings with the audit row.
        assert len(many) == 3, many
        assert "INSERT INTO audit_log" in many[-1]
    assert not any("outbox" in statement for statement in many), "no event for readings that raise no alert"


def test_readings_keep_their_loinc_codes_in_the_tables_comments(ward):
    from sessions.domain.vitals import LOINC

    for parameter, code in LOINC.items():
        assert f"LOINC {code}" in monitoring.readings.c[parameter].comment
    if ward.engine.dialect.name == "postgresql":
        columns = {column["name"]: column for column in sa.inspect(ward.engine).get_columns("readings")}
        assert all(f"LOINC {code}" in columns[parameter]["comment"] for parameter, code in LOINC.items())
