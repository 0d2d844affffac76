"""Scheduling's rules without a database: lengths, the turnover gap, states, times, the plan copy, settings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from clinic.config import ConfigurationError, load_settings
from clinic.errors import Conflict, RuleViolation
from scheduling import domain
from scheduling.config import load_rules
from scheduling.domain import PlanCopy, SchedulingRules

NY = ZoneInfo("America/New_York")
RULES = SchedulingRules(timezone=NY)
NOW = datetime(2030, 1, 7, 11, 0, tzinfo=timezone.utc)          # Monday 06:00 in New York
NINE = datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc)         # Monday 09:00 in New York


def plan(minutes: int | None = 150, plan_id: str | None = "plan-1", version: int = 1) -> PlanCopy:
    return PlanCopy("patient-1", plan_id, minutes, version)


def appointment(kind="infusion", status="booked", starts_at=NINE, minutes=120, turnover=15) -> dict:
    ends_at = starts_at + timedelta(minutes=minutes)
    return {"id": "a-1", "patient_id": "patient-1", "kind": kind, "status": status, "starts_at": starts_at, "ends_at": ends_at,
            "room_blocked_until": ends_at + timedelta(minutes=turnover if kind == "infusion" else 0), "patient_busy_until": ends_at}


# --- lengths and holds ----------------------------------------------------------------------


@pytest.mark.parametrize("minutes, expected", [(150, 150), (120, 120), (90, 120), (None, 120), (300, 300)])
def test_an_infusion_lasts_the_plan_but_never_less_than_two_hours(minutes, expected):
    assert domain.appointment_length("infusion", plan(minutes), RULES) == timedelta(minutes=expected)


def test_a_follow_up_lasts_the_configured_visit_length():
    assert domain.appointment_length("follow_up", None, RULES) == timedelta(minutes=30)
    longer_visits = SchedulingRules(NY, follow_up_length=timedelta(minutes=45))
    assert domain.appointment_length("follow_up", plan(), longer_visits) == timedelta(minutes=45)


def test_an_infusion_holds_its_room_for_the_turnover_gap_after_it_a_visit_does_not():
    infusion = domain.span_for("infusion", NINE, plan(150), RULES)
    assert (infusion.ends_at - NINE, infusion.room_blocked_until - infusion.ends_at) == (timedelta(minutes=150), timedelta(minutes=15))
    assert infusion.patient_busy_until == infusion.ends_at
    visit = domain.span_for("follow_up", NINE, None, SchedulingRules(NY, turnover=timedelta(minutes=40)))
    assert visit.room_blocked_until == visit.ends_at == NINE + timedelta(minutes=30)
    longer_gap = domain.span_for("infusion", NINE, plan(120), SchedulingRules(NY, turnover=timedelta(minutes=40)))
    assert longer_gap.room_blocked_until - longer_gap.ends_at == timedelta(minutes=40)


# --- who may be booked, where and when --------------------------------------------------------


def test_an_infusion_needs_an_active_plan_and_a_follow_up_a_known_patient():
    with pytest.raises(RuleViolation, match="no active treatment plan"):
        domain.require_known_patient("infusion", None, "p")
    with pytest.raises(RuleViolation, match="no active treatment plan"):
        domain.require_known_patient("infusion", plan(plan_id=None, minutes=None), "p")
    with pytest.raises(RuleViolation, match="knows no patient"):
        domain.require_known_patient("follow_up", None, "p")
    domain.require_known_patient("follow_up", plan(plan_id=None, minutes=None), "p")
    domain.require_known_patient("infusion", plan(), "p")


@pytest.mark.parametrize("starts_at, why", [
    (NOW - timedelta(minutes=1), "in the past"),
    (NINE + timedelta(seconds=1), "whole minute"),
    (NOW + timedelta(days=domain.BOOKING_HORIZON_DAYS + 1), "days ahead"),
])
def test_a_start_must_be_ahead_on_a_whole_minute_and_not_too_far(starts_at, why):
    with pytest.raises(RuleViolation, match=why):
        domain.check_start(starts_at, NOW)


def test_a_start_right_now_is_allowed():
    domain.check_start(NOW, NOW)


@pytest.mark.parametrize("room, kind, why", [
    (None, "infusion", "no room with this id"),
    ({"name": "Exam A", "kind": "exam", "active": True}, "infusion",
     "an infusion appointment needs an infusion room; Exam A is an exam room"),
    ({"name": "Infusion 1", "kind": "infusion", "active": True}, "follow_up",
     "a follow-up appointment needs an exam room; Infusion 1 is an infusion room"),
    ({"name": "Infusion 1", "kind": "infusion", "active": False}, "infusion", "room Infusion 1 is not in use"),
])
def test_the_room_must_exist_be_in_use_and_fit_the_kind(room, kind, why):
    with pytest.raises(RuleViolation) as refused:
        domain.check_room(room, kind, "r-1")
    assert refused.value.message == why


@pytest.mark.parametrize("action, status, allowed", [
    ("reschedule", "booked", True), ("reschedule", "checked_in", False), ("reschedule", "cancelled", False),
    ("cancel", "booked", True), ("cancel", "checked_in", True), ("cancel", "completed", False), ("cancel", "cancelled", False),
    ("check_in", "booked", True), ("check_in", "checked_in", False), ("check_in", "no_show", False),
    ("no_show", "booked", True), ("no_show", "checked_in", False),
    ("complete", "booked", True), ("complete", "checked_in", True), ("complete", "completed", False),
    ("complete", "in_progress", True), ("cancel", "in_progress", False), ("reschedule", "in_progress", False),
    ("no_show", "in_progress", False), ("check_in", "in_progress", False),
])
def test_an_appointment_moves_booked_checked_in_in_progress_completed_or_cancelled_or_no_show(action, status, allowed):
    if allowed:
        domain.ensure_allowed(action, appointment(status=status))
    else:
        with pytest.raises(Conflict) as refused:
            domain.ensure_allowed(action, appointment(status=status))
        assert refused.value.details == {"appointment_id": "a-1", "status": status}
        assert "_" not in refused.value.message  # words, not codes


@pytest.mark.parametrize("action, status, message", [
    ("no_show", "no_show", "the appointment is a no-show already"),
    ("check_in", "checked_in", "the appointment is checked in already"),
    ("no_show", "checked_in", "cannot record a no-show for an appointment that is checked in (only one that is booked)"),
    ("cancel", "completed", "cannot cancel an appointment that is completed (only one that is booked or checked in)"),
    ("reschedule", "cancelled", "cannot reschedule an appointment that is cancelled (only one that is booked)"),
    ("check_in", "in_progress", "cannot check in an appointment that is in progress (only one that is booked)"),
    ("cancel", "in_progress", "the infusion session has started; abort the session in sessions instead of cancelling the appointment"),
    ("reschedule", "in_progress",
     "the infusion session has started; abort the session in sessions instead of rescheduling the appointment"),
    ("no_show", "in_progress",
     "the infusion session has started; abort the session in sessions instead of recording a no-show for the appointment"),
])
def test_a_refused_action_reads_as_a_sentence(action, status, message):
    with pytest.raises(Conflict) as refused:
        domain.ensure_allowed(action, appointment(status=status))
    assert refused.value.message == message


@pytest.mark.parametrize("status, moves", [
    ("checked_in", True), ("in_progress", False), ("completed", False), ("cancelled", False), ("no_show", False), ("booked", False),
])
def test_only_a_checked_in_appointment_goes_in_progress_when_its_session_starts(status, moves):
    assert domain.goes_in_progress(appointment(status=status)) is moves


def test_an_appointment_in_progress_holds_its_room_and_patient_as_a_checked_in_one_does():
    assert {"checked_in", "in_progress"} <= set(domain.HOLDING_STATUSES)
    assert "in_progress" in domain.STATUSES


def test_a_room_change_is_what_differs_from_the_room_as_it_is():
    room = {"id": "r-1", "name": "Infusion 1", "kind": "infusion", "active": True, "version": 3}
    assert domain.room_changes(room, {"name": "Infusion 1", "kind": "infusion", "active": True}) == {}
    assert domain.room_changes(room, {"name": "infusion 1", "active": True}) == {"name": "infusion 1"}   # a new case is a new name
    assert domain.room_changes(room, {"active": False, "kind": "exam"}) == {"active": False, "kind": "exam"}


def test_check_in_is_on_the_day_and_before_the_end():
    booked = appointment()
    domain.check_check_in_time(booked, NOW, NY)                                  # 06:00 the same day
    domain.check_check_in_time(booked, booked["ends_at"] - timedelta(minutes=1), NY)
    with pytest.raises(RuleViolation, match="day of the appointment"):
        domain.check_check_in_time(booked, NOW - timedelta(hours=7), NY)       # 23:00 the evening before
    with pytest.raises(RuleViolation, match="over"):
        domain.check_check_in_time(booked, booked["ends_at"], NY)


def test_a_no_show_waits_for_the_grace_period():
    booked = appointment()
    with pytest.raises(RuleViolation, match="09:15"):
        domain.check_no_show_time(booked, NINE + timedelta(minutes=14, seconds=59), RULES)
    domain.check_no_show_time(booked, NINE + timedelta(minutes=15), RULES)
    domain.check_no_show_time(booked, NINE, SchedulingRules(NY, no_show_grace=timedelta(0)))


# --- after the session ----------------------------------------------------------------------


def test_an_infusion_ending_early_frees_the_room_from_its_end_plus_the_turnover():
    booked = appointment(minutes=150)
    room_until, patient_until = domain.released_after_session(booked, NINE + timedelta(minutes=100), RULES)
    assert (room_until, patient_until) == (NINE + timedelta(minutes=115), NINE + timedelta(minutes=100))


def test_an_overrun_never_stretches_the_hold_into_the_next_booking():
    booked = appointment(minutes=120)
    room_until, patient_until = domain.released_after_session(booked, NINE + timedelta(minutes=170), RULES)
    assert (room_until, patient_until) == (booked["room_blocked_until"], booked["patient_busy_until"])


def test_a_session_that_ended_before_the_booked_start_leaves_an_empty_hold_not_an_inverted_one():
    booked = appointment(minutes=120)
    room_until, patient_until = domain.released_after_session(booked, NINE - timedelta(minutes=30), RULES)
    assert (room_until, patient_until) == (NINE, NINE)


def test_the_follow_up_is_looked_for_from_the_local_day_two_weeks_after_the_infusion():
    ended = datetime(2030, 3, 1, 4, 30, tzinfo=timezone.utc)            # 23:30 on 28 February in New York
    start = domain.follow_up_search_start(ended, NOW, RULES)
    assert start.astimezone(NY) == datetime(2030, 3, 14, 0, 0, tzinfo=NY)   # 28 Feb + 14 days, after the clocks changed
    assert start.astimezone(NY).utcoffset() == timedelta(hours=-4)
    late = datetime(2030, 3, 20, tzinfo=timezone.utc)
    assert domain.follow_up_search_start(ended, late, RULES) == late
    assert domain.follow_up_search_start(ended, NOW, SchedulingRules(NY, follow_up_after_days=7)).astimezone(NY).day == 7


# --- the plan copy --------------------------------------------------------------------------


def test_an_activation_makes_the_plan_the_one_in_force_at_its_sequence():
    assert domain.copy_after_activation("patient-1", "plan-3", 180, 7) == PlanCopy("patient-1", "plan-3", 180, 7)
    assert domain.copy_after_activation("patient-1", "plan-3", 180, 7).is_active


def test_a_retirement_leaves_the_patient_known_without_a_plan_at_its_sequence():
    retired = domain.copy_after_retirement("patient-1", 8)
    assert retired == PlanCopy("patient-1", None, None, 8) and not retired.is_active


def test_an_event_without_a_plan_sequence_counts_as_zero():
    assert domain.copy_after_activation("patient-1", "plan-1", 150, None).version == 0
    assert domain.copy_after_retirement("patient-1", None).version == 0


# --- settings -------------------------------------------------------------------------------


def test_the_rules_default_to_the_documented_values():
    rules = load_rules(load_settings("scheduling", env={}), env={})
    assert rules == SchedulingRules(timezone=ZoneInfo("America/New_York"), turnover=timedelta(minutes=15),
                                    follow_up_length=timedelta(minutes=30), grid=timedelta(minutes=15), follow_up_after_days=14,
                                    follow_up_search_days=28, no_show_grace=timedelta(minutes=15))


def test_the_rules_come_from_the_environment():
    env = {"CLINIC_TIMEZONE": "Europe/Lisbon", "SCHEDULING_TURNOVER_MINUTES": "20", "SCHEDULING_FOLLOW_UP_MINUTES": "45",
           "SCHEDULING_GRID_MINUTES": "10", "SCHEDULING_FOLLOW_UP_AFTER_DAYS": "21", "SCHEDULING_FOLLOW_UP_SEARCH_DAYS": "10",
           "SCHEDULING_NO_SHOW_GRACE_MINUTES": "30"}
    rules = load_rules(load_settings("scheduling", env=env), env=env)
    assert (rules.timezone.key, rules.turnover, rules.follow_up_length, rules.grid, rules.follow_up_after_days,
            rules.follow_up_search_days, rules.no_show_grace) == (
        "Europe/Lisbon", timedelta(minutes=20), timedelta(minutes=45), timedelta(minutes=10), 21, 10, timedelta(minutes=30))


@pytest.mark.parametrize("env, named", [
    ({"SCHEDULING_TURNOVER_MINUTES": "a while"}, "SCHEDULING_TURNOVER_MINUTES"),
    ({"SCHEDULING_TURNOVER_MINUTES": "-5"}, "SCHEDULING_TURNOVER_MINUTES"),
    ({"SCHEDULING_GRID_MINUTES": "7"}, "divide 60"),
    ({"SCHEDULING_GRID_MINUTES": "0"}, "SCHEDULING_GRID_MINUTES"),
    ({"SCHEDULING_FOLLOW_UP_MINUTES": "1"}, "SCHEDULING_FOLLOW_UP_MINUTES"),
    ({"CLINIC_TIMEZONE": "Mars/Olympus_Mons"}, "CLINIC_TIMEZONE"),
])
def test_a_malformed_setting_is_refused_naming_it(env, named):
    with pytest.raises(ConfigurationError, match=named):
        load_rules(load_settings("scheduling", env=env), env=env)
