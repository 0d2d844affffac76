"""The headache diary's use cases: adding a day, correcting it, listing days, and the summary that
shows whether the infusions help (its arithmetic is records.diary).

One entry per patient per day. A second entry for the same day is refused with a Conflict naming the
first, which can then be corrected: a day's entry is never silently overwritten.
"""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import new_id, reading, violated_constraint
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.unit_of_work import UnitOfWork
from records import db, diary
from records.services.patients import existing_patient


def add_entry(uow: UnitOfWork, patient_id, day: dict, by: str) -> dict:
    """Add a day to a patient's diary (date, headache or not, worst intensity, acute medication), written by `by`.

    Raises NotFound, RuleViolation (a day before the patient was born), or Conflict naming the day's entry.
    """
    entry = {**day, "id": new_id(), "patient_id": str(patient_id), "recorded_by": by}
    uow.audit.concerning(resource_id=entry["id"])
    try:
        with uow:
            patient = existing_patient(uow.connection, patient_id, for_update=True)
            if entry["entry_date"] < patient["birth_date"]:
                raise RuleViolation("the diary date is before the patient's birth date", {"entry_date": ["before the birth date"]})
            _refuse_second_entry(uow.connection, entry)
            entry.update(created_at=uow.now, updated_at=uow.now)
            uow.connection.execute(db.diary_entries.insert().values(**entry))
    except sa.exc.IntegrityError as exc:
        if violated_constraint(exc) is not None:
            # Another request wrote the same day in between (the unique key refused ours): name it.
            with reading(uow.engine) as connection:
                _refuse_second_entry(connection, entry)
        raise
    return entry


def correct_entry(uow: UnitOfWork, patient_id, entry_id, day: dict, by: str) -> dict:
    """Replace a day's entry (its date stays), now recorded by `by`. Raises NotFound."""
    with uow:
        existing_patient(uow.connection, patient_id, for_update=True)
        entry = db.get_diary_entry(uow.connection, str(patient_id), str(entry_id), for_update=True)
        if entry is None:
            raise NotFound("this patient has no diary entry with this id", {"entry_id": str(entry_id)})
        entry.update(day, updated_at=uow.now, recorded_by=by)
        uow.connection.execute(db.diary_entries.update().where(db.diary_entries.c.id == entry["id"])
                               .values(**day, updated_at=entry["updated_at"], recorded_by=by))
    return entry


def entries_between(connection: Connection, patient_id, first: date, last: date) -> list[dict]:
    """A patient's entries from `first` to `last`, both included, oldest first; NotFound for an unknown patient."""
    existing_patient(connection, patient_id)
    return db.diary_between(connection, str(patient_id), first, last)


def summary(connection: Connection, patient_id, today: date, days: int, around_days: int, clinic_zone: ZoneInfo) -> dict:
    """The last `days` days up to `today`: headache frequency and intensity, ICHD-3 medication overuse,
    and for each infusion in them (the encounters, dated in `clinic_zone`) the days before and after.
    NotFound for an unknown patient."""
    existing_patient(connection, patient_id)
    first = today - timedelta(days=days - 1)
    rows = db.diary_between(connection, str(patient_id), first - timedelta(days=around_days), today)
    infusions = [encounter["started_at"].astimezone(clinic_zone).date() for encounter in db.list_encounters(connection, str(patient_id))]
    entries = [diary.DiaryDay(row["entry_date"], row["headache"], row["worst_intensity"], frozenset(row["acute_medication"]))
               for row in rows]
    return {
        "patient_id": str(patient_id),
        "window": diary.summarise(entries, first, today),
        "medication_overuse": diary.medication_overuse(entries, first, today),
        "infusions": diary.infusion_trends(entries, [day for day in infusions if first <= day <= today], around_days, today),
    }


def _refuse_second_entry(connection: Connection, entry: dict) -> None:
    existing = db.diary_entry_on(connection, entry["patient_id"], entry["entry_date"])
    if existing is not None:
        raise Conflict(f"the diary already has an entry for {entry['entry_date'].isoformat()}; correct that one instead",
                       {"entry_id": existing["id"], "entry_date": entry["entry_date"].isoformat()})
