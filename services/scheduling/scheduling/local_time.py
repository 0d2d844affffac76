"""The clinic's wall clock: office hours and closures in local time, turned into open windows in UTC.

Office hours are a weekly template in the clinic's local time ("Mondays 08:00-12:00 and
13:00-17:00") and closures are local dates. Everything else in scheduling is UTC, so each local
day is converted with that day's own UTC offset: 08:00 in New York is 13:00 UTC in January and
12:00 UTC in July, and a booking stored in UTC never moves when the clocks change.

Wall-clock times that do not exist or occur twice (only around 01:00-03:00 on a change day):
a time inside the spring-forward gap is read as if the clocks had not moved yet (02:30 becomes
03:30 new time); a time that occurs twice is its first occurrence. Python's zoneinfo does
exactly this for fold=0, which is what datetime.combine gives.
No framework imports: plain rules, tested in tests/unit (the free slots inside the windows: slot_finder).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from clinic.errors import RuleViolation

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

Window = tuple[datetime, datetime]


@dataclass(frozen=True, order=True)
class OpenInterval:
    """One open interval of the weekly template, in local wall-clock time; weekday 0 is Monday."""

    weekday: int
    opens: time
    closes: time


def check_template(intervals: Iterable[OpenInterval]) -> None:
    """Each interval opens before it closes (no overnight intervals), and a day's intervals do not overlap."""
    problems: dict[str, list[str]] = {}
    by_day: dict[int, list[OpenInterval]] = {}
    for interval in intervals:
        by_day.setdefault(interval.weekday, []).append(interval)
    for weekday, day in sorted(by_day.items()):
        name = WEEKDAYS[weekday]
        day.sort()
        for interval in day:
            if interval.opens >= interval.closes:
                problems.setdefault(name, []).append(f"{interval.opens:%H:%M}-{interval.closes:%H:%M} must open before it closes")
            if interval.opens.second or interval.closes.second or interval.opens.microsecond or interval.closes.microsecond:
                problems.setdefault(name, []).append("times are whole minutes")
        for earlier, later in zip(day, day[1:], strict=False):
            if later.opens < earlier.closes:
                problems.setdefault(name, []).append(
                    f"{earlier.opens:%H:%M}-{earlier.closes:%H:%M} and {later.opens:%H:%M}-{later.closes:%H:%M} overlap")
    if problems:
        raise RuleViolation("the office hours are not a valid weekly template", problems)


def local_to_utc(day: date, wall_clock: time, tz: ZoneInfo) -> datetime:
    """A local date and wall-clock time as UTC (fold=0: see the module docstring)."""
    return datetime.combine(day, wall_clock, tzinfo=tz).astimezone(timezone.utc)


def local_day_bounds(day: date, tz: ZoneInfo) -> Window:
    """[local midnight, next local midnight) in UTC: 23 or 25 hours long on a clock-change day."""
    return local_to_utc(day, time(0), tz), local_to_utc(day + timedelta(days=1), time(0), tz)


def local_dates(start: datetime, end: datetime, tz: ZoneInfo) -> list[date]:
    """The local dates [start, end) touches (end exclusive; at least the start's date)."""
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date() if end > start else first
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


def open_windows(template: Iterable[OpenInterval], closures: Iterable[date], tz: ZoneInfo, first_day: date, last_day: date) -> list[Window]:
    """The clinic's open windows in UTC on local dates first_day..last_day, closures left out.

    Touching windows are merged (08:00-12:00 and 12:00-17:00 make one), so an appointment may run
    across the seam. Sorted, non-overlapping.
    """
    by_weekday: dict[int, list[OpenInterval]] = {}
    for interval in template:
        by_weekday.setdefault(interval.weekday, []).append(interval)
    closed = set(closures)
    windows: list[Window] = []
    day = first_day
    while day <= last_day:
        if day not in closed:
            for interval in sorted(by_weekday.get(day.weekday(), ())):
                opens, closes = local_to_utc(day, interval.opens, tz), local_to_utc(day, interval.closes, tz)
                if closes > opens:
                    windows.append((opens, closes))
        day += timedelta(days=1)
    return merge(windows)


def merge(intervals: Iterable[Window]) -> list[Window]:
    """Sorted union of intervals, touching ones joined."""
    merged: list[list[datetime]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def within(windows: Sequence[Window], start: datetime, end: datetime) -> bool:
    """True when [start, end) lies entirely inside one window (windows merged and sorted)."""
    index = bisect.bisect_right(windows, (start, datetime.max.replace(tzinfo=timezone.utc))) - 1
    return index >= 0 and windows[index][0] <= start and end <= windows[index][1]


def check_open(start: datetime, end: datetime, template: Sequence[OpenInterval], closures: dict[date, str], tz: ZoneInfo) -> None:
    """Raise a RuleViolation saying why, unless [start, end) lies inside office hours and on no closure."""
    days = local_dates(start, end, tz)
    for day in days:
        if day in closures:
            raise RuleViolation(f"the clinic is closed on {day.isoformat()}: {closures[day]}",
                                {"starts_at": [f"the clinic is closed on {day.isoformat()}"], "closure": day.isoformat()})
    windows = open_windows(template, (), tz, days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    if within(windows, start, end):
        return
    day = days[0]
    hours = [f"{i.opens:%H:%M}-{i.closes:%H:%M}" for i in sorted(template) if i.weekday == day.weekday()]
    local = f"{start.astimezone(tz):%H:%M}-{end.astimezone(tz):%H:%M}"
    if hours:
        message = f"{local} on {WEEKDAYS[day.weekday()].title()} {day.isoformat()} is outside office hours ({', '.join(hours)} {tz.key})"
    else:
        message = f"the clinic has no office hours on {WEEKDAYS[day.weekday()].title()}s"
    raise RuleViolation(message, {"starts_at": ["outside office hours"], "office_hours": hours, "timezone": tz.key})
