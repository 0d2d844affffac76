"""The headache diary's arithmetic: entries that contradict themselves, summaries, ICHD-3 medication overuse,
and the trend around infusions."""

from datetime import date, timedelta

import pytest

from records import diary
from records.diary import COMBINATION, ERGOT, OPIOID, SIMPLE, TRIPTAN, DiaryDay

LAST = date(2026, 3, 31)
FIRST = LAST - timedelta(days=89)  # a 90-day window


def days_with(first: date, count: int, medication=(), headache=True, intensity=5, every=1) -> list[DiaryDay]:
    """`count` diary days from `first`, `every` days apart."""
    return [DiaryDay(first + timedelta(days=index * every), headache, intensity if headache else None, frozenset(medication))
            for index in range(count)]


def full_window(medicated_days: int, medication) -> list[DiaryDay]:
    """Every day of the 90-day window recorded; the first `medicated_days` with the medication."""
    return days_with(FIRST, medicated_days, medication) + days_with(FIRST + timedelta(days=medicated_days), 90 - medicated_days,
                                                                    headache=False)


@pytest.mark.parametrize("headache, intensity, field", [(True, None, "worst_intensity"), (True, 0, "worst_intensity"),
                                                        (False, 4, "worst_intensity")])
def test_an_entry_that_contradicts_itself_is_refused(headache, intensity, field):
    assert diary.entry_problem(headache, intensity)[0] == field


@pytest.mark.parametrize("headache, intensity", [(True, 1), (True, 10), (False, None), (False, 0)])
def test_a_consistent_entry_passes(headache, intensity):
    assert diary.entry_problem(headache, intensity) is None


def test_a_summary_counts_headache_days_per_30_recorded_days_and_the_mean_worst_intensity():
    entries = days_with(FIRST, 30, intensity=6) + days_with(FIRST + timedelta(days=30), 30, headache=False) \
        + days_with(FIRST + timedelta(days=60), 15, intensity=8)
    period = diary.summarise(entries, FIRST, LAST)
    assert (period.days, period.days_recorded, period.headache_days) == (90, 75, 45)
    assert period.headache_days_per_30 == 18.0  # 45 headache days in 75 recorded days
    assert period.mean_intensity == pytest.approx((30 * 6 + 15 * 8) / 45, abs=0.05)


def test_entries_outside_the_period_do_not_count_and_an_empty_period_has_no_rates():
    entries = days_with(FIRST - timedelta(days=5), 5) + days_with(LAST + timedelta(days=1), 3)
    period = diary.summarise(entries, FIRST, LAST)
    assert (period.days_recorded, period.headache_days, period.headache_days_per_30, period.mean_intensity) == (0, 0, None, None)


@pytest.mark.parametrize("kind, criterion", [(TRIPTAN, "8.2.2"), (ERGOT, "8.2.1"), (OPIOID, "8.2.4"), (COMBINATION, "8.2.5")])
def test_ten_days_a_month_of_a_specific_acute_medication_is_overuse_and_nine_is_not(kind, criterion):
    overuse = diary.medication_overuse(full_window(30, {kind}), FIRST, LAST)  # 30 days in 90: 10 a month
    assert overuse.flag and overuse.criteria == (criterion,)
    assert overuse.days_per_30[kind] == 10.0
    assert not diary.medication_overuse(full_window(27, {kind}), FIRST, LAST).flag  # 9 a month


def test_simple_analgesics_need_fifteen_days_a_month():
    assert not diary.medication_overuse(full_window(42, {SIMPLE}), FIRST, LAST).flag  # 14 a month
    overuse = diary.medication_overuse(full_window(45, {SIMPLE}), FIRST, LAST)          # 15 a month
    assert overuse.flag and overuse.criteria == ("8.2.3",)


def test_several_classes_none_overused_alone_count_together_to_ten_days():
    entries = days_with(FIRST, 15, {TRIPTAN}) + days_with(FIRST + timedelta(days=15), 15, {SIMPLE}) \
        + days_with(FIRST + timedelta(days=30), 60, headache=False)
    overuse = diary.medication_overuse(entries, FIRST, LAST)
    assert overuse.flag and overuse.criteria == ("8.2.6",)
    assert overuse.days["any"] == 30


