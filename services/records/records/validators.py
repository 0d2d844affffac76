"""Checks that several of records' request schemas share: a date that is neither in the future (in
the clinic's time zone) nor implausibly old, and a change that changes something."""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, ValidationError, validates_schema

from clinic.validation import PastDay
from clinic.web import now, settings


def clinic_today() -> date:
    """Today where the clinic is: a diary entry written at 9 pm in New York is not for tomorrow."""
    return now().astimezone(settings().timezone).date()


def not_in_future(what: str) -> PastDay:
    """A field validator: `what` (a birth date, an onset date) is not after today nor before 1900
    (documented in the OpenAPI as the years 1900 to last year)."""
    return PastDay(what, clinic_today)


class Change(Schema):
    """A PATCH body: every field optional, but at least one given. An empty body, or `{}`, changes
    nothing and is refused rather than answered 200 with a new updated_at."""

    @validates_schema
    def changes_something(self, data, **_):
        if not data:
            raise ValidationError(f"give at least one of: {', '.join(sorted(self.fields))}")
