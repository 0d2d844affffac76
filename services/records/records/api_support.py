"""What records' HTTP modules share: field validators, the clinic's today, and the patient lookup."""

from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

from marshmallow import ValidationError, validate

from clinic.auth import ADMIN, FRONT_DESK, NEUROLOGIST, NURSE
from clinic.errors import NotFound
from clinic.web import settings
from records import db

# C0 controls other than tab and newline (and DEL) have no place in clinical text; PostgreSQL also
# refuses NUL outright, which would turn a stray byte into a 500 instead of a 422.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f]")


def plain_text(max_length: int, min_length: int = 1, multiline: bool = False) -> list:
    """Validators for a free-text field: a length and no control characters."""
    pattern = _CONTROL if multiline else _CONTROL_OR_NEWLINE

    def no_control_characters(value: str) -> None:
        if pattern.search(value):
            raise ValidationError("contains control characters")
        if min_length and not value.strip():
            raise ValidationError("cannot be blank")

    return [validate.Length(min=min_length, max=max_length), no_control_characters]


def clinic_today() -> date:
    """Today where the clinic is: a diary entry written at 9 pm in New York is not for tomorrow."""
    return datetime.now(ZoneInfo(settings().clinic_timezone)).date()


def local_date(moment: datetime) -> date:
    """The clinic's calendar date of a UTC moment."""
    return moment.astimezone(ZoneInfo(settings().clinic_timezone)).date()


def not_in_future(what: str):
    def check(value: date) -> None:
        if value > clinic_today():
            raise ValidationError(f"{what} cannot be in the future")
        if value.year < 1900:
            raise ValidationError(f"{what} before 1900 is not plausible")

    return check


def existing_patient(connection, patient_id, for_update: bool = False) -> dict:
    """The patient, or a 404 naming the id. `for_update` locks the row: writes about one patient queue up."""
    patient = db.get_patient(connection, str(patient_id), for_update=for_update)
    if patient is None:
        raise NotFound("no patient with this id", {"patient_id": str(patient_id)})
    return patient


# Who may do what, in one place (issue 4). Devices have no business here at all.
REGISTRARS = (FRONT_DESK,)                          # register patients, change demographics and contact details
DEMOGRAPHICS_READERS = (FRONT_DESK, NURSE, NEUROLOGIST)
CLINICAL_READERS = (NURSE, NEUROLOGIST)             # plans, diary, encounters
CLINICIANS = (NEUROLOGIST,)                         # diagnoses, plans, activation
DIARY_WRITERS = (NURSE, NEUROLOGIST)
AUDITORS = (ADMIN,)
