"""Checks that several of records' request schemas share: a date that is neither in the future (in
the clinic's time zone) nor implausibly old, and a change that changes something."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, validates_schema

from clinic.validation import PastDay
from clinic.web import clinic_today


def not_in_future(what: str) -> PastDay:
    """A field validator: `what` (a birth date, an onset date) is not after the clinic's today nor
    before 1900 (clinic.validation.PastDay says how the OpenAPI documents it)."""
    return PastDay(what, clinic_today)


class Change(Schema):
    """A PATCH body: every field optional, but at least one given. An empty body, or `{}`, changes
    nothing and is refused rather than answered 200 with a new updated_at."""

    @validates_schema
    def changes_something(self, data, **_):
        if not data:
            raise ValidationError(f"give at least one of: {', '.join(sorted(self.fields))}")
