"""Records' tables and queries.

Doses travel as exact decimal text inside JSON (never floats: SQLite would round 0.1 mg), and
every rule that must hold under concurrency is a constraint or a lock here, not a check before
an insert that two requests can both pass.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.audit import audit_table
from clinic.db import UtcDateTime, messaging_tables, row_of, rows_of, violated_constraint

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
# Who read or changed which patient's data (clinic.audit): the same table every service keeps.
audit_log = audit_table(metadata)

patients = sa.Table(
    "patients",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("medical_record_number", sa.String(12), nullable=False, unique=True),
    sa.Column("given_name", sa.String(100), nullable=False),
    sa.Column("family_name", sa.String(100), nullable=False),
    sa.Column("birth_date", sa.Date(), nullable=False),
    sa.Column("sex", sa.String(10), nullable=False),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("preferred_contact", sa.String(10), nullable=False),
    sa.Column("email_opt_out", sa.Boolean(), nullable=False),
    # The same person registered twice is refused by the database, not by a check two requests can pass.
    sa.Column("identity_key", sa.String(64), nullable=False, unique=True),
    # The name folded for search (no case, no accents): see domain.search_name. Unbounded: folding
    # lengthens a name (ß is "ss", U+FDFA eighteen characters), so no length of the name's bounds it.
    # SQLite keeps its first declaration, which it never enforced (migration 0005 says why).
    sa.Column("search_name", sa.Text().with_variant(sa.String(201), "sqlite"), nullable=False),
    # The family name folded the same way: a search gives it whole (domain.search_family_name).
    # NULL until written: a row from a pod older than this column (a rolling deploy) has none, and
    # the worker's job fills it (records.services.patients.refold_family_names).
    sa.Column("family_search", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # Versions stamped in the same transaction as the change they count, carried by the events, so
    # the copies other services keep end at the newest whatever order the events arrive in: one
    # more per change of contact details, one more per plan activation or retirement announced.
    sa.Column("contact_version", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("plan_sequence", sa.Integer(), nullable=False, server_default="0"),
)
sa.Index("ix_patients_family_name", patients.c.family_name)
sa.Index("ix_patients_birth_date", patients.c.birth_date)
sa.Index("ix_patients_family_search", patients.c.family_search, patients.c.birth_date)
sa.Index("ix_patients_updated_at", patients.c.updated_at)

diagnoses = sa.Table(
    "diagnoses",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("code", sa.String(8), nullable=False),
    sa.Column("description", sa.String(500), nullable=False),
    sa.Column("onset_date", sa.Date(), nullable=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("recorded_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)
# A code is active at most once per patient; a resolved one may come back as a new diagnosis.
sa.Index("uq_diagnoses_active_code", diagnoses.c.patient_id, diagnoses.c.code, unique=True,
         postgresql_where=diagnoses.c.status == "active", sqlite_where=diagnoses.c.status == "active")

treatment_plans = sa.Table(
    "treatment_plans",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("infusion_minutes", sa.Integer(), nullable=False),
    sa.Column("drugs", sa.JSON(), nullable=False),
    sa.Column("notes", sa.Text(), nullable=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("activated_by", sa.String(200), nullable=True),
    sa.Column("activated_at", UtcDateTime(), nullable=True),
    sa.Column("retired_by", sa.String(200), nullable=True),
    sa.Column("retired_at", UtcDateTime(), nullable=True),
    sa.Column("replaced_by_plan_id", sa.String(36), nullable=True),
)
sa.Index("ix_treatment_plans_patient", treatment_plans.c.patient_id)
# One active plan per patient, whatever two neurologists click at the same moment.
ONE_ACTIVE_PLAN = "uq_treatment_plans_one_active"
sa.Index(ONE_ACTIVE_PLAN, treatment_plans.c.patient_id, unique=True,
         postgresql_where=treatment_plans.c.status == "active", sqlite_where=treatment_plans.c.status == "active")

diary_entries = sa.Table(
    "diary_entries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("entry_date", sa.Date(), nullable=False),
    sa.Column("headache", sa.Boolean(), nullable=False),
    sa.Column("worst_intensity", sa.Integer(), nullable=True),
    sa.Column("acute_medication", sa.JSON(), nullable=False),
    sa.Column("recorded_by", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # One entry per patient per day: a second one is a 409 naming the first, which can be corrected.
    sa.UniqueConstraint("patient_id", "entry_date", name="uq_diary_entries_patient_date"),
)

encounters = sa.Table(
    "encounters",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # One encounter per infusion session, even if sessions announced it twice under two event ids.
    sa.Column("session_id", sa.String(36), nullable=False, unique=True),
    sa.Column("appointment_id", sa.String(36), nullable=False),
    sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
    sa.Column("room_id", sa.String(36), nullable=False),
    sa.Column("room_name", sa.String(100), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("ended_at", UtcDateTime(), nullable=False),
    sa.Column("drugs_given", sa.JSON(), nullable=False),
    sa.Column("pain_before", sa.Integer(), nullable=True),
    sa.Column("pain_after", sa.Integer(), nullable=True),
    sa.Column("highest_news2", sa.Integer(), nullable=True),
    sa.Column("alerts", sa.JSON(), nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
)
sa.Index("ix_encounters_patient_started", encounters.c.patient_id, encounters.c.started_at)

# --- patients ---------------------------------------------------------------------------------


def get_patient(connection: Connection, patient_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(patients).where(patients.c.id == patient_id)
    if for_update:
        query = query.with_for_update()
    return row_of(connection, query)


def find_by_identity_key(connection: Connection, key: str) -> dict | None:
    return row_of(connection, sa.select(patients).where(patients.c.identity_key == key))


# The patients' unique keys, by the name PostgreSQL gives a column's UNIQUE (SQLite names the column).
_PATIENT_KEYS = {"patients_medical_record_number_key": "medical_record_number", "patients_identity_key_key": "identity_key"}


def refused_patient_key(exc: BaseException) -> str | None:
    """Which unique key of patients refused a write: "medical_record_number" (a number drawn twice),
    "identity_key" (the same person again), or None when it was something else."""
    name = violated_constraint(exc)
    if name:
        return _PATIENT_KEYS.get(name)
    if name == "":
        message = str(exc.orig)
        return next((column for column in _PATIENT_KEYS.values() if f"patients.{column}" in message), None)
    return None


def set_plan_sequence(connection: Connection, patient_id: str, plan_sequence: int) -> None:
    """Stamp the patient's plan sequence: the caller holds the patient's row lock and announces the events it counts."""
    connection.execute(patients.update().where(patients.c.id == patient_id).values(plan_sequence=plan_sequence))


def family_names_to_fold(connection: Connection, changed_since) -> list[dict]:
    """id, family_name and family_search of the patients whose family_search may not be their family
    name folded: none yet (a row an older pod registered), or changed since `changed_since` (an older
    pod's correction leaves the fold of the name before it)."""
    query = sa.select(patients.c.id, patients.c.family_name, patients.c.family_search).where(
        sa.or_(patients.c.family_search.is_(None), patients.c.updated_at >= changed_since))
    return rows_of(connection, query)


def set_family_search(connection: Connection, patient_id: str, family_name: str, family_search: str) -> bool:
    """Store the fold of `family_name`, if that is still the patient's family name (a correction made
    meanwhile brought its own); whether it was stored."""
    result = connection.execute(patients.update().where(patients.c.id == patient_id, patients.c.family_name == family_name)
                                .values(family_search=family_search))
    return result.rowcount == 1


# What a search answers of each patient: enough to tell them apart, no contact details.
SEARCH_COLUMNS = (patients.c.id, patients.c.medical_record_number, patients.c.given_name, patients.c.family_name,
                  patients.c.birth_date)


def search_patients(connection: Connection, family: str | None, words: list[str], birth_date: date | None,
                    limit: int) -> list[dict]:
    """Patients with this whole family name (folded) if given, whose name has a word beginning with each
    of `words` (folded), born on birth_date if given: the SEARCH_COLUMNS of each."""
    query = sa.select(*SEARCH_COLUMNS)
    if family is not None:
        query = query.where(patients.c.family_search == family)
    # A leading space makes "begins a word" one LIKE on every database; the words are escaped so a
    # '%' typed at the desk is a character, not a wildcard.
    spaced = sa.literal(" ") + patients.c.search_name
    for word in words:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(spaced.like(f"% {escaped}%", escape="\\"))
    if birth_date is not None:
        query = query.where(patients.c.birth_date == birth_date)
    return rows_of(connection, query.order_by(patients.c.family_name, patients.c.given_name, patients.c.id).limit(limit))


# --- diagnoses --------------------------------------------------------------------------------


def get_diagnosis(connection: Connection, patient_id: str, diagnosis_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(diagnoses).where(diagnoses.c.id == diagnosis_id, diagnoses.c.patient_id == patient_id)
    return row_of(connection, query.with_for_update() if for_update else query)


def active_diagnosis_with_code(connection: Connection, patient_id: str, code: str) -> dict | None:
    return row_of(connection, sa.select(diagnoses).where(
        diagnoses.c.patient_id == patient_id, diagnoses.c.code == code, diagnoses.c.status == "active"))


def list_diagnoses(connection: Connection, patient_id: str) -> list[dict]:
    return rows_of(connection, sa.select(diagnoses).where(diagnoses.c.patient_id == patient_id)
                  .order_by(diagnoses.c.status, diagnoses.c.created_at))


# --- treatment plans --------------------------------------------------------------------------


def get_plan(connection: Connection, plan_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(treatment_plans).where(treatment_plans.c.id == plan_id)
    return row_of(connection, query.with_for_update() if for_update else query)


def plan_patient_id(connection: Connection, plan_id: str) -> str | None:
    return connection.execute(sa.select(treatment_plans.c.patient_id).where(treatment_plans.c.id == plan_id)).scalar()


def active_plan(connection: Connection, patient_id: str) -> dict | None:
    return row_of(connection, sa.select(treatment_plans).where(
        treatment_plans.c.patient_id == patient_id, treatment_plans.c.status == "active"))


def list_plans(connection: Connection, patient_id: str) -> list[dict]:
    return rows_of(connection, sa.select(treatment_plans).where(treatment_plans.c.patient_id == patient_id)
                  .order_by(treatment_plans.c.created_at.desc()))


def update_plan(connection: Connection, plan_id: str, **values) -> None:
    connection.execute(treatment_plans.update().where(treatment_plans.c.id == plan_id).values(**values))


# --- diary ------------------------------------------------------------------------------------


def get_diary_entry(connection: Connection, patient_id: str, entry_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(diary_entries).where(diary_entries.c.id == entry_id, diary_entries.c.patient_id == patient_id)
    return row_of(connection, query.with_for_update() if for_update else query)


def diary_entry_on(connection: Connection, patient_id: str, entry_date: date) -> dict | None:
    return row_of(connection, sa.select(diary_entries).where(
        diary_entries.c.patient_id == patient_id, diary_entries.c.entry_date == entry_date))


def diary_between(connection: Connection, patient_id: str, first: date, last: date) -> list[dict]:
    return rows_of(connection, sa.select(diary_entries).where(
        diary_entries.c.patient_id == patient_id, diary_entries.c.entry_date.between(first, last))
        .order_by(diary_entries.c.entry_date))


# --- encounters -------------------------------------------------------------------------------


def encounter_for_session(connection: Connection, session_id: str) -> dict | None:
    return row_of(connection, sa.select(encounters).where(encounters.c.session_id == session_id))


def list_encounters(connection: Connection, patient_id: str) -> list[dict]:
    return rows_of(connection, sa.select(encounters).where(encounters.c.patient_id == patient_id)
                  .order_by(encounters.c.started_at.desc()))
