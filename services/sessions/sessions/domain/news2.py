"""The NEWS2 score of a set of readings, as the Royal College of Physicians' 2017 chart gives it.

Chart 1 of "National Early Warning Score (NEWS) 2" (RCP, London, 2017), one row per parameter:

    respiration rate /min   <=8: 3   9-11: 1   12-20: 0   21-24: 2   >=25: 3
    SpO2 scale 1 %          <=91: 3  92-93: 2  94-95: 1   >=96: 0
    SpO2 scale 2 %          <=83: 3  84-85: 2  86-87: 1   88-92 or >=93 on air: 0
                            93-94 on oxygen: 1   95-96 on oxygen: 2   >=97 on oxygen: 3
    air or oxygen           air: 0   oxygen: 2
    systolic pressure mmHg  <=90: 3  91-100: 2  101-110: 1  111-219: 0  >=220: 3
    pulse /min              <=40: 3  41-50: 1  51-90: 0   91-110: 1  111-130: 2  >=131: 3
    consciousness (ACVPU)   alert: 0   new confusion, voice, pain, unresponsive: 3
    temperature °C          <=35.0: 3  35.1-36.0: 1  36.1-38.0: 0  38.1-39.0: 1  >=39.1: 2

Scale 2 is for a patient whose target saturation a neurologist set to the hypercapnic range (88-92 %).

The chart reads whole numbers, and temperatures to one decimal place. A value given more finely is
first rounded to the chart's precision, halves up (35.05 °C reads as 35.1 and scores 1; 35.04 reads
as 35.0 and scores 3; a pulse of 90.5 reads as 91), so every value falls in exactly one band.
Diastolic pressure is not on the chart and is not scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sessions.domain.vitals import CONSCIOUSNESS, as_decimal

# The scored parameters, in the chart's order, under the reading's field names.
SCORED = ("respiratory_rate", "spo2", "on_oxygen", "systolic", "heart_rate", "consciousness", "temperature")
SPO2_SCALES = (1, 2)

# Each row: (the highest value of a band, its points), lowest band first; the last band has no top.
_RESPIRATORY_RATE = ((8, 3), (11, 1), (20, 0), (24, 2), (None, 3))
_SYSTOLIC = ((90, 3), (100, 2), (110, 1), (219, 0), (None, 3))
_HEART_RATE = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (None, 3))
_TEMPERATURE = ((Decimal("35.0"), 3), (Decimal("36.0"), 1), (Decimal("38.0"), 0), (Decimal("39.0"), 1), (None, 2))
_SPO2_SCALE_1 = ((91, 3), (93, 2), (95, 1), (None, 0))
# On scale 2, 93 % and above score nothing on air but points on oxygen (too much oxygen for a
# patient who retains CO2); at 92 % and below the two rows agree.
_SPO2_SCALE_2_AIR = ((83, 3), (85, 2), (87, 1), (None, 0))
_SPO2_SCALE_2_OXYGEN = ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (None, 3))
_SPO2_SCALE_2_SAME_ON_AIR_AND_OXYGEN = 92

_OXYGEN_POINTS = 2
_NOT_ALERT_POINTS = 3


@dataclass(frozen=True)
class Score:
    """A set's NEWS2: the total and each scored parameter's points (complete when all seven scored)."""

    total: int
    points: dict[str, int]
    complete: bool

    def scored(self) -> list[dict]:
        """The parameters that scored points, in the chart's order: why an alert was raised."""
        return [{"parameter": name, "points": points} for name, points in self.points.items() if points > 0]


def _band(row, value) -> int:
    for highest, points in row:
        if highest is None or value <= highest:
            return points
    raise AssertionError("every row ends with a band without a top")


def _whole(value) -> int | Decimal:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return as_decimal(value).quantize(Decimal(1), rounding=ROUND_HALF_UP)


