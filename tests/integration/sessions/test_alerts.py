"""Alerts: raised once per episode and again on a rise, each leaving through the outbox once as
sessions.vitals.alert_raised version 2 (no patient in it); acknowledged by nurses; raised by the
worker for a silent monitor (once per silence, whatever two workers do) and again, escalated, when
nobody acknowledged one in time. On PostgreSQL and SQLite."""

from __future__ import annotations

import threading
from datetime import timedelta

from clinic import events
from clinic.testing import assert_error
from sessions.db import monitoring
from sessions.domain.rules import SessionRules
from tests.integration.sessions.support import room, started_session
from tests.integration.sessions.support_monitoring import (
    EMERGENCY,
    STEADY,
    URGENT,
    alert_events,
    by_hand,
    escalate,
    monitor,
    posted,
    reading,
    watch_monitors,
)

NOBODY = "00000000-0000-4000-8000-000000000000"


def a_monitored_session(ward):
    room_id = room(ward, name="Infusion 7")
    _, token = monitor(ward, room_id)
    session = started_session(ward, room_id=room_id)
    return session, token


def next_reading(ward, values: dict, minutes: int = 1) -> dict:
    ward.clock.advance(minutes=minutes)
    return reading(ward.clock(), values)


def test_an_alert_leaves_through_the_outbox_once_and_not_again_for_the_next_readings_of_the_episode(ward):
    session, token = a_monitored_session(ward)
    [first] = posted(ward, token, next_reading(ward, URGENT))["readings"]
    [event] = alert_events(ward)
    assert event["version"] == 2
    assert event["data"] == {
        "alert_id": first["alert"]["id"], "session_id": session["id"], "room_id": session["room_id"], "room_name": "Infusion 7",
        "kind": "news2", "level": "urgent", "escalation": False, "news2_score": 5,
        "scored": [{"parameter": "respiratory_rate", "points": 2}, {"parameter": "heart_rate", "points": 2},
                   {"parameter": "temperature", "points": 1}],
        "observed_at": first["measured_at"], "raised_at": event["data"]["raised_at"]}
    assert session["patient_id"] not in str(event), "the event never names the patient"
    [second] = posted(ward, token, next_reading(ward, URGENT))["readings"]
    [third] = by_hand(ward, session["id"], next_reading(ward, {**STEADY, "consciousness": "voice"})).get_json()["readings"]
    assert second["alert_level"] == third["alert_level"] == "urgent" and second["alert"] is None and third["alert"] is None
    assert len(alert_events(ward)) == 1
    assert len(ward.rows(monitoring.alerts, session_id=session["id"])) == 1


def test_a_rise_to_a_higher_level_raises_again(ward):
    _, token = a_monitored_session(ward)
    posted(ward, token, next_reading(ward, URGENT))
    [rise] = posted(ward, token, next_reading(ward, EMERGENCY))["readings"]
    assert rise["alert"]["level"] == "emergency"
    posted(ward, token, next_reading(ward, URGENT), next_reading(ward, EMERGENCY))
    assert [event["data"]["level"] for event in alert_events(ward)] == ["urgent", "emergency"]


def test_an_episode_ends_after_calm_readings_and_the_next_alert_level_opens_a_new_one(ward):
    session, token = a_monitored_session(ward)
    posted(ward, token, next_reading(ward, URGENT))
    posted(ward, token, next_reading(ward, STEADY), next_reading(ward, STEADY))   # two calm: the episode stays open
    posted(ward, token, next_reading(ward, URGENT))
    assert len(alert_events(ward)) == 1
    posted(ward, token, *[next_reading(ward, STEADY) for _ in range(3)])           # three calm in a row end it
    [episode] = ward.rows(monitoring.alert_episodes, session_id=session["id"])
    assert episode["level"] is None
    [again] = posted(ward, token, next_reading(ward, URGENT))["readings"]
    assert again["alert"]["level"] == "urgent"
    assert [event["data"]["level"] for event in alert_events(ward)] == ["urgent", "urgent"]


