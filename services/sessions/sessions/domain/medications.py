"""The medication administration record's rules: what a nurse may record as given. Pure: no Flask,
no database, no pika.

An administration names one drug of the session's plan (the session's copy of it) and is held to it:
the same route, the same unit, no more than the planned dose, and, where the plan sets a maximum per
24 hours, no 24-hour period holding more of that drug than the maximum. "That drug" is every
non-voided administration to the patient, in this session or any other, of the same name (whatever
its case) in the same unit.

The 24-hour rule looks both ways. A dose recorded late (given at 10:00, entered after an 11:00 dose
was recorded) joins the 24 hours that end at 10:00 and also those that end at each later
administration within the next 24 hours: any of them past the maximum refuses it. Otherwise a
late entry could leave a later period over the limit, unnoticed.

A time given is refused when it lies ahead of the clinic's clock by more than the allowed skew, or
before the session started (nothing is given through a drip that is not in yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

DAY = timedelta(hours=24)


@dataclass(frozen=True)
class PlannedDrug:
    """One drug of the session's plan, with the limits an administration is held to."""

    name: str
    dose: Decimal
    unit: str
    route: str
    max_per_24h: Decimal | None = None


@dataclass(frozen=True)
class Administration:
    """What the nurse says was given."""

    dose: Decimal
    unit: str
    route: str
    given_at: datetime


@dataclass(frozen=True)
class Window:
    """The 24 hours ending at `ends_at` (excluded start, included end) and what they would hold."""

    ends_at: datetime
    total: Decimal


def drug_key(name: str) -> str:
    """The drug's name as the 24-hour total compares it: the same drug whatever its case or spacing."""
    return " ".join(name.split()).casefold()


def amount(value: Decimal) -> str:
    """A dose as people write it: 30, not 30.0000; 0.5, not 5E-1."""
    return format(value.normalize(), "f")


def too_far_ahead(moment: datetime, now: datetime, skew: timedelta) -> str | None:
    """Why a time given is refused as in the future, or None: later than the clinic's clock allows,
    `skew` ahead at most (a tablet's clock may run a little fast)."""
    if moment > now + skew:
        return f"in the future: later than the clinic's clock allows ({int(skew.total_seconds())} s ahead at most)"
    return None


def fullest_window(doses: list[tuple[datetime, Decimal]], given_at: datetime, dose: Decimal) -> Window:
    """The 24 hours the new dose joins that would hold the most of the drug.

    `doses` are the other non-voided administrations of the same drug (given_at, dose), from any
    session of the patient; those outside 24 hours either side of `given_at` change nothing. The
    windows the new dose is in end at a moment in [given_at, given_at + 24 h); the total in such a
    window only grows when it reaches another administration, so the fullest one ends at given_at or
    at one of the later administrations.
    """
    ends = [given_at] + sorted(at for at, _ in doses if given_at < at < given_at + DAY)
    fullest: Window | None = None
    for end in ends:
        total = dose + sum((other for at, other in doses if end - DAY < at <= end), Decimal(0))
        if fullest is None or total > fullest.total:
            fullest = Window(end, total)
    return fullest


def administration_problems(drug: PlannedDrug, given: Administration, *, now: datetime, skew: timedelta,
                            started_at: datetime, doses_nearby: list[tuple[datetime, Decimal]]) -> dict[str, str]:
    """Why the administration cannot be recorded, by what is at fault (route, unit, dose, total_24h,
    given_at); {} when it can. All problems are listed at once.

    `doses_nearby` are the patient's other non-voided administrations of the same drug in the same
    unit within 24 hours either side of `given_at` (fullest_window); they are only looked at when the
    plan sets a maximum per 24 hours and the unit is the plan's.
    """
    problems = {}
    if given.route != drug.route:
        problems["route"] = f"{drug.name} is planned to be given {drug.route}, not {given.route}"
    if given.unit != drug.unit:
        problems["unit"] = f"{drug.name} is planned in {drug.unit}, not {given.unit}"
    elif given.dose > drug.dose:
        problems["dose"] = f"{amount(given.dose)} {given.unit} is more than the planned dose of {amount(drug.dose)} {drug.unit}"
    if drug.max_per_24h is not None and given.unit == drug.unit:
        window = fullest_window(doses_nearby, given.given_at, given.dose)
        if window.total > drug.max_per_24h:
            problems["total_24h"] = (f"{drug.name} would come to {amount(window.total)} {drug.unit} in the 24 hours up to "
                                     f"{window.ends_at.isoformat()}, past the plan's maximum of {amount(drug.max_per_24h)} "
                                     f"{drug.unit} per 24 hours")
    ahead = too_far_ahead(given.given_at, now, skew)
    if ahead:
        problems["given_at"] = ahead
    elif given.given_at < started_at:
        problems["given_at"] = f"before the session started ({started_at.isoformat()})"
    return problems
