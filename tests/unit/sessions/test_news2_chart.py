"""Every band of the NEWS2 chart (RCP 2017) at both of its edges, each parameter on its own.

Two independent readings of the chart hold the scorer: the edge tables below, copied value by value
from the chart, and the band tables (lowest, highest, points) the hypothesis properties draw from,
each of which also carries every edge as an explicit example.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sessions.domain.news2 import score
from sessions.domain.vitals import CONSCIOUSNESS

# --- the chart as bands: (lowest, highest, points), inclusive; None at an open end -----------

BANDS = {
    "respiratory_rate": [(None, 8, 3), (9, 11, 1), (12, 20, 0), (21, 24, 2), (25, None, 3)],
    "systolic": [(None, 90, 3), (91, 100, 2), (101, 110, 1), (111, 219, 0), (220, None, 3)],
    "heart_rate": [(None, 40, 3), (41, 50, 1), (51, 90, 0), (91, 110, 1), (111, 130, 2), (131, None, 3)],
    "spo2_scale_1": [(None, 91, 3), (92, 93, 2), (94, 95, 1), (96, None, 0)],
    "spo2_scale_2_air": [(None, 83, 3), (84, 85, 2), (86, 87, 1), (88, 92, 0), (93, None, 0)],
    "spo2_scale_2_oxygen": [(None, 83, 3), (84, 85, 2), (86, 87, 1), (88, 92, 0), (93, 94, 1), (95, 96, 2), (97, None, 3)],
}
# Temperature in tenths of a degree: 35.0 °C is 350.
TEMPERATURE_TENTHS = [(None, 350, 3), (351, 360, 1), (361, 380, 0), (381, 390, 1), (391, None, 2)]
# What the scorer is asked over: the bounds of a living person (sessions.domain.rules.DEFAULT_BOUNDS).
RANGES = {"respiratory_rate": (2, 80), "systolic": (40, 300), "heart_rate": (20, 300), "spo2": (50, 100)}

# --- the chart as edges, value by value --------------------------------------------------------

EDGES = {
    "respiratory_rate": [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)],
    "systolic": [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
    "heart_rate": [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3)],
}
SPO2_SCALE_1_EDGES = [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SPO2_SCALE_2_EDGES = [  # (spo2, on oxygen, points for the saturation alone)
    (83, False, 3), (84, False, 2), (85, False, 2), (86, False, 1), (87, False, 1), (88, False, 0), (92, False, 0),
    (93, False, 0), (100, False, 0),
    (83, True, 3), (84, True, 2), (85, True, 2), (86, True, 1), (87, True, 1), (88, True, 0), (92, True, 0),
    (93, True, 1), (94, True, 1), (95, True, 2), (96, True, 2), (97, True, 3), (100, True, 3),
]
TEMPERATURE_EDGES = [("35.0", 3), ("35.1", 1), ("36.0", 1), ("36.1", 0), ("38.0", 0), ("38.1", 1), ("39.0", 1), ("39.1", 2),
                     ("25.0", 3), ("45.0", 2)]
# Finer than the chart: rounded to one decimal place first, halves up.
TEMPERATURE_ROUNDED = [("35.04", 3), ("35.05", 1), ("36.04", 1), ("36.05", 0), ("38.04", 0), ("38.05", 1), ("39.04", 1),
                       ("39.05", 2), ("34.95", 3), ("36.149", 0)]


def band_points(bands, value) -> int:
    (points,) = [p for low, high, p in bands if (low is None or low <= value) and (high is None or value <= high)]
    return points


def band_edges(bands) -> list[int]:
    return [edge for low, high, _ in bands for edge in (low, high) if edge is not None]


def with_examples(cases):
    """Each case (a value, or a tuple of the test's values) as an explicit hypothesis example: every
    edge is tried on every run, not left to luck."""
    def decorate(test):
        for case in cases:
            test = example(*case)(test) if isinstance(case, tuple) else example(case)(test)
        return test
    return decorate


def points_of(parameter, value, spo2_scale=1, **others) -> int:
    result = score({parameter: value, **others}, spo2_scale)
    return result.points[parameter]


# --- the test tables themselves: no gap, no overlap, every edge on both sides -------------------


@pytest.mark.parametrize("bands", [*BANDS.values(), TEMPERATURE_TENTHS])
def test_the_band_tables_cover_every_value_once(bands):
    for (_, high, _), (low, _, _) in zip(bands, bands[1:], strict=False):
        assert low == high + 1
    assert bands[0][0] is None and bands[-1][1] is None


@pytest.mark.parametrize("parameter", EDGES)
def test_the_edge_tables_agree_with_the_bands(parameter):
    assert [value for value, _ in EDGES[parameter]] == band_edges(BANDS[parameter])
    assert all(points == band_points(BANDS[parameter], value) for value, points in EDGES[parameter])


# --- respiration rate, systolic pressure, pulse -------------------------------------------------


@pytest.mark.parametrize("parameter, value, points", [(p, v, pts) for p, edges in EDGES.items() for v, pts in edges])
def test_each_edge_of_the_chart_scores_as_printed(parameter, value, points):
    assert points_of(parameter, value) == points


@given(st.integers(*RANGES["respiratory_rate"]))
@with_examples(band_edges(BANDS["respiratory_rate"]) + list(RANGES["respiratory_rate"]))
def test_respiration_rate_scores_its_band(rate):
    assert points_of("respiratory_rate", rate) == band_points(BANDS["respiratory_rate"], rate)


@given(st.integers(*RANGES["systolic"]))
@with_examples(band_edges(BANDS["systolic"]) + list(RANGES["systolic"]))
def test_systolic_pressure_scores_its_band(systolic):
    assert points_of("systolic", systolic) == band_points(BANDS["systolic"], systolic)


@given(st.integers(*RANGES["heart_rate"]))
@with_examples(band_edges(BANDS["heart_rate"]) + list(RANGES["heart_rate"]))
def test_pulse_scores_its_band(pulse):
    assert points_of("heart_rate", pulse) == band_points(BANDS["heart_rate"], pulse)


@pytest.mark.parametrize("parameter, value, points", [
    ("systolic", Decimal("90.4"), 3), ("systolic", Decimal("90.5"), 2), ("heart_rate", Decimal("130.49"), 2),
    ("heart_rate", 130.5, 3), ("respiratory_rate", 8.49, 3), ("spo2", Decimal("95.5"), 0),
])
def test_a_value_given_with_decimals_is_read_to_the_whole_number_halves_up(parameter, value, points):
    assert points_of(parameter, value) == points


# --- SpO2, both scales, air or oxygen ----------------------------------------------------------


@pytest.mark.parametrize("spo2, points", SPO2_SCALE_1_EDGES)
@pytest.mark.parametrize("on_oxygen", [False, True])
def test_spo2_on_scale_1_scores_as_printed_on_air_and_on_oxygen(spo2, points, on_oxygen):
    assert points_of("spo2", spo2, 1, on_oxygen=on_oxygen) == points


@given(st.integers(*RANGES["spo2"]), st.sampled_from([None, False, True]))
@with_examples([(edge, on_oxygen) for edge in band_edges(BANDS["spo2_scale_1"]) + list(RANGES["spo2"])
                for on_oxygen in (None, False, True)])
def test_spo2_on_scale_1_scores_its_band_whatever_the_oxygen(spo2, on_oxygen):
    assert points_of("spo2", spo2, 1, on_oxygen=on_oxygen) == band_points(BANDS["spo2_scale_1"], spo2)


@pytest.mark.parametrize("spo2, on_oxygen, points", SPO2_SCALE_2_EDGES)
def test_spo2_on_scale_2_scores_as_printed(spo2, on_oxygen, points):
    assert points_of("spo2", spo2, 2, on_oxygen=on_oxygen) == points


@given(st.integers(*RANGES["spo2"]), st.booleans())
@with_examples([(edge, on_oxygen) for on_oxygen, table in ((False, "spo2_scale_2_air"), (True, "spo2_scale_2_oxygen"))
                for edge in band_edges(BANDS[table])])
def test_spo2_on_scale_2_scores_its_band_on_air_or_oxygen(spo2, on_oxygen):
    table = BANDS["spo2_scale_2_oxygen" if on_oxygen else "spo2_scale_2_air"]
    assert points_of("spo2", spo2, 2, on_oxygen=on_oxygen) == band_points(table, spo2)


@given(st.integers(*RANGES["spo2"]))
@with_examples([92, 93])
def test_spo2_on_scale_2_without_air_or_oxygen_scores_only_where_both_rows_agree(spo2):
    result = score({"spo2": spo2, "heart_rate": 70}, 2)
    if spo2 <= 92:
        assert result.points["spo2"] == band_points(BANDS["spo2_scale_2_air"], spo2)
    else:
        assert "spo2" not in result.points and not result.complete


@pytest.mark.parametrize("on_oxygen, points", [(False, 0), (True, 2)])
@pytest.mark.parametrize("spo2_scale", [1, 2])
def test_oxygen_scores_two_on_either_scale(on_oxygen, points, spo2_scale):
    assert points_of("on_oxygen", on_oxygen, spo2_scale) == points


# --- consciousness, temperature ------------------------------------------------------------------


@pytest.mark.parametrize("level, points", [("alert", 0), ("new_confusion", 3), ("voice", 3), ("pain", 3), ("unresponsive", 3)])
def test_every_acvpu_level_scores_as_printed(level, points):
    assert points_of("consciousness", level) == points


def test_the_chart_knows_every_acvpu_level_the_api_takes():
    assert {level for level in CONSCIOUSNESS} == {"alert", "new_confusion", "voice", "pain", "unresponsive"}


@pytest.mark.parametrize("celsius, points", TEMPERATURE_EDGES + TEMPERATURE_ROUNDED)
def test_each_temperature_edge_scores_as_printed(celsius, points):
    assert points_of("temperature", Decimal(celsius)) == points


@pytest.mark.parametrize("celsius, points", [(35.05, 1), (35.04, 3), (39.05, 2), (37, 0), (35, 3), (39, 1)])
def test_a_temperature_given_as_a_float_or_an_integer_is_read_the_same_way(celsius, points):
    assert points_of("temperature", celsius) == points


@given(st.integers(250, 450), st.integers(-5, 4))
@with_examples([(edge, offset) for edge in band_edges(TEMPERATURE_TENTHS) for offset in (-5, 0, 4)])
def test_a_temperature_scores_the_band_of_its_value_to_one_decimal(tenths, hundredths):
    # tenths/10 + hundredths/100 with hundredths in -5..4 reads as tenths/10 when rounded halves up.
    celsius = Decimal(tenths) / 10 + Decimal(hundredths) / 100
    assert points_of("temperature", celsius) == band_points(TEMPERATURE_TENTHS, tenths)
