"""What records' HTTP modules share: field validators, the clinic's today, and the patient lookup."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from marshmallow import ValidationError

from clinic.auth import ADMIN, FRONT_DESK, NEUROLOGIST, NURSE
from clinic.errors import NotFound
from clinic.validation import FIRST_PLAUSIBLE_DAY, plain_text  # noqa: F401 - records' modules import plain_text from here
from clinic.web import settings
from records import db


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
        if value < FIRST_PLAUSIBLE_DAY:
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
