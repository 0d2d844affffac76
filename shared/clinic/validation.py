"""Field validators every service's HTTP schemas use, so bad input is a 422 naming the field.

Two kinds of input reach the database or date arithmetic and would otherwise fail there as a 500:
control characters (PostgreSQL refuses NUL outright) and dates at the edges of the calendar
(year 1 or 9999, where adding a day or a time zone offset overflows).

Each validator here also says what it enforces in the OpenAPI document: its `openapi(field)` gives
the schema keywords (lengths, a pattern, a format), which clinic.openapi adds to the field's
property. A client generated from the document then sends only what these validators accept.
Lengths are checked before forms, so a megabyte of text fails at once rather than after a regex.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timezone

from marshmallow import ValidationError, fields, validate, validates_schema

# C0 controls other than tab and newline (and DEL) have no place in clinical text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")
# Half of a UTF-16 pair on its own: no character at all, and not encodable as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

FIRST_PLAUSIBLE_DAY = date(1900, 1, 1)
LAST_PLAUSIBLE_DAY = date(2999, 12, 31)


def _year_digits(low: int, high: int) -> str:
    """A regex for the four-digit years low..high (inclusive)."""

    def between(first: str, last: str) -> str:
        if first == last:
            return first
        if set(first) == {"0"} and set(last) == {"9"}:
            return f"[0-9]{{{len(first)}}}" if len(first) > 1 else "[0-9]"
        if len(first) == 1:
            return f"[{first}-{last}]"
        if first[0] == last[0]:
            return first[0] + between(first[1:], last[1:])
        rest = len(first) - 1
        parts = [first[0] + between(first[1:], "9" * rest)]
        if int(last[0]) - int(first[0]) > 1:
            middle = f"[{int(first[0]) + 1}-{int(last[0]) - 1}]" if int(last[0]) - int(first[0]) > 2 else str(int(first[0]) + 1)
            parts.append(f"{middle}[0-9]{{{rest}}}")
        parts.append(last[0] + between("0" * rest, last[1:]))
        return "(?:" + "|".join(parts) + ")"

    return between(f"{low:04d}", f"{high:04d}")


def years_pattern(first_year: int, last_year: int) -> str:
    """An OpenAPI `pattern` for an ISO 8601 date or date-time whose year is first_year..last_year."""
    return f"^{_year_digits(first_year, last_year)}-"


class PlausibleRange(validate.Range):
    """A date or moment the clinic could mean: far enough from year 1 and 9999 for any arithmetic.

    Documented as a pattern on the year (OpenAPI has no minimum for a date). For moments, the
    documented years leave out the first and last, where a UTC offset could carry a time outside."""

    def __init__(self, first, last, documented_years: tuple[int, int], error: str):
        super().__init__(min=first, max=last, error=error)
        self.documented_years = documented_years

    def openapi(self, field) -> dict:
        first, last = self.documented_years
        return {"pattern": years_pattern(first, last),
                "description": _joined(field, f"Between {self.min.isoformat()[:10]} and {self.max.isoformat()[:10]}.")}


PLAUSIBLE_DAY = PlausibleRange(FIRST_PLAUSIBLE_DAY, LAST_PLAUSIBLE_DAY, (1900, 2999), error="must be between {min} and {max}")
PLAUSIBLE_MOMENT = PlausibleRange(datetime(1900, 1, 1, tzinfo=timezone.utc), datetime(2999, 12, 31, tzinfo=timezone.utc),
                                  (1901, 2998), error="must be between 1900 and 2999")


class PastDay(validate.Validator):
    """A day that has happened (a birth date, an onset date): not after `today()`, not before 1900.

    `today` gives the clinic's date (its time zone, its clock). Documented as the years from 1900
    through the current year when the document is built (a service's start): a client that checks
    the pattern must be able to send today's diary entry; a later day this year is refused by the
    rule the description states. A service running across New Year documents the old year until it
    restarts."""

    def __init__(self, what: str, today: Callable[[], date]):
        self.what = what
        self.today = today

    def __call__(self, value: date) -> date:
        if value > self.today():
            raise ValidationError(f"{self.what} cannot be in the future")
        if value < FIRST_PLAUSIBLE_DAY:
            raise ValidationError(f"{self.what} before 1900 is not plausible")
        return value

    def openapi(self, field) -> dict:
        this_year = datetime.now(timezone.utc).year
        return {"pattern": years_pattern(FIRST_PLAUSIBLE_DAY.year, this_year),
                "description": _joined(field, f"Not in the future, not before {FIRST_PLAUSIBLE_DAY.isoformat()}.")}


class PlainText(validate.Validator):
    """Free text: its length first, then no control characters (tab and newline only if multiline),
    no lone surrogates, and not blank unless min_length is 0."""

    def __init__(self, max_length: int, min_length: int = 1, multiline: bool = False):
        self.length = validate.Length(min=min_length, max=max_length)
        self.min_length, self.max_length, self.multiline = min_length, max_length, multiline
        self._control = _CONTROL if multiline else _CONTROL_OR_NEWLINE

    def __call__(self, value: str) -> str:
        self.length(value)
        if self._control.search(value) or _SURROGATE.search(value):
            raise ValidationError("contains control characters")
        if self.min_length and not value.strip():
            raise ValidationError("cannot be blank")
        return value

    def openapi(self, field) -> dict:
        allowed = r"[^\x00-\x08\x0b-\x1f\x7f]" if self.multiline else r"[^\x00-\x1f\x7f]"
        if self.min_length:
            # Some character that is neither a control nor a space.
            visible = allowed[:-1] + r"\s]"
            pattern = f"^{allowed}*{visible}{allowed}*$"
        else:
            pattern = f"^{allowed}*$"
        return {"minLength": self.min_length, "maxLength": self.max_length, "pattern": pattern}


def plain_text(max_length: int, min_length: int = 1, multiline: bool = False) -> list:
    """Validators for a free-text field: a length, not blank (unless min_length is 0), no control characters."""
    return [PlainText(max_length, min_length, multiline)]


LONGEST_EMAIL = 254  # RFC 5321's path limit, less the angle brackets


class EmailForm(validate.Validator):
    """An email address: its length (at most 254) before its form, so a megabyte fails at once."""

    def __init__(self, max_length: int = LONGEST_EMAIL):
        self.max_length = max_length
        self.form = validate.Email(error="not an email address")

    def __call__(self, value: str) -> str:
        if len(value) > self.max_length:
            raise ValidationError(f"longer than {self.max_length} characters")
        return self.form(value)

    def openapi(self, field) -> dict:
        return {"format": "email", "maxLength": self.max_length}


class EmailAddress(fields.String):
    """An email address field whose length is checked before its form (marshmallow's fields.Email
    runs its slow form check first, whatever other validators are given)."""

    def __init__(self, *, max_length: int = LONGEST_EMAIL, **kwargs):
        super().__init__(**kwargs)
        self.validators.insert(0, EmailForm(max_length))


# A dose as records plans it and sessions records it: more than 0, less than 100000, at most 4 decimal places.
DOSE_TEXT = r"^0*([1-9][0-9]{0,4}(\.[0-9]{1,4})?|\.[0-9]{0,3}[1-9]|0\.[0-9]{0,3}[1-9])$"


class DecimalText(fields.Decimal):
    """An exact decimal (a dose), sent as a JSON number or as text, either in the documented `pattern`.

    Python's Decimal also reads "1_0" as 10, " 5", "1E+2" and full-width digits; a dose is what the
    neurologist typed, so text in any other form is refused rather than read as something else.
    Answered as text, never as a float."""

    def __init__(self, pattern: str, **options):
        self.text_form = re.compile(pattern)
        super().__init__(as_string=True, places=None, **options)  # clinic.openapi documents text_form

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("not a number")
        # A JSON number is held to the same form as text: 0.00001 or 1e30 would otherwise pass as a
        # number and be stored rounded to the places its column keeps, or overflow the arithmetic after.
        text = repr(value) if isinstance(value, float) else str(value) if isinstance(value, int) else value
        if isinstance(text, str) and not self.text_form.fullmatch(text):
            raise ValidationError("not a plain decimal number such as 30 or 0.5")
        return super()._deserialize(value, attr, data, **kwargs)


class JsonBoolean(fields.Boolean):
    """A boolean in a JSON body: true or false, nothing else. marshmallow's own Boolean also takes 1,
    0, "yes", "off" and the like (in Python 1 == True), so a client's slip would become a clinical
    fact ("headache": 1). Query strings keep fields.Boolean: there "true" is the only way to say it."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class AtLeastOneOf:
    """A schema-level check: at least one of `names` is given and not null (a change that changes
    something, a new start or a new room). Use it as a class attribute of the schema:

        class RescheduleIn(Schema):
            ...
            something_to_change = at_least_one_of("starts_at", "room_id")

    Documented on the schema as an anyOf of the alternatives."""

    def __init__(self, names: tuple[str, ...], message: str | None = None):
        self.names = names
        self.message = message or f"give at least one of: {', '.join(names)}"

    def check(self, data: dict) -> None:
        if all(data.get(name) is None for name in self.names):
            raise ValidationError(self.message, self.names[0])

    def openapi(self, schema_properties: dict) -> dict:
        def given(name: str) -> dict:
            # The property's own type without `nullable`: present, and not null.
            kind = {key: schema_properties[name][key] for key in ("type", "format") if key in schema_properties[name]}
            return {"required": [name], "properties": {name: kind}}
        return {"anyOf": [given(name) for name in self.names if name in schema_properties]}


def at_least_one_of(*names: str, message: str | None = None):
    """A marshmallow schema validator (see AtLeastOneOf) to assign as a schema class attribute."""
    rule = AtLeastOneOf(names, message)

    @validates_schema
    def at_least_one(self, data, **_):
        rule.check(data)

    at_least_one.openapi_rule = rule
    return at_least_one


class _Stated:
    def __init__(self, keywords: dict):
        self.keywords = keywords

    def openapi(self, schema_properties: dict) -> dict:
        return dict(self.keywords)


def stated_as(**keywords):
    """Decorate a schema's @validates_schema method with the JSON Schema keywords that state its rule
    (e.g. anyOf=[...] for "an email when email is the preferred contact"), so the document says it."""

    def decorate(method):
        method.openapi_rule = _Stated(keywords)
        return method

    return decorate


def _joined(field, sentence: str) -> str:
    described = (field.metadata or {}).get("description") if field is not None else None
    return f"{described.rstrip('.')}. {sentence}" if described else sentence
