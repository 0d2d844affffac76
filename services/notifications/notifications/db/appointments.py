"""The appointment copy: what notifications has heard of each appointment, from scheduling's events,
kept at the highest appointment version scheduling stamped (clinic.db.keep_newest). The reminder job
reads it to find tomorrow's appointments; a cancellation's message takes the room from it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import UtcDateTime, keep_newest, rows_of
from notifications.db import metadata

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), nullable=False),
    # Null only for a copy first made from a no-show, which names neither kind nor room.
    sa.Column("kind", sa.String(20), nullable=True),
    sa.Column("room_name", sa.String(100), nullable=True),
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("ends_at", UtcDateTime(), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
)
sa.Index("ix_appointments_status_starts", appointments.c.status, appointments.c.starts_at)


# Built once, with a bind parameter (see notifications.db): every appointment event reads it.
_appointment = sa.select(appointments).where(appointments.c.id == sa.bindparam("appointment_id"))


def get_appointment(connection: Connection, appointment_id: str) -> dict | None:
    row = connection.execute(_appointment, {"appointment_id": appointment_id}).mappings().first()
    return dict(row) if row else None


def keep_appointment(connection: Connection, copy: dict) -> bool:
    """Store the copy unless one of a higher version is there already; True when stored."""
    return keep_newest(connection, appointments, copy, key=("id",))


def booked_between(connection: Connection, starts_from: datetime, starts_before: datetime) -> list[dict]:
    """Appointments still booked (as far as notifications has heard) that start in [from, before)."""
    return rows_of(connection, sa.select(appointments).where(
        appointments.c.status == "booked", appointments.c.starts_at >= starts_from,
        appointments.c.starts_at < starts_before).order_by(appointments.c.starts_at, appointments.c.id))
