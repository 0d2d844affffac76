"""Checks that several of records' request schemas share: a date that is neither in the future (in
the clinic's time zone) nor implausibly old, and a change that changes something."""

from __future__ import annotations

from datetime import date

from marshmallow import Schema, ValidationError, validates_schema

from clinic.validation import FIRST_PLAUSIBLE_DAY
from clinic.web import now, settings


def clinic_today() -> date:
    """Today where the clinic is: a diary entry written at 9 pm in New York is not for tomorrow."""
    return now().astimezone(settings().timezone).date()


def not_in_future(what: str):
    """A field validator: `what` (a birth date, an onset date) is not after today nor before 1900."""

    def check(value: date) -> None:
        if value > clinic_today():
            raise ValidationError(f"{what} cannot be in the future")
        if value < FIRST_PLAUSIBLE_DAY:
            raise ValidationError(f"{what} before 1900 is not plausible")

    return check


class Change(Schema):
    """A PATCH body: every field optional, but at least one given. An empty body, or `{}`, changes
    nothing and is refused rather than answered 200 with a new updated_at."""

    @validates_schema
    def changes_something(self, data, **_):
        if not data:
            raise ValidationError(f"give at least one of: {', '.join(sorted(self.fields))}")
