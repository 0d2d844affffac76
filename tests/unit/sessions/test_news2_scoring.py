"""NEWS2 of whole sets: totals from the chart, partial sets, and partial sets completed from recent readings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.domain.news2 import SCORED, Score, completed_from_recent, score
from sessions.domain.vitals import CONSCIOUSNESS

CALM = {"respiratory_rate": 16, "spo2": 98, "on_oxygen": False, "systolic": 120, "heart_rate": 70,
        "consciousness": "alert", "temperature": Decimal("37.0")}


def reading(**changes) -> dict:
    return {**CALM, **changes}


# --- complete sets, from the chart ------------------------------------------------------------

EXAMPLES = [
    # (values, spo2 scale, total, the points of each parameter)
    (reading(), 1, 0, dict.fromkeys(SCORED, 0)),
    (reading(respiratory_rate=22, spo2=95, on_oxygen=True, systolic=105, heart_rate=115, temperature=Decimal("38.5")), 1, 9,
     {"respiratory_rate": 2, "spo2": 1, "on_oxygen": 2, "systolic": 1, "heart_rate": 2, "consciousness": 0, "temperature": 1}),
    (reading(respiratory_rate=24, spo2=97, on_oxygen=True, systolic=100, heart_rate=131, consciousness="voice",
             temperature=Decimal("39.1")), 2, 17,
     {"respiratory_rate": 2, "spo2": 3, "on_oxygen": 2, "systolic": 2, "heart_rate": 3, "consciousness": 3, "temperature": 2}),
    (reading(respiratory_rate=8, spo2=91, on_oxygen=True, systolic=90, heart_rate=40, consciousness="unresponsive",
             temperature=Decimal("35.0")), 1, 20,
     {"respiratory_rate": 3, "spo2": 3, "on_oxygen": 2, "systolic": 3, "heart_rate": 3, "consciousness": 3, "temperature": 3}),
    # The same 93 % on scale 2: nothing on air, one point (and two for the oxygen) on oxygen.
    (reading(spo2=93), 2, 0, dict.fromkeys(SCORED, 0)),
    (reading(spo2=93, on_oxygen=True), 2, 3, {**dict.fromkeys(SCORED, 0), "spo2": 1, "on_oxygen": 2}),
    # A red score alone: new confusion, everything else calm.
    (reading(consciousness="new_confusion"), 1, 3, {**dict.fromkeys(SCORED, 0), "consciousness": 3}),
    (reading(systolic=220, heart_rate=51, respiratory_rate=12, temperature=Decimal("36.1")), 1, 3,
     {**dict.fromkeys(SCORED, 0), "systolic": 3}),
]


@pytest.mark.parametrize("values, spo2_scale, total, points", EXAMPLES)
def test_a_complete_set_scores_its_total_and_each_parameter(values, spo2_scale, total, points):
    assert score(values, spo2_scale) == Score(total=total, points=points, complete=True)


def test_the_points_are_listed_in_the_chart_order_under_the_reading_field_names():
    assert list(score(reading(), 1).points) == ["respiratory_rate", "spo2", "on_oxygen", "systolic", "heart_rate",
                                                "consciousness", "temperature"]


def test_scored_lists_the_parameters_that_scored_points_for_the_alert():
    result = score(reading(heart_rate=115, on_oxygen=True, consciousness="pain"), 1)
    assert result.scored() == [{"parameter": "on_oxygen", "points": 2}, {"parameter": "heart_rate", "points": 2},
                               {"parameter": "consciousness", "points": 3}]
    assert score(reading(), 1).scored() == []


complete_sets = st.fixed_dictionaries({
    "respiratory_rate": st.integers(2, 80), "spo2": st.integers(50, 100), "on_oxygen": st.booleans(),
    "systolic": st.integers(40, 300), "heart_rate": st.integers(20, 300), "consciousness": st.sampled_from(CONSCIOUSNESS),
    "temperature": st.decimals(min_value=Decimal("25.0"), max_value=Decimal("45.0"), places=1),
    "diastolic": st.integers(20, 200),
})


@given(complete_sets, st.sampled_from([1, 2]))
def test_the_total_of_a_complete_set_is_the_sum_of_its_seven_parameters(values, spo2_scale):
    result = score(values, spo2_scale)
    assert result.complete and set(result.points) == set(SCORED)
    assert result.total == sum(result.points.values())
    assert 0 <= result.total <= 20 and all(0 <= points <= 3 for points in result.points.values())
    # Each parameter scores the same alone as within the set (SpO2 on scale 2 needs the oxygen beside it).
    for parameter in SCORED:
        alone = {parameter: values[parameter], "on_oxygen": values["on_oxygen"]}
        assert score(alone, spo2_scale).points[parameter] == result.points[parameter]


@given(complete_sets)
def test_diastolic_pressure_is_not_scored(values):
    assert score(values, 1) == score({**values, "diastolic": None}, 1)
    assert "diastolic" not in score(values, 1).points


# --- partial sets -----------------------------------------------------------------------------


@given(complete_sets, st.sets(st.sampled_from(SCORED)), st.sampled_from([1, 2]))
def test_a_partial_set_scores_the_parameters_it_has(values, missing, spo2_scale):
    partial = {name: (None if name in missing else value) for name, value in values.items()}
    result = score(partial, spo2_scale)
    full = score(values, spo2_scale)
    present = [name for name in SCORED if name not in missing]
    if not present:
        assert result is None
        return
    # Scale 2 cannot read 93 % and more without knowing air or oxygen.
    unreadable = spo2_scale == 2 and "on_oxygen" in missing and values["spo2"] >= 93
    expected = [name for name in present if not (name == "spo2" and unreadable)]
    if not expected:
        assert result is None
        return
    assert list(result.points) == expected
    assert result.points == {name: full.points[name] for name in expected}
    assert result.total == sum(result.points.values()) <= full.total
    assert result.complete is (len(expected) == len(SCORED))


def test_a_partial_set_example():
    assert score({"heart_rate": 120, "temperature": Decimal("38.2")}, 1) == Score(
        total=3, points={"heart_rate": 2, "temperature": 1}, complete=False)


@pytest.mark.parametrize("values", [{}, {"diastolic": 80}, dict.fromkeys(SCORED), {"measured_at": "now", "device_id": "d"}])
def test_a_set_with_nothing_to_score_has_no_score(values):
    assert score(values, 1) is None


def test_scale_2_without_air_or_oxygen_leaves_a_high_saturation_unscored():
    assert score({"spo2": 95}, 2) is None
    assert score({"spo2": 95}, 1) == Score(total=1, points={"spo2": 1}, complete=False)


@pytest.mark.parametrize("values, spo2_scale", [
    (reading(), 3), (reading(), 0), (reading(consciousness="asleep"), 1), (reading(on_oxygen="yes"), 1),
    (reading(spo2=95, on_oxygen="no"), 2),
])
def test_what_the_chart_cannot_read_is_refused(values, spo2_scale):
    with pytest.raises(ValueError):
        score(values, spo2_scale)


# --- partial sets completed from recent readings ------------------------------------------------

AT = datetime(2030, 3, 4, 10, 30, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=15)


def test_a_missing_parameter_takes_its_latest_value_within_the_window():
    recent = [(AT - timedelta(minutes=10), reading(temperature=Decimal("38.4"))),
              (AT - timedelta(minutes=2), {"temperature": Decimal("38.9"), "heart_rate": 130}),
              (AT - timedelta(minutes=5), reading(temperature=Decimal("37.2")))]
    completed = completed_from_recent({"heart_rate": 95}, recent, AT, WINDOW)
    assert completed == {**CALM, "heart_rate": 95, "temperature": Decimal("38.9")}
    assert score(completed, 1).complete


@pytest.mark.parametrize("taken_before, used", [
    (timedelta(0), True), (WINDOW, True), (WINDOW - timedelta(microseconds=1), True),
    (WINDOW + timedelta(microseconds=1), False), (timedelta(hours=3), False), (-timedelta(microseconds=1), False),
])
def test_the_window_holds_readings_from_at_minus_window_up_to_at(taken_before, used):
    completed = completed_from_recent({"heart_rate": 95}, [(AT - taken_before, {"systolic": 100})], AT, WINDOW)
    assert completed.get("systolic") == (100 if used else None)


def test_the_set_s_own_values_win_and_none_is_missing():
    recent = [(AT - timedelta(minutes=1), reading(heart_rate=140, systolic=95, spo2=None))]
    completed = completed_from_recent({"heart_rate": 60, "systolic": None}, recent, AT, WINDOW)
    assert completed["heart_rate"] == 60 and completed["systolic"] == 95
    assert "spo2" not in completed       # a None in a recent reading fills nothing


def test_only_scored_parameters_are_filled_and_the_set_given_is_left_as_it_came():
    values = {"heart_rate": 60}
    completed = completed_from_recent(values, [(AT - timedelta(minutes=1), {"diastolic": 70, "on_oxygen": True})], AT, WINDOW)
    assert completed == {"heart_rate": 60, "on_oxygen": True}
    assert values == {"heart_rate": 60}


def test_each_parameter_comes_from_its_own_latest_reading():
    recent = [(AT - timedelta(minutes=3), {"spo2": 91}), (AT - timedelta(minutes=1), {"consciousness": "voice"}),
              (AT - timedelta(minutes=8), {"spo2": 99, "consciousness": "alert", "respiratory_rate": 18})]
    assert completed_from_recent({}, recent, AT, WINDOW) == {"spo2": 91, "consciousness": "voice", "respiratory_rate": 18}


@given(st.lists(st.tuples(st.integers(-30 * 60, 60), st.integers(20, 300)), max_size=12))
def test_the_filled_value_is_the_latest_one_inside_the_window(readings):
    recent = [(AT + timedelta(seconds=offset), {"heart_rate": rate}) for offset, rate in readings]
    inside = [(offset, rate) for offset, rate in readings if -WINDOW.total_seconds() <= offset <= 0]
    completed = completed_from_recent({}, recent, AT, WINDOW)
    if not inside:
        assert "heart_rate" not in completed
    else:
        latest = max(offset for offset, _ in inside)
        assert completed["heart_rate"] in {rate for offset, rate in inside if offset == latest}