def _on_oxygen(value) -> bool:
    if value not in (True, False):   # 0 and 1 as a database may give them back, not text
        raise ValueError(f"on_oxygen must be true or false, got {value!r}")
    return bool(value)


def _spo2(value, on_oxygen, spo2_scale: int) -> int | None:
    spo2 = _whole(value)
    if spo2_scale == 1:
        return _band(_SPO2_SCALE_1, spo2)
    if on_oxygen is None:
        # Without knowing air or oxygen, scale 2 can be read only where its two rows agree.
        return _band(_SPO2_SCALE_2_AIR, spo2) if spo2 <= _SPO2_SCALE_2_SAME_ON_AIR_AND_OXYGEN else None
    return _band(_SPO2_SCALE_2_OXYGEN if _on_oxygen(on_oxygen) else _SPO2_SCALE_2_AIR, spo2)


def _consciousness(value) -> int:
    if value not in CONSCIOUSNESS:
        raise ValueError(f"consciousness must be one of {', '.join(CONSCIOUSNESS)}, got {value!r}")
    return 0 if value == CONSCIOUSNESS[0] else _NOT_ALERT_POINTS


def _points(parameter: str, value, values: dict, spo2_scale: int) -> int | None:
    if parameter == "respiratory_rate":
        return _band(_RESPIRATORY_RATE, _whole(value))
    if parameter == "spo2":
        return _spo2(value, values.get("on_oxygen"), spo2_scale)
    if parameter == "on_oxygen":
        return _OXYGEN_POINTS if _on_oxygen(value) else 0
    if parameter == "systolic":
        return _band(_SYSTOLIC, _whole(value))
    if parameter == "heart_rate":
        return _band(_HEART_RATE, _whole(value))
    if parameter == "consciousness":
        return _consciousness(value)
    return _band(_TEMPERATURE, as_decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def score(values: dict, spo2_scale: int) -> Score | None:
    """The NEWS2 of a set of readings on SpO2 scale 1 or 2; None when no parameter can be scored.

    `values` maps field names to values (None or absent: not measured; other keys are ignored).
    A partial set scores the parameters it has, with complete=False and the total of those: a lower
    bound of the full score. On scale 2 an SpO2 of 93 % or more scores only when air or oxygen is known.
    Values are expected inside the bounds vitals.out_of_bounds checks; an unknown consciousness level
    or an on_oxygen that is not a boolean raises ValueError.
    """
    if spo2_scale not in SPO2_SCALES:
        raise ValueError(f"spo2_scale must be 1 or 2, got {spo2_scale!r}")
    points: dict[str, int] = {}
    for parameter in SCORED:
        value = values.get(parameter)
        if value is None:
            continue
        scored = _points(parameter, value, values, spo2_scale)
        if scored is not None:
            points[parameter] = scored
    if not points:
        return None
    return Score(total=sum(points.values()), points=points, complete=len(points) == len(SCORED))


def completed_from_recent(values: dict, recent: list[tuple[datetime, dict]], at: datetime, window: timedelta) -> dict:
    """A partial set filled in with each missing scored parameter's latest value from `window` before `at`.

    `recent` holds earlier readings of the same session as (measured_at, values), in any order; the
    caller leaves voided ones out. A reading counts when at - window <= measured_at <= at (both edges
    in: "within 15 minutes" includes the reading 15 minutes ago); readings later than `at` do not
    fill an earlier one. Only the parameters NEWS2 scores are filled; the set's own values always win.
    The answer is a new dict, for scoring; what is stored is the reading as it came.
    """
    completed = dict(values)
    earliest = at - window
    taken_at: dict[str, datetime] = {}
    for measured_at, reading in recent:
        if not earliest <= measured_at <= at:
            continue
        for parameter in SCORED:
            if values.get(parameter) is not None or reading.get(parameter) is None:
                continue
            if parameter not in taken_at or measured_at > taken_at[parameter]:
                taken_at[parameter] = measured_at
                completed[parameter] = reading[parameter]
    return completed
