"""The medication administration record's rules (sessions.domain.medications): route, unit, dose,
the 24-hour maximum looked at both ways, and the time given."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.domain.medications import (
    DAY,
    Administration,
    PlannedDrug,
    administration_problems,
    amount,
    drug_key,
    fullest_window,
    too_far_ahead,
)

NOW = datetime(2030, 1, 7, 16, 0, tzinfo=timezone.utc)
STARTED = NOW - timedelta(hours=2)
SKEW = timedelta(seconds=120)
KETOROLAC = PlannedDrug(name="Ketorolac", dose=Decimal("30"), unit="mg", route="IV", max_per_24h=Decimal("90"))


def problems(drug=KETOROLAC, dose="30", unit="mg", route="IV", given_at=NOW, nearby=()):
    administration = Administration(dose=Decimal(dose), unit=unit, route=route, given_at=given_at)
    return administration_problems(drug, administration, now=NOW, skew=SKEW, started_at=STARTED,
                                   doses_nearby=[(at, Decimal(d)) for at, d in nearby])


def test_the_planned_dose_by_the_planned_route_in_the_planned_unit_is_recorded():
    assert problems() == {}
    assert problems(dose="15") == {}


def test_a_different_route_is_refused_naming_both():
    assert problems(route="IM") == {"route": "Ketorolac is planned to be given IV, not IM"}


def test_a_different_unit_is_refused_and_its_dose_not_compared():
    assert problems(unit="g", dose="0.03") == {"unit": "Ketorolac is planned in mg, not g"}
    assert set(problems(unit="mcg", dose="30000")) == {"unit"}


def test_more_than_the_planned_dose_is_refused():
    assert problems(dose="30.0001") == {"dose": "30.0001 mg is more than the planned dose of 30 mg"}


def test_every_problem_is_listed_at_once():
    found = problems(dose="60", route="PO", given_at=STARTED - timedelta(minutes=1))
    assert set(found) == {"dose", "route", "given_at"}


def test_a_time_in_the_future_beyond_the_skew_is_refused_and_within_it_is_not():
    assert problems(given_at=NOW + SKEW) == {}
    assert "in the future" in problems(given_at=NOW + SKEW + timedelta(seconds=1))["given_at"]


def test_a_time_before_the_session_started_is_refused():
    assert problems(given_at=STARTED) == {}
    assert problems(given_at=STARTED - timedelta(seconds=1)) == {"given_at": f"before the session started ({STARTED.isoformat()})"}


def test_the_24_hour_total_may_reach_the_maximum_but_not_pass_it():
    earlier = [(NOW - timedelta(hours=3), "30"), (NOW - timedelta(hours=1), "30")]
    assert problems(nearby=earlier) == {}
    refused = problems(nearby=earlier, dose="30.5")
    assert set(refused) == {"dose", "total_24h"}
    assert "would come to 90.5 mg" in refused["total_24h"] and "maximum of 90 mg" in refused["total_24h"]


def test_a_dose_given_24_hours_earlier_or_more_no_longer_counts():
    recent = [(NOW - timedelta(hours=2), "30"), (NOW - timedelta(hours=1), "30")]
    assert problems(nearby=[(NOW - DAY, "30"), *recent]) == {}
    assert problems(nearby=[(NOW - DAY - timedelta(hours=1), "30"), *recent]) == {}
    assert set(problems(nearby=[(NOW - DAY + timedelta(seconds=1), "30"), *recent])) == {"total_24h"}


def test_a_dose_recorded_late_counts_against_the_later_ones_already_recorded():
    # Given at 10:00, recorded after doses at 11:00, at 09:00 the next day and at 11:00 the next day:
    # the 24 hours up to 10:00 hold only it, those up to the next day's 09:00 hold it and two more.
    late = NOW - timedelta(hours=30)
    nearby = [(late + timedelta(hours=hours), Decimal("30")) for hours in (1, 23, 25)]
    window = fullest_window(nearby, late, Decimal("30"))
    assert (window.ends_at, window.total) == (late + timedelta(hours=23), Decimal("90"))
    # One 24 hours earlier than the late dose, or 24 hours after it, is in none of its windows.
    assert fullest_window([(late - DAY, Decimal("30")), (late + DAY, Decimal("30"))], late, Decimal("30")).total == Decimal("30")


def test_the_later_doses_can_refuse_a_late_entry_through_the_rules():
    drug = PlannedDrug(name="Ondansetron", dose=Decimal("4"), unit="mg", route="IV", max_per_24h=Decimal("8"))
    given_at = STARTED + timedelta(minutes=10)
    later = [(STARTED + timedelta(minutes=30), "4"), (STARTED + timedelta(minutes=90), "4")]
    refused = problems(drug=drug, dose="4", given_at=given_at, nearby=later)
    assert set(refused) == {"total_24h"}
    assert (STARTED + timedelta(minutes=90)).isoformat() in refused["total_24h"]


def test_a_drug_without_a_maximum_has_no_24_hour_total():
    drug = PlannedDrug(name="Saline", dose=Decimal("1000"), unit="mL", route="IV")
    assert problems(drug=drug, dose="1000", unit="mL", nearby=[(NOW - timedelta(hours=1), "1000")] * 10) == {}


def test_drug_names_compare_whatever_their_case_and_spacing():
    assert drug_key("Ketorolac") == drug_key(" KETOROLAC ") == "ketorolac"
    assert drug_key("Sodium  Chloride 0.9%") == "sodium chloride 0.9%"


def test_doses_read_as_people_write_them():
    assert [amount(Decimal(text)) for text in ("30.0000", "0.5000", "100", "1E+2")] == ["30", "0.5", "100", "100"]


def test_too_far_ahead_names_the_skew():
    assert too_far_ahead(NOW + SKEW, NOW, SKEW) is None
    assert too_far_ahead(NOW + SKEW + timedelta(microseconds=1), NOW, SKEW) == \
        "in the future: later than the clinic's clock allows (120 s ahead at most)"


MOMENTS = st.integers(min_value=-48 * 60, max_value=48 * 60).map(lambda minutes: NOW + timedelta(minutes=minutes))
DOSES = st.integers(min_value=1, max_value=40).map(Decimal)


def _brute_force_fullest(doses, given_at, dose):
    """Every window ending at every minute the new dose is in (the doses fall on whole minutes)."""
    everything = doses + [(given_at, dose)]
    best = Decimal(0)
    for minute in range(24 * 60):
        end = given_at + timedelta(minutes=minute)
        best = max(best, sum((d for at, d in everything if end - DAY < at <= end), Decimal(0)))
    return best


@given(st.lists(st.tuples(MOMENTS, DOSES), max_size=6), MOMENTS, DOSES)
def test_the_fullest_window_is_the_fullest_of_every_24_hours_the_new_dose_is_in(doses, given_at, dose):
    assert fullest_window(doses, given_at, dose).total == _brute_force_fullest(doses, given_at, dose)


@pytest.mark.parametrize("maximum, allowed", [("60", True), ("59.9999", False)])
def test_the_maximum_counts_this_dose_with_the_others(maximum, allowed):
    drug = PlannedDrug(name="Ketorolac", dose=Decimal("30"), unit="mg", route="IV", max_per_24h=Decimal(maximum))
    assert (problems(drug=drug, nearby=[(NOW - timedelta(hours=5), "30")]) == {}) is allowed
