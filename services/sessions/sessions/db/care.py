"""Sessions' care tables and their queries: the medication administration record, pain scores and
visitors (migration 0005).

- `medications`: one row per administration, with the plan drug it gives (the session's copy,
  session_drugs), the patient (the 24-hour total counts every session of theirs), the drug's name
  folded for comparison (`drug_key`), and the void fields: a voided administration is kept and left
  out of every total and of what the session reports as given.
- `medication_ledgers`: one row per patient who was ever given a drug with a 24-hour maximum. It holds
  nothing but its lock: an administration takes it (FOR UPDATE on PostgreSQL) before adding up the
  patient's last 24 hours, so two administrations racing past the maximum are decided one after the
  other. On SQLite every write transaction is BEGIN IMMEDIATE (clinic.db) and runs alone already.
- `pain_scores`: 0-10 (LOINC 72514-3) with the time measured.
- `visitors`: the partial unique index `visitors_one_present_per_session` (session_id where left_at is
  null) is the one-visitor-at-a-time rule: the database refuses a second present visitor whoever
  sends it. A visitor's name is PHI; it is kept here and nowhere else (no event, no log).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import UtcDateTime, row_of, rows_of
from sessions.db.tables import metadata, session_drugs, sessions
from sessions.domain.medications import DAY

ONE_VISITOR_AT_A_TIME = "visitors_one_present_per_session"
PAIN_SCORE_LOINC = "72514-3"

medications = sa.Table(
    "medications",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_medications_session"), nullable=False),
    sa.Column("patient_id", sa.String(36), nullable=False),
    sa.Column("session_drug_id", sa.String(36), sa.ForeignKey("session_drugs.id", name="fk_medications_session_drug"), nullable=False),
    # The plan drug's name as given, and folded (sessions.domain.medications.drug_key) for the 24-hour total.
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("drug_key", sa.String(200), nullable=False),
    sa.Column("dose", sa.Numeric(12, 4), nullable=False),
    sa.Column("unit", sa.String(20), nullable=False),
    sa.Column("route", sa.String(10), nullable=False),
    sa.Column("rate", sa.String(40), nullable=True),
    sa.Column("given_at", UtcDateTime(), nullable=False),
    sa.Column("given_by", sa.String(200), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("voided_at", UtcDateTime(), nullable=True),
    sa.Column("voided_by", sa.String(200), nullable=True),
    sa.Column("void_reason", sa.String(500), nullable=True),
)
sa.Index("ix_medications_session_given_at", medications.c.session_id, medications.c.given_at)
sa.Index("ix_medications_patient_drug_given_at", medications.c.patient_id, medications.c.drug_key, medications.c.given_at)

medication_ledgers = sa.Table(
    "medication_ledgers",
    metadata,
    sa.Column("patient_id", sa.String(36), primary_key=True),
    sa.Column("opened_at", UtcDateTime(), nullable=False),
)

pain_scores = sa.Table(
    "pain_scores",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_pain_scores_session"), nullable=False),
    sa.Column("score", sa.Integer(), nullable=False, comment=f"pain severity 0-10, LOINC {PAIN_SCORE_LOINC}"),
    sa.Column("measured_at", UtcDateTime(), nullable=False),
    sa.Column("recorded_by", sa.String(200), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.CheckConstraint("score BETWEEN 0 AND 10", name="ck_pain_scores_score"),
)
sa.Index("ix_pain_scores_session_measured_at", pain_scores.c.session_id, pain_scores.c.measured_at)

visitors = sa.Table(
    "visitors",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_visitors_session"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("relationship", sa.String(100), nullable=False),
    sa.Column("adult_confirmed", sa.Boolean(), nullable=False),
    sa.Column("arrived_at", UtcDateTime(), nullable=False),
    sa.Column("arrived_by", sa.String(200), nullable=False),
    sa.Column("left_at", UtcDateTime(), nullable=True),
    sa.Column("left_by", sa.String(200), nullable=True),
)
sa.Index(ONE_VISITOR_AT_A_TIME, visitors.c.session_id, unique=True,
         postgresql_where=visitors.c.left_at.is_(None), sqlite_where=visitors.c.left_at.is_(None))
sa.Index("ix_visitors_session_arrived_at", visitors.c.session_id, visitors.c.arrived_at)


# --- what the session lifecycle reads (discharge, the board) ------------------------------------


def drugs_given(connection: Connection, session_id: str) -> list[dict]:
    """The session's non-voided administrations in the order given, shaped as clinic.events.DrugGiven
    (name, dose, unit, route, given_at, rate) for sessions.session.completed."""
    query = (sa.select(medications.c.name, medications.c.dose, medications.c.unit, medications.c.route, medications.c.given_at,
                       medications.c.rate)
             .where(medications.c.session_id == session_id, medications.c.voided_at.is_(None))
             .order_by(medications.c.given_at, medications.c.recorded_at, medications.c.id))
    return rows_of(connection, query)


def pain_before_after(connection: Connection, session_id: str, started_at: datetime | None) -> tuple[int | None, int | None]:
    """(the last pain score measured at or before the start, the last one measured after it); None for
    either when there is none. A session never started has only a "before"."""
    def last(*conditions) -> int | None:
        query = (sa.select(pain_scores.c.score).where(pain_scores.c.session_id == session_id, *conditions)
                 .order_by(pain_scores.c.measured_at.desc(), pain_scores.c.recorded_at.desc(), pain_scores.c.id.desc()).limit(1))
        return connection.execute(query).scalar_one_or_none()

    if started_at is None:
        return last(), None
    return last(pain_scores.c.measured_at <= started_at), last(pain_scores.c.measured_at > started_at)


def visitors_present(connection: Connection, session_ids) -> set[str]:
    """Those of the sessions with a visitor present now (one query, whatever the number of sessions)."""
    session_ids = list(session_ids)
    if not session_ids:
        return set()
    query = sa.select(visitors.c.session_id).where(visitors.c.session_id.in_(session_ids), visitors.c.left_at.is_(None))
    return set(connection.execute(query).scalars())


# --- the session, as the care record reads it ----------------------------------------------------


def session_patient(connection: Connection, session_id: str) -> str | None:
    """The patient of the session, None when there is no such session (for reads, to audit them)."""
    return connection.execute(sa.select(sessions.c.patient_id).where(sessions.c.id == session_id)).scalar_one_or_none()


def session_drug(connection: Connection, session_id: str, session_drug_id: str) -> dict | None:
    """The plan drug with this id, if it is one of this session's."""
    return row_of(connection, sa.select(session_drugs).where(session_drugs.c.id == session_drug_id,
                                                            session_drugs.c.session_id == session_id))


