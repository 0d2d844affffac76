"""A reading's parameters: names, LOINC codes, °F to °C, and what a living person can show."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessions.domain.news2 import score
from sessions.domain.rules import DEFAULT_BOUNDS
from sessions.domain.vitals import CONSCIOUSNESS, LOINC, PARAMETERS, fahrenheit_to_celsius, out_of_bounds


def test_every_parameter_with_a_loinc_code_for_fhir_export():
    assert set(PARAMETERS) == {"heart_rate", "systolic", "diastolic", "respiratory_rate", "spo2", "temperature", "on_oxygen",
                               "consciousness"}
    assert LOINC == {"heart_rate": "8867-4", "systolic": "8480-6", "diastolic": "8462-4", "respiratory_rate": "9279-1",
                     "spo2": "2708-6", "temperature": "8310-5"}
    assert CONSCIOUSNESS == ("alert", "new_confusion", "voice", "pain", "unresponsive")
    assert set(DEFAULT_BOUNDS) <= set(PARAMETERS)


# --- °F to °C ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fahrenheit, celsius", [
    (32, "0.0"), (212, "100.0"), (Decimal("98.6"), "37.0"), (98.6, "37.0"), (104, "40.0"), ("95.0", "35.0"),
    # On the chart's temperature edges: 35.0 °C scores 3, 35.1 °C scores 1.
    (Decimal("95.08"), "35.0"), (Decimal("95.09"), "35.1"), (Decimal("96.8"), "36.0"), (Decimal("96.98"), "36.1"),
    (Decimal("102.2"), "39.0"), (Decimal("102.38"), "39.1"),
])
def test_fahrenheit_becomes_celsius_to_one_decimal_halves_up(fahrenheit, celsius):
    converted = fahrenheit_to_celsius(fahrenheit)
    assert converted == Decimal(celsius) and converted.as_tuple().exponent == -1


@given(st.decimals(min_value=Decimal("77.0"), max_value=Decimal("113.0"), places=2))
def test_the_conversion_is_within_half_a_tenth_of_the_exact_value(fahrenheit):
    exact = (fahrenheit - 32) * 5 / 9
    converted = fahrenheit_to_celsius(fahrenheit)
    assert abs(converted - exact) <= Decimal("0.05") and converted.as_tuple().exponent == -1


def test_a_converted_temperature_scores_like_the_celsius_one():
    assert score({"temperature": fahrenheit_to_celsius(Decimal("95.09"))}, 1).points["temperature"] == 1
    assert score({"temperature": fahrenheit_to_celsius(Decimal("95.08"))}, 1).points["temperature"] == 3


# --- bounds -----------------------------------------------------------------------------------

EDGES = [(parameter, low, high) for parameter, (low, high) in DEFAULT_BOUNDS.items()]
STEP = {"temperature": Decimal("0.1")}


@pytest.mark.parametrize("parameter, low, high", EDGES)
def test_the_bounds_themselves_are_accepted(parameter, low, high):
    assert out_of_bounds({parameter: low}, DEFAULT_BOUNDS) == {}
    assert out_of_bounds({parameter: high}, DEFAULT_BOUNDS) == {}


@pytest.mark.parametrize("parameter, low, high", EDGES)
def test_a_step_past_a_bound_is_refused_naming_the_bound(parameter, low, high):
    step = STEP.get(parameter, 1)
    below = out_of_bounds({parameter: low - step}, DEFAULT_BOUNDS)
    above = out_of_bounds({parameter: high + step}, DEFAULT_BOUNDS)
    assert list(below) == [parameter] and f"below {low}" in below[parameter]
    assert list(above) == [parameter] and f"above {high}" in above[parameter]


@given(st.sampled_from(sorted(DEFAULT_BOUNDS)), st.decimals(min_value=-1000, max_value=1000, places=1))
def test_a_value_is_refused_exactly_when_it_is_outside_its_bounds(parameter, value):
    low, high = DEFAULT_BOUNDS[parameter]
    faults = out_of_bounds({parameter: value}, DEFAULT_BOUNDS)
    assert (parameter in faults) is not (low <= value <= high)


def test_configured_bounds_are_the_ones_checked():
    bounds = {**DEFAULT_BOUNDS, "heart_rate": (Decimal(30), Decimal(250))}
    assert out_of_bounds({"heart_rate": 260}, bounds) == {"heart_rate": "heart_rate 260 is above 250, the highest a living person can show"}
    assert out_of_bounds({"heart_rate": 25}, bounds) == {"heart_rate": "heart_rate 25 is below 30, the lowest a living person can show"}


def test_every_field_at_fault_is_named_at_once_and_missing_ones_are_not_checked():
    faults = out_of_bounds({"heart_rate": 400, "spo2": 101, "temperature": Decimal("24.9"), "systolic": None,
                            "consciousness": "alert", "on_oxygen": True}, DEFAULT_BOUNDS)
    assert set(faults) == {"heart_rate", "spo2", "temperature"}


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("nan"), float("-inf"), "ninety"])
def test_something_that_is_not_a_number_is_refused(value):
    assert out_of_bounds({"heart_rate": value}, DEFAULT_BOUNDS) == {"heart_rate": "heart_rate must be a number"}


@pytest.mark.parametrize("systolic, diastolic, refused", [(120, 80, False), (120, 119, False), (120, 120, True), (90, 110, True)])
def test_diastolic_must_be_below_systolic(systolic, diastolic, refused):
    faults = out_of_bounds({"systolic": systolic, "diastolic": diastolic}, DEFAULT_BOUNDS)
    if refused:
        assert faults == {"diastolic": f"diastolic {diastolic} must be below systolic {systolic}"}
    else:
        assert faults == {}


def test_diastolic_alone_or_beside_a_refused_systolic_is_checked_only_against_its_bounds():
    assert out_of_bounds({"diastolic": 150}, DEFAULT_BOUNDS) == {}
    assert set(out_of_bounds({"systolic": 20, "diastolic": 60}, DEFAULT_BOUNDS)) == {"systolic"}
