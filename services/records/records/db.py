"""Records' tables and queries."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import UtcDateTime, messaging_tables

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)

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
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


def get_patient(connection: Connection, patient_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(patients).where(patients.c.id == patient_id)
    if for_update:
        query = query.with_for_update()
    row = connection.execute(query).mappings().first()
    return dict(row) if row else None


def find_by_identity_key(connection: Connection, key: str) -> dict | None:
    row = connection.execute(sa.select(patients).where(patients.c.identity_key == key)).mappings().first()
    return dict(row) if row else None
