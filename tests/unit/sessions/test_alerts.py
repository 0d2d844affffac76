"""Alert levels from NEWS2, episodes (raised once, again on a rise, closed after calm readings), escalation."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.domain.alerts import EMERGENCY, URGENT, Episode, after_reading, alert_level, escalation_due
from sessions.domain.news2 import SCORED, Score
from sessions.domain.rules import SessionRules

RULES = SessionRules()


def scored(complete=True, **points) -> Score:
    every = {name: points.get(name, 0) for name in SCORED} if complete else points
    return Score(total=sum(every.values()), points=every, complete=complete)


# --- levels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("score, level", [
    (scored(), None),
    (scored(heart_rate=2, spo2=2), None),                                            # 4, no 3
    (scored(heart_rate=2, spo2=2, temperature=1), URGENT),                           # 5
    (scored(heart_rate=2, spo2=2, temperature=2), URGENT),                           # 6
    (scored(consciousness=3), URGENT),                                               # a 3 alone
    (scored(heart_rate=3, spo2=3), URGENT),                                          # 6 with two 3s
    (scored(heart_rate=2, spo2=2, on_oxygen=2, temperature=1), EMERGENCY),           # 7
    (scored(respiratory_rate=3, spo2=3, on_oxygen=2, systolic=3, heart_rate=3, consciousness=3, temperature=3), EMERGENCY),
    (scored(complete=False, heart_rate=3), URGENT),                                  # a partial set's red score
    (scored(complete=False, heart_rate=2, systolic=3, spo2=2), EMERGENCY),           # a partial total of 7
    (scored(complete=False, heart_rate=2, spo2=2), None),
])
def test_the_level_follows_the_default_thresholds(score, level):
    assert alert_level(score, RULES) == level


def test_the_thresholds_come_from_the_rules():
    rules = SessionRules(urgent_total=3, emergency_total=5, single_parameter_points=2)
    assert alert_level(scored(heart_rate=1, spo2=1), rules) is None
    assert alert_level(scored(heart_rate=2), rules) == URGENT
    assert alert_level(scored(heart_rate=1, spo2=1, systolic=1), rules) == URGENT
    assert alert_level(scored(heart_rate=2, spo2=2, systolic=1), rules) == EMERGENCY
    assert alert_level(scored(consciousness=3), SessionRules(single_parameter_points=3, urgent_total=9, emergency_total=9)) == URGENT


points_by_parameter = st.fixed_dictionaries({name: st.integers(0, 2 if name == "on_oxygen" else 3) for name in SCORED})
RANK = {None: 0, URGENT: 1, EMERGENCY: 2}


@given(points_by_parameter, st.sampled_from(SCORED))
def test_more_points_never_lower_the_level(points, parameter):
    before = scored(**points)
    after = scored(**{**points, parameter: min(points[parameter] + 1, 3)})
    assert RANK[alert_level(after, RULES)] >= RANK[alert_level(before, RULES)]


@given(points_by_parameter)
def test_below_five_without_a_three_is_no_alert_and_seven_or_more_is_an_emergency(points):
    level = alert_level(scored(**points), RULES)
    total = sum(points.values())
    assert (level is None) == (total < 5 and max(points.values()) < 3)
    assert (level == EMERGENCY) == (total >= 7)


# --- episodes ---------------------------------------------------------------------------------


def run(levels, rules=RULES, episode=None):
    """Feed readings through the episode; each is a level, or (level, complete). The raises, and the end state."""
    raised = []
    for item in levels:
        level, complete = item if isinstance(item, tuple) else (item, True)
        episode, now = after_reading(episode, level, rules, complete=complete)
        raised.append(now)
    return raised, episode


def test_the_first_reading_at_an_alert_level_opens_an_episode_and_raises():
    assert run([URGENT]) == ([URGENT], Episode(URGENT, 0))
    assert run([EMERGENCY]) == ([EMERGENCY], Episode(EMERGENCY, 0))


def test_calm_readings_without_an_episode_raise_nothing():
    assert run([None, None]) == ([None, None], None)


def test_staying_at_the_level_raises_once():
    assert run([URGENT, URGENT, URGENT]) == ([URGENT, None, None], Episode(URGENT, 0))


def test_a_rise_raises_again_and_a_fall_within_the_episode_does_not_re_raise():
    assert run([URGENT, EMERGENCY, URGENT, EMERGENCY]) == ([URGENT, EMERGENCY, None, None], Episode(EMERGENCY, 0))


def test_the_episode_closes_after_the_configured_calm_readings_in_a_row():
    raised, episode = run([URGENT, None, None])
    assert raised == [URGENT, None, None] and episode == Episode(URGENT, 2)
    assert run([URGENT, None, None, None]) == ([URGENT, None, None, None], None)


def test_a_reading_at_an_alert_level_starts_the_calm_count_again():
    raised, episode = run([URGENT, None, None, URGENT, None, None])
    assert raised == [URGENT, None, None, None, None, None] and episode == Episode(URGENT, 2)
    assert run([None], episode=episode) == ([None], None)
    # A lower alert level in an emergency episode resets the count too, and keeps the episode's level.
    raised, episode = run([EMERGENCY, None, None, URGENT, None, None])
    assert raised == [EMERGENCY, None, None, None, None, None] and episode == Episode(EMERGENCY, 2)


def test_after_the_episode_closed_the_next_alert_level_raises_again():
    raised, episode = run([URGENT, None, None, None, URGENT, EMERGENCY, None, None, None, EMERGENCY])
    assert raised == [URGENT, None, None, None, URGENT, EMERGENCY, None, None, None, EMERGENCY]
    assert episode == Episode(EMERGENCY, 0)


def test_the_calm_count_comes_from_the_rules():
    assert run([URGENT, None], SessionRules(calm_readings_to_close=1)) == ([URGENT, None], None)
    raised, episode = run([URGENT, None, None, None], SessionRules(calm_readings_to_close=5))
    assert episode == Episode(URGENT, 3)


def test_a_partial_set_below_the_thresholds_neither_counts_as_calm_nor_resets():
    raised, episode = run([URGENT, None, (None, False), (None, False), None])
    assert raised == [URGENT, None, None, None, None] and episode == Episode(URGENT, 2)
    assert run([URGENT, None, None, (URGENT, False)]) == ([URGENT, None, None, None], Episode(URGENT, 0))
    assert run([(URGENT, False)]) == ([URGENT], Episode(URGENT, 0))


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError):
        after_reading(None, "amber", RULES)


@given(st.lists(st.sampled_from([None, URGENT, EMERGENCY]), max_size=40), st.integers(1, 5))
def test_episodes_raise_on_entering_and_on_rising_only(levels, calm_to_close):
    """Against a reference that reads the whole history: an episode is open from an alert-level
    reading until `calm_to_close` calm readings in a row; a reading raises when no episode was open
    before it, or when its level is above every level since the episode opened."""
    raised, _ = run(levels, SessionRules(calm_readings_to_close=calm_to_close))
    opened_at, calm = None, 0
    for index, level in enumerate(levels):
        if level is None:
            assert raised[index] is None
            if opened_at is not None:
                calm += 1
                if calm == calm_to_close:
                    opened_at, calm = None, 0
            continue
        calm = 0
        if opened_at is None:
            assert raised[index] == level
            opened_at = index
        else:
            highest = max(RANK[earlier] for earlier in levels[opened_at:index])
            assert raised[index] == (level if RANK[level] > highest else None)


# --- escalation -------------------------------------------------------------------------------

RAISED = datetime(2030, 3, 4, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("after, acknowledged, escalated, due", [
    (timedelta(minutes=9, seconds=59), False, False, False),
    (timedelta(minutes=10), False, False, True),
    (timedelta(hours=2), False, False, True),
    (timedelta(minutes=10), True, False, False),
    (timedelta(minutes=10), False, True, False),
    (timedelta(hours=2), True, True, False),
])
def test_an_alert_unacknowledged_for_the_configured_time_is_escalated_once(after, acknowledged, escalated, due):
    acknowledged_at = RAISED + timedelta(minutes=1) if acknowledged else None
    assert escalation_due(RAISED, acknowledged_at, escalated, RAISED + after, RULES) is due


def test_the_escalation_time_comes_from_the_rules():
    rules = SessionRules(escalate_after=timedelta(minutes=3))
    assert escalation_due(RAISED, None, False, RAISED + timedelta(minutes=3), rules)
    assert not escalation_due(RAISED, None, False, RAISED + timedelta(minutes=2), rules)
