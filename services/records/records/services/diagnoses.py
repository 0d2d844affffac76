"""Diagnoses: recording them (ICD-10-CM) and correcting or resolving them.

A code is active at most once per patient. Writes lock the patient's row first, so no other request
can slip the same code in between the check and the insert; a partial unique index is the last word.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from clinic.db import new_id
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.unit_of_work import UnitOfWork
from records import db
from records.services.patients import existing_patient

ACTIVE = "active"


def record_diagnosis(uow: UnitOfWork, patient_id, details: dict, by: str) -> dict:
    """Record a diagnosis of a patient (code, description, onset date, status), written by `by`.

    Raises NotFound, RuleViolation (onset before birth), or Conflict naming the same code already active.
    """
    diagnosis = {**details, "id": new_id(), "patient_id": str(patient_id), "recorded_by": by}
    uow.audit.concerning(resource_id=diagnosis["id"])
    with uow:
        patient = existing_patient(uow.connection, patient_id, for_update=True)
        if details["onset_date"] and details["onset_date"] < patient["birth_date"]:
            raise RuleViolation("the onset date is before the patient's birth date", {"onset_date": ["before the birth date"]})
        if details["status"] == ACTIVE:
            _refuse_second_active(uow.connection, diagnosis)
        diagnosis.update(created_at=uow.now, updated_at=uow.now)
        uow.connection.execute(db.diagnoses.insert().values(**diagnosis))
    return diagnosis


def change_diagnosis(uow: UnitOfWork, patient_id, diagnosis_id, changes: dict) -> dict:
    """Correct a diagnosis's description, or mark it resolved (or active again).

    Raises NotFound, or Conflict when it would make a code active twice for the patient.
    """
    with uow:
        existing_patient(uow.connection, patient_id, for_update=True)
        diagnosis = db.get_diagnosis(uow.connection, str(patient_id), str(diagnosis_id), for_update=True)
        if diagnosis is None:
            raise NotFound("this patient has no diagnosis with this id", {"diagnosis_id": str(diagnosis_id)})
        after = {**diagnosis, **changes, "updated_at": uow.now}
        if after["status"] == ACTIVE and diagnosis["status"] != ACTIVE:
            _refuse_second_active(uow.connection, after)
        uow.connection.execute(db.diagnoses.update().where(db.diagnoses.c.id == diagnosis["id"])
                               .values(**changes, updated_at=after["updated_at"]))
    return after


def patient_diagnoses(connection: Connection, patient_id) -> list[dict]:
    """A patient's diagnoses, active first; NotFound for an unknown patient."""
    existing_patient(connection, patient_id)
    return db.list_diagnoses(connection, str(patient_id))


def _refuse_second_active(connection: Connection, diagnosis: dict) -> None:
    # The patient row is locked by the caller, so no other request can slip the same code in between.
    existing = db.active_diagnosis_with_code(connection, diagnosis["patient_id"], diagnosis["code"])
    if existing is not None:
        raise Conflict(f"{diagnosis['code']} is already an active diagnosis of this patient",
                       {"diagnosis_id": existing["id"], "code": diagnosis["code"]})
