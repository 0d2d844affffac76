"""Records' rules: patients and their contact details, diagnoses, treatment plans. No framework in sight.

The headache diary's arithmetic lives beside this module, in records.diary.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import date
from decimal import Decimal

from clinic.errors import Conflict

SEXES = ("female", "male", "other", "unknown")
CONTACT_FIELDS = ("given_name", "family_name", "email", "phone", "preferred_contact", "email_opt_out")


# --- patients ---------------------------------------------------------------------------------


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
    """The payload of records.patient.contact_changed: what notifications needs to reach the patient,
    with the patient's contact version, so a copy keeps the newest whatever order changes arrive in."""
    return {"patient_id": patient["id"], **{field: patient[field] for field in CONTACT_FIELDS},
            "contact_version": patient["contact_version"]}


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


def _folded(text: str) -> str:
    # The front desk types "Jose" for "José" and "muller" for "Müller": compare without case or accents.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(char for char in decomposed if not unicodedata.combining(char)).split())


def search_name(given_name: str, family_name: str) -> str:
    """The name as it is searched: folded, words separated by single spaces."""
    return _folded(f"{given_name} {family_name}")


def search_family_name(family_name: str) -> str:
    """The family name as a search must give it, whole: folded, words separated by single spaces."""
    return _folded(family_name)


def search_letters(query: str) -> int:
    """How many letters a name search holds as it is searched (folded): with a birth date, two of them
    find a patient. Counted after folding, since some letters fold to nothing (U+037A, U+FF9E) and
    some to several (ß to "ss")."""
    return sum(1 for char in _folded(query) if char.isalpha())


def searchable(query: str) -> bool:
    """Whether a search term still holds a letter or a digit once folded: one that folds to nothing
    (or to punctuation alone) would match every name, or every empty one."""
    return any(char.isalnum() for char in _folded(query))


def search_words(query: str) -> list[str]:
    """The words of a name search; each must begin a word of the patient's name."""
    return _folded(query).split()


# --- diagnoses --------------------------------------------------------------------------------

DIAGNOSIS_STATUSES = ("active", "resolved")
# ICD-10-CM: a letter, a digit, a digit or letter (C4A, M1A, Z3A exist), then up to four characters
# after the dot (letters, digits and the placeholder X). The form only: no code table is kept here.
_ICD10CM = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


def normalised_icd10cm(code: str) -> str | None:
    """The code in its usual written form (upper case, dot after the category), or None when it is not one."""
    text = code.strip().upper()
    if "." in text:
        category, _, rest = text.partition(".")
        if len(category) != 3 or not rest:
            return None  # a dot anywhere but after the three-character category is a typo, not a form
    else:
        category, rest = text[:3], text[3:]  # claims write codes without the dot
    written = f"{category}.{rest}" if rest else category
    return written if _ICD10CM.match(written) else None


# --- treatment plans --------------------------------------------------------------------------

DRAFT, ACTIVE, RETIRED = "draft", "active", "retired"
# DESIGN: an infusion lasts at least two hours (clinic.events.MINIMUM_INFUSION_MINUTES). The ceiling
# is a plausibility bound: no office day holds more, and a typo of 1200 for 120 should be caught
# here, not at the booking desk.
MAXIMUM_INFUSION_MINUTES = 600
# A rate only means something for a drug that runs in over time.
ROUTES_WITH_RATE = ("IV", "SC")
LARGEST_DOSE = Decimal("100000")
DOSE_DECIMAL_PLACES = 4


def drug_problem(drug: dict) -> tuple[str, str] | None:
    """(field, why) when one drug of a plan is incoherent in itself."""
    dose, maximum = drug["dose"], drug.get("max_per_24h")
    for field, value in (("dose", dose), ("max_per_24h", maximum)):
        if value is None:
            continue
        if value >= LARGEST_DOSE:
            return field, f"must be less than {LARGEST_DOSE} {drug['unit']}"
        if value.as_tuple().exponent < -DOSE_DECIMAL_PLACES:
            return field, f"at most {DOSE_DECIMAL_PLACES} decimal places"
    if maximum is not None and maximum < dose:
        return "max_per_24h", "the maximum per 24 hours cannot be less than a single dose"
    if drug.get("rate") and drug["route"] not in ROUTES_WITH_RATE:
        return "rate", f"a rate is only given for {' or '.join(ROUTES_WITH_RATE)} drugs, not {drug['route']}"
    return None


def duplicate_drug(drugs: list[dict]) -> str | None:
    """The name of a drug listed twice for the same route: its limits would be ambiguous."""
    seen = set()
    for drug in drugs:
        key = (_folded(drug["name"]), drug["route"])
        if key in seen:
            return drug["name"]
        seen.add(key)
    return None


def decimal_text(value: Decimal | None) -> str | None:
    """A dose as exact text: "30", "0.125" (never "3E+1", never a float's rounding)."""
    if value is None:
        return None
    return format(value.normalize(), "f")


def stored_drugs(drugs: list[dict]) -> list[dict]:
    """Drugs as kept in the plan's JSON: doses as exact decimal text, names without surrounding spaces."""
    return [{**drug, "name": drug["name"].strip(), "dose": decimal_text(drug["dose"]),
             "max_per_24h": decimal_text(drug.get("max_per_24h")), "rate": drug.get("rate")} for drug in drugs]


def ensure_editable(plan: dict) -> None:
    if plan["status"] != DRAFT:
        raise Conflict(f"only a draft plan can be changed; this plan is {plan['status']}",
                       {"plan_id": plan["id"], "status": plan["status"]})


def ensure_activatable(plan: dict) -> None:
    """A draft with at least one drug; anything else is refused with the reason."""
    if plan["status"] == ACTIVE:
        raise Conflict("the plan is already active", {"plan_id": plan["id"], "status": ACTIVE})
    if plan["status"] == RETIRED:
        raise Conflict("a retired plan cannot be activated again; write a new draft",
                       {"plan_id": plan["id"], "status": RETIRED})
    if not plan["drugs"]:
        raise Conflict("a plan without drugs cannot be activated: add at least one drug",
                       {"plan_id": plan["id"], "drugs": []})


def retirement_is_news(plan: dict) -> bool:
    """Retire a plan: True when other services knew it (it was active) and must hear it is retired.

    A draft may be retired too, to set it aside; nobody outside records ever heard of it.
    """
    if plan["status"] == RETIRED:
        raise Conflict("the plan is already retired", {"plan_id": plan["id"], "status": RETIRED})
    return plan["status"] == ACTIVE


def activated_payload(plan: dict, replaces_plan_id: str | None, *, plan_sequence: int) -> dict:
    """records.treatment_plan.activated: what scheduling and sessions need, and no free-text notes.

    `plan_sequence` is the patient's plan sequence after this event (one more per activation or
    retirement announced): scheduling keeps one plan per patient and orders the events by it.
    """
    return {
        "plan_id": plan["id"],
        "patient_id": plan["patient_id"],
        "infusion_minutes": plan["infusion_minutes"],
        "drugs": [{key: drug.get(key) for key in ("name", "dose", "unit", "route", "purpose", "rate", "max_per_24h")}
                  for drug in plan["drugs"]],
        "replaces_plan_id": replaces_plan_id,
        "plan_sequence": plan_sequence,
    }


def retired_payload(plan: dict, replaced_by_plan_id: str | None = None, *, plan_sequence: int) -> dict:
    """records.treatment_plan.retired, with the patient's plan sequence after this event."""
    return {"plan_id": plan["id"], "patient_id": plan["patient_id"], "replaced_by_plan_id": replaced_by_plan_id,
            "plan_sequence": plan_sequence}
