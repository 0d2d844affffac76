"""Notifications' tables and queries."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import UtcDateTime, messaging_tables, save_by_key

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)

# A copy of each patient's contact details, kept from records.patient.contact_changed.
contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("patient_id", sa.String(36), primary_key=True),
    sa.Column("given_name", sa.String(100), nullable=False),
    sa.Column("family_name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=True),
    sa.Column("phone", sa.String(32), nullable=True),
    sa.Column("preferred_contact", sa.String(10), nullable=False),
    sa.Column("email_opt_out", sa.Boolean(), nullable=False),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
)


def get_contact(connection: Connection, patient_id: str) -> dict | None:
    row = connection.execute(sa.select(contacts).where(contacts.c.patient_id == patient_id)).mappings().first()
    return dict(row) if row else None


def save_contact(connection: Connection, contact: dict) -> None:
    save_by_key(connection, contacts, "patient_id", contact)
