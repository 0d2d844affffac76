"""Patients and their contact details: rules with no framework in sight."""

from __future__ import annotations

import hashlib
import secrets
from datetime import date

SEXES = ("female", "male", "other", "unknown")
CONTACT_FIELDS = ("given_name", "family_name", "email", "phone", "preferred_contact", "email_opt_out")


def identity_key(given_name: str, family_name: str, birth_date: date, email: str | None) -> str:
    """What makes two registrations the same person: name, birth date and email, compared loosely.

    Stored as a digest so the uniqueness rule can live in the database without a second copy of PHI.
    """
    parts = [given_name.strip().casefold(), family_name.strip().casefold(), birth_date.isoformat(), (email or "").strip().casefold()]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def new_medical_record_number() -> str:
    """Eight random digits and a Luhn check digit, so a mistyped number is caught at the desk."""
    digits = f"{secrets.randbelow(10**8):08d}"
    return f"{digits}{luhn_check_digit(digits)}"


def luhn_check_digit(digits: str) -> int:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return (10 - total % 10) % 10


def contact_details(patient: dict) -> dict:
    """The payload of records.patient.contact_changed: what notifications needs to reach the patient."""
    return {"patient_id": patient["id"], **{field: patient[field] for field in CONTACT_FIELDS}}


def contact_changed(before: dict, after: dict) -> bool:
    return any(before[field] != after[field] for field in CONTACT_FIELDS)


def reachability_problem(patient: dict) -> tuple[str, str] | None:
    """(field, why) when the preferred way to reach the patient has nothing to reach them at."""
    preferred = patient.get("preferred_contact")
    if preferred == "email" and not patient.get("email"):
        return "email", "an email address is needed when email is the preferred contact"
    if preferred in ("phone", "sms") and not patient.get("phone"):
        return "phone", f"a phone number is needed when {preferred} is the preferred contact"
    return None