def test_a_batch_that_opens_and_raises_an_episode_raises_each_alert_once_in_time_order(ward):
    _, token = a_monitored_session(ward)
    ward.clock.advance(minutes=5)
    now = ward.clock()
    answer = posted(ward, token, reading(now, EMERGENCY), reading(now - timedelta(minutes=2), URGENT))["readings"]
    assert [row["alert"]["level"] for row in answer] == ["emergency", "urgent"]
    assert [event["data"]["level"] for event in alert_events(ward)] == ["urgent", "emergency"]
    again = posted(ward, token, reading(now, EMERGENCY), reading(now - timedelta(minutes=2), URGENT))["readings"]
    assert [row["alert"]["id"] for row in again] == [row["alert"]["id"] for row in answer], "a batch sent again: the same answer"
    assert len(alert_events(ward)) == 2


def test_posts_racing_into_one_session_raise_its_alert_once(racing_ward, monkeypatch):
    ward = racing_ward
    room_id = room(ward)
    tokens = [monitor(ward, room_id, name=f"Monitor {n}")[1] for n in range(4)]
    started_session(ward, room_id=room_id)
    ward.clock.advance(minutes=5)
    # Each post waits, between what it read and its write, for the others to have read too: without the
    # session's lock all four would read "no episode" and raise. With it, the others cannot read until
    # the first has committed, so the first stops waiting after a second and goes on alone.
    all_read = threading.Barrier(len(tokens), timeout=1)
    write = monitoring.write_readings

    def write_when_all_have_read(*args, **kwargs):
        try:
            all_read.wait()
        except threading.BrokenBarrierError:
            pass
        return write(*args, **kwargs)

    monkeypatch.setattr(monitoring, "write_readings", write_when_all_have_read)
    statuses = []

    def post(token):
        response = ward.app.test_client().post("/vitals", json={"readings": [reading(ward.clock(), URGENT)]},
                                               headers={"Authorization": f"Bearer {token}"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=post, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [201] * 4
    assert len(alert_events(ward)) == 1, "one episode, one alert, whichever post came first"


def test_a_nurse_acknowledges_an_alert_and_it_leaves_the_open_list(ward):
    session, token = a_monitored_session(ward)
    [raised] = posted(ward, token, next_reading(ward, URGENT))["readings"]
    alert_id = raised["alert"]["id"]
    [listed] = ward.call("GET", "/alerts", query_string={"open": "true"}).get_json()
    assert (listed["id"], listed["patient_id"], listed["kind"], listed["news2_score"]) == (alert_id, session["patient_id"], "news2", 5)
    assert_error(ward.call("POST", f"/alerts/{alert_id}/acknowledge", role="front_desk"), 403)
    acknowledged = ward.call("POST", f"/alerts/{alert_id}/acknowledge", subject="nurse-ines")
    assert acknowledged.status_code == 200, acknowledged.get_data(as_text=True)
    assert acknowledged.get_json()["acknowledged_by"] == "nurse-ines"
    error = assert_error(ward.call("POST", f"/alerts/{alert_id}/acknowledge", role="neurologist"), 409, "conflict")
    assert error["details"]["acknowledged_by"] == "nurse-ines"
    assert_error(ward.call("POST", f"/alerts/{NOBODY}/acknowledge"), 404)
    assert ward.call("GET", "/alerts", query_string={"open": "true"}).get_json() == []
    assert [alert["id"] for alert in ward.call("GET", "/alerts", query_string={"open": "false"}).get_json()] == [alert_id]
    assert ward.call("GET", f"/alerts/{alert_id}").get_json()["acknowledged_by"] == "nurse-ines"
    assert_error(ward.call("GET", f"/alerts/{NOBODY}"), 404)
    [audit] = ward.audit_trail(subject="nurse-ines")
    assert (audit["action"], audit["resource_id"], audit["patient_id"]) == ("update", alert_id, session["patient_id"])


def test_the_alert_list_filters_by_session_room_kind_and_level(ward):
    first, first_token = a_monitored_session(ward)
    other_room = room(ward)
    _, other_token = monitor(ward, other_room)
    started_session(ward, room_id=other_room)
    posted(ward, first_token, next_reading(ward, EMERGENCY))
    posted(ward, other_token, next_reading(ward, URGENT))

    def listed(**query) -> list[tuple[str, str]]:
        response = ward.call("GET", "/alerts", query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [(alert["room_id"], alert["level"]) for alert in response.get_json()]

    assert listed() == [(first["room_id"], "emergency"), (other_room, "urgent")]
    only_first = [(first["room_id"], "emergency")]
    assert listed(session_id=first["id"]) == listed(room_id=first["room_id"]) == listed(level="emergency") == only_first
    assert listed(kind="monitor_silent") == []
    assert listed(since=ward.clock().isoformat()) == [(other_room, "urgent")]
    assert listed(limit=1, offset=1) == [(other_room, "urgent")]
    assert_error(ward.call("GET", "/alerts", query_string={"level": "amber"}), 422)


def test_a_silent_monitor_raises_one_alert_per_silence_and_rooms_without_a_monitor_none(ward):
    session, token = a_monitored_session(ward)
    started_session(ward)                                  # a room without a monitor
    rules = SessionRules(monitor_silent_after=timedelta(minutes=5))
    ward.clock.advance(minutes=4)
    assert watch_monitors(ward, rules) == []
    ward.clock.advance(minutes=1)
    [silent] = watch_monitors(ward, rules)
    ward.clock.advance(minutes=3)
    assert watch_monitors(ward, rules) == [], "one alert per silence, not one per run"
    [event] = alert_events(ward)
    assert event["version"] == 2 and event["data"]["kind"] == "monitor_silent" and event["data"]["level"] == "urgent"
    assert event["data"]["session_id"] == session["id"] and event["data"]["news2_score"] is None and event["data"]["scored"] == []
    assert event["data"]["observed_at"] is None and event["data"]["alert_id"] == silent["id"]
    posted(ward, token, reading(ward.clock()))             # the monitor speaks again: the silence is over
    ward.clock.advance(minutes=4)
    assert watch_monitors(ward, rules) == []
    ward.clock.advance(minutes=2)
    [second] = watch_monitors(ward, rules)
    assert second["silent_since"] > silent["silent_since"]
    assert [event["data"]["kind"] for event in alert_events(ward)] == ["monitor_silent", "monitor_silent"]
    with ward.engine.connect() as connection:
        summaries = monitoring.alert_summaries(connection, session["id"])
    assert [(s["kind"], s["news2_score"], s["observed_at"]) for s in summaries] == \
        [("monitor_silent", None, silent["raised_at"]), ("monitor_silent", None, second["raised_at"])]


def test_two_workers_watching_at_once_raise_one_alert(racing_ward):
    ward = racing_ward
    a_monitored_session(ward)
    ward.clock.advance(minutes=10)
    start = threading.Barrier(2)
    raised = []

    def worker():
        start.wait()
        raised.extend(watch_monitors(ward))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(raised) == 1
    assert len(alert_events(ward)) == 1


def test_an_alert_nobody_acknowledges_is_raised_again_once_escalated(ward):
    session, token = a_monitored_session(ward)
    [first] = posted(ward, token, next_reading(ward, URGENT))["readings"]
    [second] = posted(ward, token, next_reading(ward, EMERGENCY))["readings"]
    ward.call("POST", f"/alerts/{second['alert']['id']}/acknowledge")
    rules = SessionRules(escalate_after=timedelta(minutes=10))
    ward.clock.advance(minutes=8)
    assert escalate(ward, rules) == []
    ward.clock.advance(minutes=1)
    [escalation] = escalate(ward, rules)
    assert escalate(ward, rules) == [] and escalate(ward, rules) == []
    events_raised = alert_events(ward)
    assert [(e["data"]["level"], e["data"]["escalation"]) for e in events_raised] == [("urgent", False), ("emergency", False),
                                                                                       ("urgent", True)]
    data = events_raised[-1]["data"]
    assert (data["alert_id"], data["kind"], data["news2_score"], data["observed_at"]) == \
        (escalation["id"], "news2", 5, first["measured_at"])
    open_now = ward.call("GET", "/alerts", query_string={"open": "true"}).get_json()
    assert [(alert["escalation"], alert["escalation_of"]) for alert in open_now] == [(False, None), (True, first["alert"]["id"])]
    # Acknowledging the escalation acknowledges the alert it escalates too.
    assert ward.call("POST", f"/alerts/{escalation['id']}/acknowledge").status_code == 200
    assert ward.call("GET", "/alerts", query_string={"open": "true"}).get_json() == []
    with ward.engine.connect() as connection:
        assert monitoring.open_alerts(connection, [session["id"]]) == {}


def test_alerts_of_a_session_that_ended_are_not_escalated(ward):
    session, token = a_monitored_session(ward)
    posted(ward, token, next_reading(ward, URGENT))
    assert ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "patient_unwell"}).status_code == 200
    ward.clock.advance(minutes=30)
    assert escalate(ward) == []
    assert watch_monitors(ward) == [], "nothing is watched once the session has ended"


def test_what_the_board_and_the_discharge_read_of_the_monitoring(ward):
    session, token = a_monitored_session(ward)
    quiet = started_session(ward)
    posted(ward, token, next_reading(ward, EMERGENCY))
    [last] = posted(ward, token, next_reading(ward, URGENT))["readings"]
    with ward.engine.connect() as connection:
        scores = monitoring.latest_scores(connection, [session["id"], quiet["id"]])
        assert list(scores) == [session["id"]]
        assert scores[session["id"]]["reading_id"] == last["id"] and scores[session["id"]]["total"] == 5
        assert scores[session["id"]]["level"] == "urgent" and scores[session["id"]]["points"]["heart_rate"] == 2
        assert monitoring.highest_news2(connection, session["id"]) == 8
        assert monitoring.highest_news2(connection, quiet["id"]) is None
        opened = monitoring.open_alerts(connection, [session["id"], quiet["id"]])
        assert [alert["level"] for alert in opened[session["id"]]] == ["emergency"] and quiet["id"] not in opened
        assert [(s["kind"], s["level"], s["news2_score"], s["escalation"]) for s in monitoring.alert_summaries(connection, session["id"])] \
            == [("news2", "emergency", 8, False)]
        assert monitoring.monitored_rooms(connection, [session["room_id"], quiet["room_id"]]) == {session["room_id"]}
        assert monitoring.latest_scores(connection, []) == {} and monitoring.open_alerts(connection, []) == {}


def test_the_event_payloads_hold_to_the_shared_schema(ward):
    _, token = a_monitored_session(ward)
    posted(ward, token, next_reading(ward, EMERGENCY))
    ward.clock.advance(minutes=30)
    watch_monitors(ward)
    escalate(ward)
    raised = alert_events(ward)
    assert {(e["data"]["kind"], e["data"]["escalation"]) for e in raised} == \
        {("news2", False), ("monitor_silent", False), ("news2", True)}
    for event in raised:
        assert events.serialise_payload(events.VITALS_ALERT_RAISED, event["data"], 2)


def test_a_session_that_ended_after_the_watch_looked_raises_nothing(ward, monkeypatch):
    """The watch reads the started sessions, then raises; a discharge or an abort committed in between
    (here: the look is made to see the session as it was before its abort) raises no alert for it."""
    session, token = a_monitored_session(ward)
    posted(ward, token, next_reading(ward, URGENT))
    ward.clock.advance(minutes=30)
    with ward.engine.connect() as connection:
        looked = monitoring.monitored_started_sessions(connection)
        stale = monitoring.unacknowledged_originals(connection, ward.clock(), ("waiting", "started"))
    assert looked and stale, "the watch would raise both a silence and an escalation now"
    assert ward.call("POST", f"/sessions/{session['id']}/abort", json={"reason": "patient_unwell"}).status_code == 200
    monkeypatch.setattr(monitoring, "monitored_started_sessions", lambda connection: looked)
    monkeypatch.setattr(monitoring, "unacknowledged_originals", lambda connection, before, statuses: stale)
    assert watch_monitors(ward) == [] and escalate(ward) == []
    assert [event["data"]["kind"] for event in alert_events(ward)] == ["news2"]
