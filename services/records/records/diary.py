"""The headache diary's rules and arithmetic: what an entry may say, how a period is summarised,
when acute medication use meets the ICHD-3 criteria for medication overuse, and how headache
frequency and intensity change around each infusion. No framework in sight.

Rates are per 30 recorded days: a diary with gaps is summarised from the days it covers, and the
number of days recorded is always shown beside the rates so a thin diary is visible as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

TRIPTAN, ERGOT, OPIOID, COMBINATION, SIMPLE = "triptan", "ergot", "opioid", "combination_analgesic", "simple_analgesic"
ACUTE_MEDICATION_KINDS = (TRIPTAN, ERGOT, OPIOID, COMBINATION, SIMPLE)

# ICHD-3 8.2 (medication-overuse headache), criterion B: regular overuse of acute medication.
# Ergotamine, triptans, opioids and combination analgesics: 10 or more days a month (8.2.1, 8.2.2,
# 8.2.4, 8.2.5); simple analgesics (paracetamol, NSAIDs, aspirin): 15 or more (8.2.3); several
# classes, none overused alone: 10 or more days a month in total (8.2.6).
OVERUSE_DAYS_PER_MONTH = {TRIPTAN: 10, ERGOT: 10, OPIOID: 10, COMBINATION: 10, SIMPLE: 15}
MULTIPLE_CLASSES_DAYS_PER_MONTH = 10
ICHD3_CRITERION = {ERGOT: "8.2.1", TRIPTAN: "8.2.2", SIMPLE: "8.2.3", OPIOID: "8.2.4", COMBINATION: "8.2.5"}
MULTIPLE_CLASSES = "8.2.6"
# "Days a month" needs about a month of diary: with fewer recorded days a rate is too noisy to flag
# on, unless the days recorded already reach the threshold over the whole window.
MINIMUM_RECORDED_DAYS = 28
MONTH = 30


@dataclass(frozen=True)
class DiaryDay:
    entry_date: date
    headache: bool
    worst_intensity: int | None = None
    acute_medication: frozenset[str] = field(default_factory=frozenset)


def entry_problem(headache: bool, worst_intensity: int | None) -> tuple[str, str] | None:
    """(field, why) when an entry contradicts itself."""
    if headache and worst_intensity is None:
        return "worst_intensity", "the worst intensity (1–10) is needed on a headache day"
    if headache and worst_intensity == 0:
        return "worst_intensity", "a headache day has an intensity of at least 1; 0 means no headache"
    if not headache and worst_intensity not in (None, 0):
        return "worst_intensity", "a day without headache has no intensity (leave it out or give 0)"
    return None


@dataclass(frozen=True)
class Period:
    """A summary of the diary between two dates, both included."""

    first: date
    last: date
    days_recorded: int
    headache_days: int
    headache_days_per_30: float | None
    mean_intensity: float | None

    @property
    def days(self) -> int:
        return max(0, (self.last - self.first).days + 1)


def _within(entries: Iterable[DiaryDay], first: date, last: date) -> list[DiaryDay]:
    return [entry for entry in entries if first <= entry.entry_date <= last]


def _per_30(count: int, days: int) -> float | None:
    return round(count * MONTH / days, 1) if days else None


def summarise(entries: Iterable[DiaryDay], first: date, last: date) -> Period:
    """Headache days per 30 recorded days, and the mean worst intensity of the headache days."""
    days = _within(entries, first, last)
    headache_days = [entry for entry in days if entry.headache]
    intensities = [entry.worst_intensity for entry in headache_days if entry.worst_intensity is not None]
    return Period(
        first=first,
        last=last,
        days_recorded=len(days),
        headache_days=len(headache_days),
        headache_days_per_30=_per_30(len(headache_days), len(days)),
        mean_intensity=round(sum(intensities) / len(intensities), 1) if intensities else None,
    )


@dataclass(frozen=True)
class Overuse:
    """Whether acute medication use over a window meets ICHD-3 criterion B for medication overuse."""

    flag: bool
    criteria: tuple[str, ...]
    days: dict[str, int]
    days_per_30: dict[str, float | None]
    enough_data: bool


def medication_overuse(entries: Iterable[DiaryDay], first: date, last: date) -> Overuse:
    """Check every ICHD-3 8.2 threshold against the days each class of acute medication was taken.

    A class meets its threshold when its rate per 30 recorded days does (with at least
    MINIMUM_RECORDED_DAYS recorded), or when its days already reach the threshold spread over the
    whole window: days not recorded cannot lower that.
    """
    days = _within(entries, first, last)
    recorded = len(days)
    window = max(1, (last - first).days + 1)
    enough_data = recorded >= min(MINIMUM_RECORDED_DAYS, window)

    def meets(count: int, threshold: int) -> bool:
        over_window = count * MONTH / window >= threshold
        over_recorded = enough_data and recorded > 0 and count * MONTH / recorded >= threshold
        return over_window or over_recorded

    by_kind = {kind: sum(1 for entry in days if kind in entry.acute_medication) for kind in ACUTE_MEDICATION_KINDS}
    any_acute = sum(1 for entry in days if entry.acute_medication)
    criteria = [ICHD3_CRITERION[kind] for kind in ACUTE_MEDICATION_KINDS if meets(by_kind[kind], OVERUSE_DAYS_PER_MONTH[kind])]
    classes_used = sum(1 for count in by_kind.values() if count)
    if not criteria and classes_used >= 2 and meets(any_acute, MULTIPLE_CLASSES_DAYS_PER_MONTH):
        criteria.append(MULTIPLE_CLASSES)
    counts = {**by_kind, "any": any_acute}
    return Overuse(
        flag=bool(criteria),
        criteria=tuple(sorted(criteria)),
        days=counts,
        days_per_30={kind: _per_30(count, recorded) for kind, count in counts.items()},
        enough_data=enough_data,
    )


@dataclass(frozen=True)
class InfusionTrend:
    """Headache frequency and intensity in the interval before an infusion and the one after it."""

    infusion_date: date
    before: Period
    after: Period

    @property
    def change_in_headache_days_per_30(self) -> float | None:
        return _difference(self.after.headache_days_per_30, self.before.headache_days_per_30)

    @property
    def change_in_mean_intensity(self) -> float | None:
        return _difference(self.after.mean_intensity, self.before.mean_intensity)


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 1)


def infusion_trends(entries: Iterable[DiaryDay], infusion_dates: Iterable[date], around_days: int, today: date) -> list[InfusionTrend]:
    """Before and after each infusion: up to `around_days` either side, never reaching into the
    interval of a neighbouring infusion (so each infusion is judged on its own) nor past today.

    The infusion day itself belongs to neither side.
    """
    entries = list(entries)
    dates = sorted(set(infusion_dates))
    trends = []
    for index, infusion in enumerate(dates):
        previous = dates[index - 1] if index > 0 else None
        following = dates[index + 1] if index + 1 < len(dates) else None
        before_first = infusion - timedelta(days=around_days)
        if previous is not None:
            before_first = max(before_first, previous + timedelta(days=1))
        after_last = min(infusion + timedelta(days=around_days), today)
        if following is not None:
            after_last = min(after_last, following - timedelta(days=1))
        trends.append(InfusionTrend(
            infusion_date=infusion,
            before=summarise(entries, before_first, infusion - timedelta(days=1)),
            after=summarise(entries, infusion + timedelta(days=1), after_last),
        ))
    return trends