def test_one_class_alone_below_its_threshold_is_not_overuse_of_several_classes():
    overuse = diary.medication_overuse(full_window(36, {SIMPLE}), FIRST, LAST)  # 12 a month, simple analgesics only
    assert not overuse.flag and overuse.criteria == ()


def test_a_day_with_two_kinds_counts_once_towards_the_total():
    entries = days_with(FIRST, 29, {TRIPTAN, SIMPLE}) + days_with(FIRST + timedelta(days=29), 61, headache=False)
    overuse = diary.medication_overuse(entries, FIRST, LAST)
    assert overuse.days["any"] == 29 and not overuse.flag  # 9.7 days a month of each, and of both together


def test_a_thin_diary_is_not_enough_to_flag_unless_its_days_already_reach_the_threshold():
    thin = days_with(FIRST, 10, {TRIPTAN})  # every recorded day a triptan day, but only 10 days recorded
    overuse = diary.medication_overuse(thin, FIRST, LAST)
    assert not overuse.enough_data and not overuse.flag
    dense = days_with(FIRST, 20, {TRIPTAN})  # 20 days recorded, all triptan days: still < 28 recorded
    assert not diary.medication_overuse(dense, FIRST, LAST).flag
    heavy = days_with(FIRST, 30, {TRIPTAN}, every=3)  # 30 triptan days spread over the whole 90: 10 a month whatever the gaps
    overuse = diary.medication_overuse(heavy, FIRST, LAST)
    assert overuse.flag and overuse.criteria == ("8.2.2",)


def test_with_enough_days_recorded_the_rate_is_taken_over_the_days_recorded():
    # 60 of 90 days recorded, 20 of them with triptans: 10 per 30 recorded days (only 6.7 over the whole window).
    entries = days_with(FIRST, 20, {TRIPTAN}) + days_with(FIRST + timedelta(days=20), 40, headache=False)
    overuse = diary.medication_overuse(entries, FIRST, LAST)
    assert overuse.enough_data and overuse.flag and overuse.days_per_30[TRIPTAN] == 10.0


def test_the_trend_compares_the_days_before_and_after_each_infusion():
    infusion = date(2026, 3, 1)
    before = days_with(infusion - timedelta(days=28), 28, intensity=8, every=1)[::2] \
        + days_with(infusion - timedelta(days=27), 14, headache=False, every=2)              # 14 of 28 days with headache, at 8
    after = days_with(infusion + timedelta(days=1), 7, intensity=4, every=4) \
        + [DiaryDay(infusion + timedelta(days=day), False) for day in range(2, 29) if (day - 1) % 4]  # 7 of 28, at 4
    trend, = diary.infusion_trends(before + after, [infusion], around_days=28, today=LAST)
    assert (trend.before.first, trend.before.last) == (infusion - timedelta(days=28), infusion - timedelta(days=1))
    assert (trend.after.first, trend.after.last) == (infusion + timedelta(days=1), infusion + timedelta(days=28))
    assert (trend.before.headache_days_per_30, trend.after.headache_days_per_30) == (15.0, 7.5)
    assert (trend.before.mean_intensity, trend.after.mean_intensity) == (8.0, 4.0)
    assert trend.change_in_headache_days_per_30 == -7.5 and trend.change_in_mean_intensity == -4.0


def test_each_infusion_is_judged_on_its_own_interval_and_never_past_today():
    first, second = date(2026, 3, 1), date(2026, 3, 11)
    today = date(2026, 3, 15)
    one, two = diary.infusion_trends([], [second, first, first], around_days=30, today=today)
    assert one.infusion_date == first and one.after.last == second - timedelta(days=1)
    assert two.before.first == first + timedelta(days=1)
    assert two.after.last == today
    assert two.change_in_mean_intensity is None  # nothing recorded: no change claimed
