"""Patients: registering them, correcting their demographics and contact details, finding them.

The database decides what must hold when two requests race: a person registered twice is refused
by the unique identity key (a 409 naming the first registration), and a medical record number
drawn twice by the unique number (the registration is tried again with a new number).
"""

from __future__ import annotations

import itertools
import logging
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import new_id, reading
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.events import PATIENT_CONTACT_CHANGED, PATIENT_REGISTERED
from clinic.unit_of_work import UnitOfWork
from records import db, domain

log = logging.getLogger(__name__)

# Numbers are drawn from 10^8: a collision is rare, several in a row mean the generator is broken.
RECORD_NUMBER_ATTEMPTS = 5


def existing_patient(connection: Connection, patient_id, for_update: bool = False) -> dict:
    """The patient, or NotFound naming the id. `for_update` locks the row: writes about one patient queue up."""
    patient = db.get_patient(connection, str(patient_id), for_update=for_update)
    if patient is None:
        raise NotFound("no patient with this id", {"patient_id": str(patient_id)})
    return patient


def register_patient(uow: UnitOfWork, details: dict) -> dict:
    """Register a patient with a new medical record number; notifications hears of the contact details
    (records.patient.contact_changed, contact version 1) in the same transaction.

    Raises Conflict naming the patient already registered with the same name, birth date and email.
    """
    key = domain.identity_key(details["given_name"], details["family_name"], details["birth_date"], details["email"])
    patient_id = new_id()
    uow.audit.concerning(patient_id=patient_id)
    for attempt in itertools.count(1):
        try:
            with uow:
                patient = {**details, "id": patient_id, "medical_record_number": domain.new_medical_record_number(), "identity_key": key,
                           "search_name": domain.search_name(details["given_name"], details["family_name"]),
                           "family_search": domain.search_family_name(details["family_name"]),
                           "contact_version": 1, "plan_sequence": 0, "created_at": uow.now, "updated_at": uow.now}
                uow.connection.execute(db.patients.insert().values(**patient))
                uow.add_event(PATIENT_REGISTERED, {"patient_id": patient_id})
                uow.add_event(PATIENT_CONTACT_CHANGED, domain.contact_details(patient))
            return patient
        except sa.exc.IntegrityError as exc:
            refused = db.refused_patient_key(exc)
            if refused == "identity_key":
                _refuse_duplicate(uow, key)
            if refused != "medical_record_number" or attempt == RECORD_NUMBER_ATTEMPTS:
                raise
            log.info("a medical record number was drawn twice; registering again with another")


def change_patient(uow: UnitOfWork, patient_id, changes: dict) -> dict:
    """Change a patient's name, birth date, sex or contact details. A change of contact details is one
    more contact version, sent on to notifications in the same transaction.

    Raises NotFound, RuleViolation (the preferred contact left unreachable), or Conflict naming the
    patient this one would duplicate.
    """
    after: dict = {}
    try:
        with uow:
            before = existing_patient(uow.connection, patient_id, for_update=True)
            after = {**before, **changes, "updated_at": uow.now}
            problem = domain.reachability_problem(after)
            if problem:
                raise RuleViolation(problem[1], {problem[0]: [problem[1]]})
            after["identity_key"] = domain.identity_key(after["given_name"], after["family_name"], after["birth_date"], after["email"])
            after["search_name"] = domain.search_name(after["given_name"], after["family_name"])
            after["family_search"] = domain.search_family_name(after["family_name"])
            contact_changed = domain.contact_changed(before, after)
            if contact_changed:
                after["contact_version"] = before["contact_version"] + 1
            uow.connection.execute(db.patients.update().where(db.patients.c.id == before["id"]).values(
                **changes, identity_key=after["identity_key"], search_name=after["search_name"],
                family_search=after["family_search"], updated_at=after["updated_at"],
                contact_version=after["contact_version"]))
            if contact_changed:
                uow.add_event(PATIENT_CONTACT_CHANGED, domain.contact_details(after))
        return after
    except sa.exc.IntegrityError as exc:
        if db.refused_patient_key(exc) == "identity_key":
            _refuse_duplicate(uow, after["identity_key"], own_id=str(patient_id))
        raise


def _refuse_duplicate(uow: UnitOfWork, identity_key: str, own_id: str | None = None) -> None:
    """Turn the database's refusal of a second registration of one person into a Conflict naming the first.

    The 409 tells the caller that patient's id and record number, so the audit names that patient.
    Looked up after the refused transaction, outside any unit of work: the refusal is no change to audit.
    """
    with reading(uow.engine) as connection:
        existing = db.find_by_identity_key(connection, identity_key)
    if existing is None or existing["id"] == own_id:
        return
    uow.audit.concerning(patient_id=existing["id"])
    raise Conflict(
        "a patient with this name, birth date and email is already registered",
        {"patient_id": existing["id"], "medical_record_number": existing["medical_record_number"]},
    )


# How far back the job looks for corrections an older pod made (updated_at is that pod's clock at the
# start of its transaction): far longer than a rolling deploy's step, a transaction, or a clock's drift.
REFOLD_LOOKBACK = timedelta(hours=1)


def refold_family_names(uow: UnitOfWork, now: datetime | None = None) -> int:
    """The worker's job: give each patient registered or renamed by a records pod older than
    migration 0004 (during a rolling deploy) its folded family name, so a search by family name finds
    them. Idempotent, and safe beside another worker and beside corrections: a fold is stored only
    while the family name it was made from is still the patient's. How many were folded."""
    with uow:
        since = (now or uow.now) - REFOLD_LOOKBACK
        folded = 0
        for row in db.family_names_to_fold(uow.connection, since):
            family_search = domain.search_family_name(row["family_name"])
            if row["family_search"] != family_search:
                folded += db.set_family_search(uow.connection, row["id"], row["family_name"], family_search)
        if folded:
            log.info("folded the family names of %d patients for search", folded)
        return folded


def find_patients(connection: Connection, family_name: str | None, name: str, birth_date: date | None, limit: int) -> list[dict]:
    """Patients with this whole family name if given, whose names have a word beginning with each word
    of `name`, born on `birth_date` if given (case and accents ignored); at most `limit`, by family name.
    What is enough to search with is the API's rule (records.patients_api.PatientSearch); this
    refuses a search with neither a family name nor a birth date, which would list patients by a prefix."""
    if family_name is None and birth_date is None:
        raise RuleViolation("give the whole family name, or a birth date with the name", {"family_name": ["missing"]})
    family = domain.search_family_name(family_name) if family_name is not None else None
    return db.search_patients(connection, family, domain.search_words(name), birth_date, limit)
