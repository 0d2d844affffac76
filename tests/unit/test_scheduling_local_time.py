"""Office hours in local time, open windows in UTC, across daylight-saving changes; the slot finder's rules."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from clinic.errors import RuleViolation
from scheduling.local_time import (
    OpenInterval,
    check_open,
    check_template,
    local_dates,
    local_day_bounds,
    local_to_utc,
    open_windows,
    within,
)
from scheduling.slot_finder import Busy, ceil_to_grid, free_slots

NY = ZoneInfo("America/New_York")
UTC = timezone.utc
WEEKDAYS_8_TO_6 = [OpenInterval(day, time(8), time(18)) for day in range(5)]
# 2030 in New York: clocks go forward on Sunday 10 March (02:00 -> 03:00), back on Sunday 3 November (02:00 -> 01:00).
SPRING_FORWARD, FALL_BACK = date(2030, 3, 10), date(2030, 11, 3)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def windows_on(day: date, template=WEEKDAYS_8_TO_6, closures=(), tz=NY):
    return open_windows(template, closures, tz, day, day)


@pytest.mark.parametrize("day, expected", [
    (date(2030, 3, 8), (utc(2030, 3, 8, 13), utc(2030, 3, 8, 23))),      # Friday before: UTC-5
    (date(2030, 3, 11), (utc(2030, 3, 11, 12), utc(2030, 3, 11, 22))),   # Monday after: UTC-4
    (date(2030, 11, 1), (utc(2030, 11, 1, 12), utc(2030, 11, 1, 22))),   # Friday before: UTC-4
    (date(2030, 11, 4), (utc(2030, 11, 4, 13), utc(2030, 11, 4, 23))),   # Monday after: UTC-5
])
def test_08_00_stays_08_00_local_on_both_sides_of_a_clock_change(day, expected):
    assert windows_on(day) == [expected]


def test_a_window_through_the_night_of_a_change_is_an_hour_shorter_or_longer():
    night = [OpenInterval(6, time(0), time(6))]   # Sundays, midnight to six
    [(opens, closes)] = windows_on(SPRING_FORWARD, night)
    assert closes - opens == timedelta(hours=5)
    [(opens, closes)] = windows_on(FALL_BACK, night)
    assert closes - opens == timedelta(hours=7)


def test_a_two_hour_infusion_across_the_spring_gap_ends_at_four_local():
    start = local_to_utc(SPRING_FORWARD, time(1), NY)
    end = start + timedelta(minutes=120)
    assert end.astimezone(NY).time() == time(4)
    assert within(windows_on(SPRING_FORWARD, [OpenInterval(6, time(0), time(6))]), start, end)


def test_wall_clock_times_that_do_not_exist_or_occur_twice_have_one_reading():
    # 02:30 does not exist on the spring day: read as if the clocks had not moved, i.e. 03:30 new time.
    assert local_to_utc(SPRING_FORWARD, time(2, 30), NY) == utc(2030, 3, 10, 7, 30)
    assert local_to_utc(SPRING_FORWARD, time(2, 30), NY).astimezone(NY).time() == time(3, 30)
    # 01:30 happens twice on the autumn day: the first one (still UTC-4).
    assert local_to_utc(FALL_BACK, time(1, 30), NY) == utc(2030, 11, 3, 5, 30)


def test_a_local_day_is_23_or_25_hours_on_a_change_day():
    for day, hours in ((SPRING_FORWARD, 23), (FALL_BACK, 25), (date(2030, 1, 7), 24)):
        start, end = local_day_bounds(day, NY)
        assert end - start == timedelta(hours=hours)
        assert start.astimezone(NY).time() == time(0) and start.astimezone(NY).date() == day


def test_local_dates_are_the_clinic_dates_an_appointment_touches():
    late_evening = local_to_utc(date(2030, 1, 7), time(23), NY)
    assert local_dates(late_evening, late_evening + timedelta(hours=1), NY) == [date(2030, 1, 7)]
    assert local_dates(late_evening, late_evening + timedelta(hours=2), NY) == [date(2030, 1, 7), date(2030, 1, 8)]


def test_touching_intervals_merge_and_a_lunch_break_splits_the_day():
    monday = date(2030, 1, 7)
    seamless = [OpenInterval(0, time(8), time(12)), OpenInterval(0, time(12), time(17))]
    lunch = [OpenInterval(0, time(8), time(12)), OpenInterval(0, time(13), time(17))]
    start, end = local_to_utc(monday, time(11), NY), local_to_utc(monday, time(13), NY)
    assert len(windows_on(monday, seamless)) == 1 and within(windows_on(monday, seamless), start, end)
    assert len(windows_on(monday, lunch)) == 2 and not within(windows_on(monday, lunch), start, end)
    assert within(windows_on(monday, lunch), local_to_utc(monday, time(13), NY), local_to_utc(monday, time(17), NY))


def test_a_closure_removes_its_day_only():
    days = open_windows(WEEKDAYS_8_TO_6, {date(2030, 1, 8)}, NY, date(2030, 1, 7), date(2030, 1, 9))
    assert [opens.astimezone(NY).date() for opens, _ in days] == [date(2030, 1, 7), date(2030, 1, 9)]


@pytest.mark.parametrize("template, day", [
    ([OpenInterval(0, time(8), time(12)), OpenInterval(0, time(11), time(17))], "monday"),
    ([OpenInterval(2, time(17), time(8))], "wednesday"),
    ([OpenInterval(4, time(9), time(9))], "friday"),
])
def test_a_template_with_overlaps_or_backwards_hours_is_refused_naming_the_day(template, day):
    with pytest.raises(RuleViolation) as refused:
        check_template(template)
    assert list(refused.value.details) == [day]


def test_check_open_says_why_in_local_time():
    monday = date(2030, 1, 7)
    with pytest.raises(RuleViolation, match=r"07:30-09:30 on Monday 2030-01-07 is outside office hours \(08:00-18:00 America/New_York\)"):
        check_open(local_to_utc(monday, time(7, 30), NY), local_to_utc(monday, time(9, 30), NY), WEEKDAYS_8_TO_6, {}, NY)
    with pytest.raises(RuleViolation, match="closed on 2030-01-07: snow"):
        check_open(local_to_utc(monday, time(9), NY), local_to_utc(monday, time(10), NY), WEEKDAYS_8_TO_6, {monday: "snow"}, NY)
    with pytest.raises(RuleViolation, match="no office hours on Saturdays"):
        check_open(local_to_utc(date(2030, 1, 12), time(9), NY), local_to_utc(date(2030, 1, 12), time(10), NY), WEEKDAYS_8_TO_6, {}, NY)
    check_open(local_to_utc(monday, time(16), NY), local_to_utc(monday, time(18), NY), WEEKDAYS_8_TO_6, {}, NY)


# --- the grid and free slots ----------------------------------------------------------------


@pytest.mark.parametrize("zone, wall_clock, expected", [
    ("America/New_York", time(8, 7), time(8, 15)),
    ("America/New_York", time(8, 15), time(8, 15)),
    ("Asia/Kolkata", time(8, 7), time(8, 15)),                    # UTC+05:30: the grid is the local clock's
    ("Australia/Eucla", time(9, 59), time(10, 0)),                # UTC+08:45
])
def test_the_grid_is_the_local_wall_clock(zone, wall_clock, expected):
    tz = ZoneInfo(zone)
    moment = local_to_utc(date(2030, 1, 7), wall_clock, tz)
    assert ceil_to_grid(moment, timedelta(minutes=15), tz).astimezone(tz).time() == expected


def test_busy_answers_overlaps_like_checking_every_interval():
    rng = random.Random(20300107)
    base = utc(2030, 1, 7)
    intervals = []
    for _ in range(40):
        start = base + timedelta(minutes=rng.randrange(0, 2000))
        intervals.append((start, start + timedelta(minutes=rng.randrange(1, 120))))
    busy = Busy(intervals)
    for _ in range(2000):
        start = base + timedelta(minutes=rng.randrange(-60, 2100))
        end = start + timedelta(minutes=rng.randrange(1, 200))
        assert busy.overlaps(start, end) == any(s < end and e > start for s, e in intervals)


def slot_times(slots, tz=NY):
    return [(slot.room_id, slot.starts_at.astimezone(tz).strftime("%H:%M")) for slot in slots]


def test_slots_leave_the_turnover_gap_after_an_infusion_and_keep_the_patient_in_one_place():
    monday = date(2030, 1, 7)
    at = lambda hhmm: local_to_utc(monday, time.fromisoformat(hhmm), NY)  # noqa: E731
    windows = windows_on(monday)
    room_a = Busy([(at("08:00"), at("10:15"))])            # a 2 h infusion and its 15 min turnover
    patient = Busy([(at("13:00"), at("13:30"))])            # a visit elsewhere
    slots = free_slots(windows, timedelta(hours=2), timedelta(minutes=15), timedelta(minutes=15), NY, at("06:00"),
                       [("A", room_a), ("B", Busy([]))], patient, limit=500)
    times = slot_times(slots)
    assert times[:2] == [("B", "08:00"), ("B", "08:15")]
    assert ("A", "10:00") not in times and ("A", "10:15") in times
    # An infusion must not overlap 13:00-13:30 for this patient, and the turnover of a slot may not hit room A's next hold.
    assert not [t for t in times if "11:01" <= t[1] <= "13:29"]
    assert ("A", "11:00") in times and times[-1] == ("B", "16:00")


def test_slots_respect_the_earliest_time_and_the_limit():
    monday = date(2030, 1, 7)
    slots = free_slots(windows_on(monday), timedelta(minutes=30), timedelta(0), timedelta(minutes=15), NY,
                       local_to_utc(monday, time(17, 5), NY), [("A", Busy([]))], Busy([]), limit=10)
    assert slot_times(slots) == [("A", "17:15"), ("A", "17:30")]
    assert len(free_slots(windows_on(monday), timedelta(minutes=30), timedelta(0), timedelta(minutes=15), NY,
                          local_to_utc(monday, time(6), NY), [("A", Busy([]))], Busy([]), limit=3)) == 3
