"""The monitoring's arithmetic, without a database: a posted reading made comparable, re-sent readings
told from new ones, readings refused by index, a batch scored and carried through the alert episode,
and the alerts and their events built from it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from clinic import events
from sessions.domain.alerts import Episode
from sessions.domain.rules import SessionRules
from sessions.services import alerts, vitals

T0 = datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc)
STEADY = {"heart_rate": 72, "systolic": 124, "diastolic": 78, "respiratory_rate": 16, "spo2": 97, "on_oxygen": False,
          "temperature": Decimal("36.8"), "consciousness": "alert"}
URGENT = {**STEADY, "heart_rate": 115, "respiratory_rate": 22, "temperature": Decimal("38.5")}
EMERGENCY = {**STEADY, "heart_rate": 135, "respiratory_rate": 26, "systolic": 95}
RULES = SessionRules()


def at(minutes: float, values: dict | None = None, **changes) -> dict:
    return vitals.normalised({"measured_at": T0 + timedelta(minutes=minutes), **(values or {}), **changes})


def test_a_posted_reading_has_every_parameter_and_its_temperature_to_a_tenth_halves_up():
    reading = at(0, heart_rate=80, temperature=Decimal("36.85"))
    assert reading["temperature"] == Decimal("36.9") and reading["spo2"] is None and reading["heart_rate"] == 80
    assert at(0, temperature=Decimal("36.84"))["temperature"] == Decimal("36.8")
    assert set(reading) == {"measured_at", *vitals.PARAMETERS}


def test_a_stored_reading_and_a_posted_one_differ_only_in_what_was_measured():
    stored = {**at(0, STEADY), "temperature": Decimal("36.80"), "id": "r1", "news2_total": 0}
    assert vitals.differing_parameters(stored, at(0, STEADY)) == []
    assert vitals.differing_parameters(stored, at(0, STEADY, heart_rate=73, on_oxygen=True)) == ["heart_rate", "on_oxygen"]
    assert vitals.differing_parameters(stored, at(0, STEADY, spo2=None)) == ["spo2"]


def test_one_time_twice_in_a_batch_is_one_reading_if_the_values_agree_else_refused():
    batch = [at(0, STEADY), at(1, STEADY), at(0, STEADY), at(1, STEADY, heart_rate=99)]
    repeats, faults = vitals.same_time_twice(batch)
    assert repeats == {2: 0}
    assert list(faults) == ["3"] and "reading 1" in faults["3"]["measured_at"][0]


def test_readings_out_of_bounds_are_named_by_index_and_field():
    faults = vitals.bounds_faults([at(0, STEADY), at(1, STEADY, heart_rate=400, systolic=80, diastolic=85)], RULES)
    assert list(faults) == ["1"] and set(faults["1"]) == {"heart_rate", "diastolic"}


def test_readings_timed_in_the_future_or_before_a_moment_are_named_by_index():
    now = T0 + timedelta(minutes=10)
    batch = [at(10), at(12.1), at(-1), at(5)]
    faults = vitals.time_faults(batch, now, RULES, [(T0, "the session started"), (T0 + timedelta(minutes=4), "the monitor came"),
                                                    (None, "never")])
    assert set(faults) == {"1", "2"}
    assert "later than the clinic's clock allows" in faults["1"]["measured_at"][0]
    assert "before the session started" in faults["2"]["measured_at"][0]
    assert vitals.time_faults([at(12)], now, RULES, []) == {}, "two minutes ahead is within the skew"
    assert "the monitor came" in vitals.time_faults([at(3)], now, RULES, [(T0, "a"), (T0 + timedelta(minutes=4), "the monitor came")]
                                                    )["0"]["measured_at"][0]


def test_a_batch_is_scored_in_time_order_raising_on_entering_an_episode_and_on_a_rise_only():
    new = [("c", at(3, EMERGENCY)), ("a", at(1, URGENT)), ("b", at(2, URGENT)), ("d", at(4, EMERGENCY))]
    assessed, episode, raises = vitals.assess(new, [], None, 1, RULES)
    assert raises == [("a", "urgent"), ("c", "emergency")]
    assert episode == Episode("emergency", 0)
    assert (assessed["a"].score.total, assessed["a"].level, assessed["c"].score.total) == (5, "urgent", 8)


def test_a_partial_set_is_completed_from_the_latest_recent_values_within_the_window():
    recent = [(T0, {**STEADY, "respiratory_rate": 26}), (T0 + timedelta(minutes=5), dict(STEADY))]
    assessed, episode, raises = vitals.assess([("p", at(10, heart_rate=115))], recent, None, 1, RULES)
    assert assessed["p"].score.total == 2 and assessed["p"].score.complete
    assert set(assessed["p"].filled_in) == {"respiratory_rate", "spo2", "on_oxygen", "systolic", "consciousness", "temperature"}
    assert (episode, raises) == (None, [])
    late, _, _ = vitals.assess([("q", at(30, heart_rate=115))], recent, None, 1, RULES)
    assert late["q"].score.points == {"heart_rate": 2} and late["q"].filled_in == ()
    nothing, _, _ = vitals.assess([("r", at(30, diastolic=70))], [], None, 1, RULES)
    assert nothing["r"] == vitals.Assessed(None, None, ())


def test_an_episode_closes_after_calm_complete_readings_and_a_partial_calm_one_does_not_count():
    rules = SessionRules(calm_readings_to_close=2)
    _, episode, _ = vitals.assess([("a", at(2, STEADY)), ("b", at(1, heart_rate=72))], [], Episode("urgent", 0), 1, rules)
    assert episode == Episode("urgent", 1), "the complete calm set counts; the lone pulse (nothing before it) does not"
    _, closed, _ = vitals.assess([("c", at(3, STEADY))], [], episode, 1, rules)
    assert closed is None
    assert vitals.replayed_episode([{"alert_level": "urgent", "news2_complete": True}, {"alert_level": None, "news2_complete": True},
                                    {"alert_level": None, "news2_complete": False}], rules) == Episode("urgent", 1)
    assert vitals.replayed_episode([], rules) is None


def test_the_episode_row_is_written_only_when_the_episode_changed():
    now = T0 + timedelta(hours=1)
    assert vitals.episode_row("s", Episode("urgent", 1), Episode("urgent", 1), T0, now) is None
    assert vitals.episode_row("s", None, Episode("urgent", 0), None, now)["opened_at"] == now
    assert vitals.episode_row("s", Episode("urgent", 0), Episode("emergency", 0), T0, now)["opened_at"] == T0
    assert vitals.episode_row("s", Episode("urgent", 2), None, T0, now) == {"session_id": "s", "level": None, "calm_readings": 0,
                                                                          "opened_at": None, "updated_at": now}


def test_a_new_reading_row_carries_its_score_and_every_column():
    [(reading_id, values)] = [("r", at(0, URGENT))]
    assessed, _, _ = vitals.assess([(reading_id, values)], [], None, 1, RULES)
    row = vitals.new_reading_row("s", values, T0, device_id="d", assessed=assessed["r"], reading_id="r")
    assert (row["id"], row["news2_total"], row["alert_level"], row["news2_complete"]) == ("r", 5, "urgent", True)
    assert row["news2_filled_in"] == []
    assert row["news2_points"]["heart_rate"] == 2 and row["voided_at"] is None
    bare = vitals.new_reading_row("s", at(0, diastolic=70), T0, entered_by="nurse")
    assert bare["news2_total"] is None and bare["alert_level"] is None and len(bare["id"]) == 36


SESSION = {"session_id": "6a1e3f4c-5b7d-4e8f-9a0b-1c2d3e4f5a6b", "room_id": "7b2f4a5d-6c8e-4f9a-8b1c-2d3e4f5a6b7c",
           "room_name": "Infusion 2"}


def test_the_alerts_events_hold_to_the_shared_schema_and_name_no_patient():
    assessed, _, _ = vitals.assess([("r", at(0, EMERGENCY))], [], None, 1, RULES)
    row = vitals.new_reading_row(SESSION["session_id"], at(0, EMERGENCY), T0, device_id="d", assessed=assessed["r"],
                                 reading_id="8c3a5b6e-7d9f-4a0b-9c1d-3e4f5a6b7c8d")
    raised = alerts.news2_alert(SESSION, row, "emergency", T0 + timedelta(seconds=1))
    assert raised["scored"] == [{"parameter": "respiratory_rate", "points": 3}, {"parameter": "systolic", "points": 2},
                                {"parameter": "heart_rate", "points": 3}]
    escalated = alerts.escalation(raised, T0 + timedelta(minutes=10))
    assert (escalated["escalation"], escalated["escalation_of"], escalated["news2_score"], escalated["reading_id"]) == \
        (True, raised["id"], 8, None)
    silent = alerts._alert(SESSION, alerts.MONITOR_SILENT, "urgent", T0, silent_since=T0 - timedelta(minutes=5))
    for alert in (raised, escalated, silent):
        payload = events.serialise_payload(events.VITALS_ALERT_RAISED, alerts.alert_event(alert), 2)
        assert "patient_id" not in payload


@pytest.mark.parametrize(("device_since", "last"), [(None, None), (T0 + timedelta(minutes=3), None), (None, T0 + timedelta(minutes=7))])
def test_a_silence_runs_from_the_latest_of_the_start_a_monitors_arrival_and_the_last_reading(device_since, last):
    assert alerts.silent_since(T0, device_since, last) == max(moment for moment in (T0, device_since, last) if moment)
