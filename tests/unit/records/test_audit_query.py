"""GET /audit's `from` and `to`, as the OpenAPI document states them and as the validator takes them.

A staff app's client generated from the document checks the pattern before it sends: a day the
document leaves out (March 31) could never be asked for, and a day it states must be accepted.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from records.audit_api import DAY_OR_MOMENT, DayOrMoment


def _days(first: date, last: date):
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def test_every_day_but_february_29_is_stated_and_each_day_stated_is_accepted():
    field = DayOrMoment()
    unstated = []
    for day in (*_days(date(1900, 1, 1), date(1901, 12, 31)), *_days(date(2024, 1, 1), date(2026, 12, 31)),
                *_days(date(2999, 1, 1), date(2999, 12, 31))):
        text = day.isoformat()
        if re.match(DAY_OR_MOMENT, text):
            assert field.deserialize(text) == day
            assert field.deserialize(f"{text}T23:59:59Z").date() == day
        else:
            unstated.append(text)
    assert all(text.endswith("-02-29") for text in unstated), unstated[:10]


def test_days_that_do_not_exist_are_not_stated():
    for text in ("2026-02-30", "2026-04-31", "2026-06-31", "2026-09-31", "2026-11-31", "2026-13-01", "1899-12-31", "3000-01-01"):
        assert not re.match(DAY_OR_MOMENT, text), text
