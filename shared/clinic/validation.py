"""Field validators every service's HTTP schemas use, so bad input is a 422 naming the field.

Two kinds of input reach the database or date arithmetic and would otherwise fail there as a 500:
control characters (PostgreSQL refuses NUL outright) and dates at the edges of the calendar
(year 1 or 9999, where adding a day or a time zone offset overflows).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

from marshmallow import ValidationError, validate

# C0 controls other than tab and newline (and DEL) have no place in clinical text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")

FIRST_PLAUSIBLE_DAY = date(1900, 1, 1)
LAST_PLAUSIBLE_DAY = date(2999, 12, 31)

# A date or moment the clinic could mean: far enough from year 1 and 9999 for any arithmetic.
PLAUSIBLE_DAY = validate.Range(min=FIRST_PLAUSIBLE_DAY, max=LAST_PLAUSIBLE_DAY,
                               error="must be between {min} and {max}")
PLAUSIBLE_MOMENT = validate.Range(min=datetime(1900, 1, 1, tzinfo=timezone.utc), max=datetime(2999, 12, 31, tzinfo=timezone.utc),
                                  error="must be between 1900 and 2999")


def plain_text(max_length: int, min_length: int = 1, multiline: bool = False) -> list:
    """Validators for a free-text field: a length, not blank (unless min_length is 0), no control characters."""
    pattern = _CONTROL if multiline else _CONTROL_OR_NEWLINE

    def no_control_characters(value: str) -> None:
        if pattern.search(value):
            raise ValidationError("contains control characters")
        if min_length and not value.strip():
            raise ValidationError("cannot be blank")

    return [validate.Length(min=min_length, max=max_length), no_control_characters]
