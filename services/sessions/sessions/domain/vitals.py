"""A reading's parameters: their names, their LOINC codes, what a living person can show, °F to °C.

A reading is one set of vital signs taken at one time by one device (or a nurse): any of PARAMETERS.
The API takes the temperature in °C. A monitor that measures in °F converts before it posts;
`fahrenheit_to_celsius` is that conversion, for a device adapter, a simulator or a test, rounded the
way the NEWS2 chart reads temperatures (one decimal place).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Every parameter a reading may carry, under the names the API, the tables and the NEWS2 points use.
PARAMETERS = ("heart_rate", "systolic", "diastolic", "respiratory_rate", "spo2", "temperature", "on_oxygen", "consciousness")

# LOINC codes, so the readings can be exported as FHIR vital-signs Observations. on_oxygen and
# consciousness have no code here: FHIR's vital-signs profile has none for them.
LOINC = {
    "heart_rate": "8867-4",
    "systolic": "8480-6",
    "diastolic": "8462-4",
    "respiratory_rate": "9279-1",
    "spo2": "2708-6",
    "temperature": "8310-5",
}

# ACVPU, in the chart's order: alert, new confusion, responds to voice, to pain, unresponsive.
CONSCIOUSNESS = ("alert", "new_confusion", "voice", "pain", "unresponsive")

_TENTH = Decimal("0.1")


def as_decimal(value) -> Decimal:
    """A number as a Decimal; a float goes through its shortest text (35.05, not 35.0499999...)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def fahrenheit_to_celsius(value) -> Decimal:
    """°F to °C, to one decimal place, halves rounded up (98.6 °F is 37.0 °C; 95.09 °F is 35.1 °C)."""
    celsius = (as_decimal(value) - 32) * 5 / 9
    return celsius.quantize(_TENTH, rounding=ROUND_HALF_UP)


def _number(value) -> Decimal | None:
    """The value as a finite Decimal, or None when it is not a number."""
    try:
        number = as_decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        return None
    return number if number.is_finite() else None


def out_of_bounds(values: dict, bounds: dict) -> dict[str, str]:
    """Each field whose value no living person can show, with a message naming the bound it passed.

    `bounds` maps a parameter to its inclusive (lowest, highest), as SessionRules.bounds does;
    parameters absent from `values` (or None) and parameters without bounds are not checked.
    A diastolic pressure at or above the systolic one is refused too: the probe or the typing is wrong.
    An empty answer means the reading may be stored and scored.
    """
    faults: dict[str, str] = {}
    numbers: dict[str, Decimal] = {}
    # Each value read as a number once: monitors post batches, and this runs for every reading.
    for parameter in (*bounds, *(name for name in ("systolic", "diastolic") if name not in bounds)):
        value = values.get(parameter)
        if value is None:
            continue
        number = _number(value)
        lowest, highest = bounds.get(parameter, (None, None))
        if number is None:
            faults[parameter] = f"{parameter} must be a number"
        elif lowest is not None and number < lowest:
            faults[parameter] = f"{parameter} {value} is below {lowest}, the lowest a living person can show"
        elif highest is not None and number > highest:
            faults[parameter] = f"{parameter} {value} is above {highest}, the highest a living person can show"
        else:
            numbers[parameter] = number
    systolic, diastolic = numbers.get("systolic"), numbers.get("diastolic")
    if systolic is not None and diastolic is not None and diastolic >= systolic:
        faults["diastolic"] = f"diastolic {values['diastolic']} must be below systolic {values['systolic']}"
    return faults
