"""Notifications' tables and queries."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.audit import audit_table
from clinic.db import UtcDateTime, keep_newest, messaging_tables

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit_table(metadata)

# A copy of each patient's contact details, kept from records.patient.contact_changed at the highest
# contact version records stamped (see keep_contact).
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
    # When records made the change: shown to staff, never used to order changes.
    sa.Column("changed_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
)


# Statements a consumer runs for every event are built once, with bind parameters: building one
# costs SQLAlchemy far more than running it.
_contact = sa.select(contacts).where(contacts.c.patient_id == sa.bindparam("patient_id"))


def get_contact(connection: Connection, patient_id: str) -> dict | None:
    row = connection.execute(_contact, {"patient_id": patient_id}).mappings().first()
    return dict(row) if row else None


def keep_contact(connection: Connection, contact: dict) -> bool:
    """Store the contact unless a copy of a higher version is there already; True when stored."""
    return keep_newest(connection, contacts, contact, key=("patient_id",))


# The mail log's and the appointment copies' tables live with their queries; imported here so
# `metadata` (migrations, tests) has them.
from notifications.db import appointments as _appointments  # noqa: E402, F401
from notifications.db import messages as _messages  # noqa: E402, F401