# --- medications ---------------------------------------------------------------------------------


def lock_ledger(connection: Connection, patient_id: str, now: datetime) -> None:
    """Hold the patient's medication ledger until the transaction ends: administrations to one patient
    that count against a 24-hour maximum are added up one at a time. The row is made on first use
    (INSERT ... ON CONFLICT DO NOTHING: two first uses at once make one) and then locked."""
    insert = _insert_for(connection)
    connection.execute(insert(medication_ledgers).values(patient_id=patient_id, opened_at=now).on_conflict_do_nothing())
    connection.execute(sa.select(medication_ledgers.c.patient_id).where(medication_ledgers.c.patient_id == patient_id)
                       .with_for_update())


def doses_nearby(connection: Connection, patient_id: str, drug_key: str, unit: str, given_at: datetime) -> list[tuple]:
    """(given_at, dose) of the patient's non-voided administrations of the drug in this unit, in any
    session, less than 24 hours either side of `given_at`."""
    query = sa.select(medications.c.given_at, medications.c.dose).where(
        medications.c.patient_id == patient_id, medications.c.drug_key == drug_key, medications.c.unit == unit,
        medications.c.voided_at.is_(None), medications.c.given_at > given_at - DAY, medications.c.given_at < given_at + DAY)
    return [(row.given_at, row.dose) for row in connection.execute(query)]


def insert_medication(connection: Connection, administration: dict) -> None:
    connection.execute(medications.insert().values(**administration))


def medication(connection: Connection, session_id: str, medication_id: str) -> dict | None:
    return row_of(connection, sa.select(medications).where(medications.c.id == medication_id, medications.c.session_id == session_id))


def void_medication(connection: Connection, medication_id: str, at: datetime, by: str, reason: str) -> None:
    connection.execute(medications.update().where(medications.c.id == medication_id)
                       .values(voided_at=at, voided_by=by, void_reason=reason))


def administrations(connection: Connection, session_id: str) -> list[dict]:
    """Every administration of the session, voided ones too, in the order given."""
    return rows_of(connection, sa.select(medications).where(medications.c.session_id == session_id)
                   .order_by(medications.c.given_at, medications.c.recorded_at, medications.c.id))


# --- pain scores ---------------------------------------------------------------------------------


def insert_pain_score(connection: Connection, score: dict) -> None:
    connection.execute(pain_scores.insert().values(**score))


def pain_scores_of(connection: Connection, session_id: str) -> list[dict]:
    """The session's pain scores in the order measured."""
    return rows_of(connection, sa.select(pain_scores).where(pain_scores.c.session_id == session_id)
                   .order_by(pain_scores.c.measured_at, pain_scores.c.recorded_at, pain_scores.c.id))


# --- visitors ------------------------------------------------------------------------------------


def insert_visitor(connection: Connection, visitor: dict) -> None:
    connection.execute(visitors.insert().values(**visitor))


def visitor_present(connection: Connection, session_id: str) -> dict | None:
    """The visitor with the patient now, if any (there is at most one)."""
    return row_of(connection, sa.select(visitors).where(visitors.c.session_id == session_id, visitors.c.left_at.is_(None)))


def visitor(connection: Connection, session_id: str, visitor_id: str) -> dict | None:
    return row_of(connection, sa.select(visitors).where(visitors.c.id == visitor_id, visitors.c.session_id == session_id))


def visitor_left(connection: Connection, visitor_id: str, at: datetime, by: str) -> None:
    connection.execute(visitors.update().where(visitors.c.id == visitor_id).values(left_at=at, left_by=by))


def visitors_of(connection: Connection, session_id: str) -> list[dict]:
    """The session's visitors in the order they came, those who left too."""
    return rows_of(connection, sa.select(visitors).where(visitors.c.session_id == session_id)
                   .order_by(visitors.c.arrived_at, visitors.c.id))


def _insert_for(connection: Connection):
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
