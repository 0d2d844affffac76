"""Scheduling's own settings, read from environment variables in this one place.

| variable | default | meaning |
| --- | --- | --- |
| SCHEDULING_TURNOVER_MINUTES | 15 | gap an infusion room needs after an infusion before the next one |
| SCHEDULING_FOLLOW_UP_MINUTES | 30 | length of a follow-up office visit |
| SCHEDULING_GRID_MINUTES | 15 | the slot finder offers starts on this local wall-clock grid (divides 60) |
| SCHEDULING_FOLLOW_UP_AFTER_DAYS | 14 | the return visit is booked from this many days after the infusion |
| SCHEDULING_FOLLOW_UP_SEARCH_DAYS | 28 | how many days from then to look for a free exam-room slot |
| SCHEDULING_NO_SHOW_GRACE_MINUTES | 15 | a no-show can be recorded only this long after the start |

The clinic's time zone is the shared CLINIC_TIMEZONE (clinic.config.Settings.timezone).
"""

from __future__ import annotations

import os
from datetime import timedelta

from clinic.config import ConfigurationError, Settings, read_int
from scheduling.domain import SchedulingRules


def _bounded(env, name: str, default: int, low: int, high: int) -> int:
    value = read_int(env, name, default)
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def load_rules(settings: Settings, env=None) -> SchedulingRules:
    """The scheduling rules from the environment (os.environ unless given); malformed values are refused."""
    env = os.environ if env is None else env
    grid = _bounded(env, "SCHEDULING_GRID_MINUTES", 15, 1, 60)
    if 60 % grid:
        # A grid that does not divide the hour would drift off the clock face from one hour to the next.
        raise ConfigurationError(f"SCHEDULING_GRID_MINUTES must divide 60, got {grid}")
    return SchedulingRules(
        timezone=settings.timezone,  # built once here, checked when the settings were read
        turnover=timedelta(minutes=_bounded(env, "SCHEDULING_TURNOVER_MINUTES", 15, 0, 240)),
        follow_up_length=timedelta(minutes=_bounded(env, "SCHEDULING_FOLLOW_UP_MINUTES", 30, 5, 240)),
        grid=timedelta(minutes=grid),
        follow_up_after_days=_bounded(env, "SCHEDULING_FOLLOW_UP_AFTER_DAYS", 14, 1, 365),
        follow_up_search_days=_bounded(env, "SCHEDULING_FOLLOW_UP_SEARCH_DAYS", 28, 1, 366),
        no_show_grace=timedelta(minutes=_bounded(env, "SCHEDULING_NO_SHOW_GRACE_MINUTES", 15, 0, 240)),
    )
