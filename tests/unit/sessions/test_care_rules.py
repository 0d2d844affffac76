"""The session's states and the discharge conditions (sessions.domain.care): pure rules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinic.errors import Conflict
from sessions.domain import care

START = datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc)
ESCORT = care.Escort("Sam Rivera", "spouse", "+1 212 555 0100", adult_present=True)
ALL_GIVEN = {"rest_today": True, "call_if_problems": True, "return_visit": True}
READY = care.Discharge(escort=ESCORT, instructions=ALL_GIVEN)


def state(minutes_planned: int = 150, open_alerts: int = 0, last_news2: int | None = 1, last_level: str | None = None):
    return care.SessionState(started_at=START, planned_minutes=minutes_planned, open_alerts=open_alerts, last_news2=last_news2,
                             last_level=last_level)


def conditions(discharge: care.Discharge, session: care.SessionState, minutes: int) -> list[str]:
    return [item["condition"] for item in care.unmet_discharge_conditions(discharge, session, START + timedelta(minutes=minutes))]


def test_a_discharge_meeting_every_condition_leaves_nothing_unmet():
    assert conditions(READY, state(), 150) == []
    assert conditions(READY, state(last_news2=None), 200) == []


def test_every_unmet_condition_is_listed_at_once_in_a_fixed_order():
    bare = care.Discharge(escort=None, instructions={})
    assert conditions(bare, state(open_alerts=2, last_news2=7, last_level="emergency"), 10) == [
        "escort", "instructions", "open_alerts", "last_news2", "planned_minutes"]


@pytest.mark.parametrize("escort", [None, care.Escort("", "spouse", "1", True), care.Escort("  ", "spouse", "1", True),
                                    care.Escort("Sam", "spouse", "1", adult_present=False)])
def test_an_escort_must_be_named_and_confirmed_as_an_adult_present(escort):
    assert conditions(care.Discharge(escort=escort, instructions=ALL_GIVEN), state(), 150) == ["escort"]


@pytest.mark.parametrize("missing", sorted(care.INSTRUCTIONS))
def test_each_of_the_three_instructions_must_be_confirmed(missing):
    unmet = care.unmet_discharge_conditions(care.Discharge(ESCORT, {**ALL_GIVEN, missing: False}), state(), START + timedelta(minutes=150))
    assert [(item["condition"], item["missing"]) for item in unmet] == [("instructions", [missing])]
    assert care.INSTRUCTIONS[missing] in unmet[0]["message"]


def test_an_unacknowledged_alert_or_a_last_score_at_an_alert_level_keeps_the_patient():
    assert conditions(READY, state(open_alerts=1), 150) == ["open_alerts"]
    assert conditions(READY, state(last_news2=5, last_level="urgent"), 150) == ["last_news2"]


@given(planned=st.integers(min_value=0, max_value=400), elapsed=st.integers(min_value=0, max_value=500))
def test_a_nurse_discharges_once_the_planned_minutes_never_less_than_120_have_run(planned, elapsed):
    early = elapsed < max(planned, 120)
    assert conditions(READY, state(minutes_planned=planned), elapsed) == (["planned_minutes"] if early else [])
    assert care.is_early(state(minutes_planned=planned), START + timedelta(minutes=elapsed)) is early


def test_only_a_neurologist_discharges_early_and_only_with_a_reason():
    nurse_with_reason = care.Discharge(ESCORT, ALL_GIVEN, early_reason="patient asked", by_neurologist=False)
    assert conditions(nurse_with_reason, state(), 60) == ["planned_minutes"]
    neurologist_without = care.Discharge(ESCORT, ALL_GIVEN, early_reason="  ", by_neurologist=True)
    assert conditions(neurologist_without, state(), 60) == ["planned_minutes"]
    neurologist_with = care.Discharge(ESCORT, ALL_GIVEN, early_reason="headache resolved", by_neurologist=True)
    assert conditions(neurologist_with, state(), 60) == []
    # An early discharge still needs everything else.
    assert conditions(neurologist_with, state(open_alerts=1), 60) == ["open_alerts"]


@pytest.mark.parametrize(("action", "allowed"), [
    ("start", {"waiting"}), ("discharge", {"started"}), ("abort", {"waiting", "started"}), ("cancel", {"waiting"}),
    ("change", {"waiting", "started"})])
def test_each_action_is_allowed_from_its_states_only(action, allowed):
    for status in care.STATUSES:
        session = {"id": "s-1", "status": status}
        if status in allowed:
            care.ensure_status(session, care.ALLOWED_FROM[action], action)
        else:
            with pytest.raises(Conflict) as refused:
                care.ensure_status(session, care.ALLOWED_FROM[action], action)
            assert refused.value.details == {"session_id": "s-1", "status": status}
            assert status in refused.value.message


@pytest.mark.parametrize(("plan", "appointment", "planned"), [(180, 150, 180), (None, 150, 150), (None, 90, 120), (100, 200, 120),
                                                             (None, None, 120)])
def test_the_planned_minutes_are_the_plans_else_the_appointments_never_below_120(plan, appointment, planned):
    assert care.planned_minutes(plan, appointment) == planned


def test_minutes_between_counts_whole_minutes_and_never_below_zero():
    assert care.minutes_between(START, START + timedelta(minutes=5, seconds=59)) == 5
    assert care.minutes_between(START, START - timedelta(minutes=1)) == 0
