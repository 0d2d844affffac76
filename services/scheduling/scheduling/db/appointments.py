"""Reading and changing appointments (a new booking's insert is in booking_sql; the row lock in locks)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import row_of, rows_of
from scheduling.db.tables import appointments, holding, rooms

_follow_up = appointments.alias("follow_up")
_with_room_and_follow_up = (
    sa.select(appointments, rooms.c.name.label("room_name"), _follow_up.c.id.label("follow_up_id"))
    .join(rooms, rooms.c.id == appointments.c.room_id)
    .outerjoin(_follow_up, _follow_up.c.follow_up_of == appointments.c.id)
)


def shown(connection: Connection, appointment_id: str) -> dict | None:
    """An appointment with its room's name and, for an infusion, the follow-up booked after it."""
    return row_of(connection, _with_room_and_follow_up.where(appointments.c.id == appointment_id))


def find(connection: Connection, *, starts_from: datetime | None = None, starts_before: datetime | None = None,
         room_id: str | None = None, patient_id: str | None = None, status: str | None = None,
         needs_follow_up: bool | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
    """Appointments as shown, earliest first (then by room name), filtered."""
    query = _with_room_and_follow_up.order_by(appointments.c.starts_at, rooms.c.name, appointments.c.id)
    if starts_from is not None:
        query = query.where(appointments.c.starts_at >= starts_from)
    if starts_before is not None:
        query = query.where(appointments.c.starts_at < starts_before)
    if room_id is not None:
        query = query.where(appointments.c.room_id == room_id)
    if patient_id is not None:
        query = query.where(appointments.c.patient_id == patient_id)
    if status is not None:
        query = query.where(appointments.c.status == status)
    if needs_follow_up is not None:
        missing = sa.and_(appointments.c.kind == "infusion", appointments.c.session_outcome == "completed", _follow_up.c.id.is_(None))
        query = query.where(missing if needs_follow_up else sa.not_(missing))
    return rows_of(connection, query.limit(limit).offset(offset))


def change(connection: Connection, appointment: dict, now: datetime, **values) -> dict:
    """Write a change to a locked appointment (scheduling.db.locks.appointment), with its next version;
    returns the appointment as changed."""
    values.update(version=appointment["version"] + 1, updated_at=now)
    connection.execute(appointments.update().where(appointments.c.id == appointment["id"]).values(**values))
    return {**appointment, **values}


def insert(connection: Connection, appointment: dict) -> None:
    connection.execute(appointments.insert().values(**appointment))


def follow_up_of(connection: Connection, infusion_id: str) -> str | None:
    """The follow-up visit booked automatically after this infusion, if any."""
    return connection.execute(sa.select(appointments.c.id).where(appointments.c.follow_up_of == infusion_id)).scalar()


def room_holds(connection: Connection, room_ids: list[str], starts_at: datetime, until: datetime) -> dict[str, list[tuple]]:
    """{room_id: [(start, room_blocked_until), ...]} of the holds overlapping [starts_at, until).

    Plain comparisons rather than booking_sql.overlaps: for a list of rooms (IN), which GiST cannot
    use, the btree on (room_id, starts_at) bounds the scan by the start.
    """
    rows = connection.execute(
        sa.select(appointments.c.room_id, appointments.c.starts_at, appointments.c.room_blocked_until)
        .where(appointments.c.room_id.in_(room_ids), holding,
               appointments.c.starts_at < until, appointments.c.room_blocked_until > starts_at)
    ).all()
    holds: dict[str, list[tuple]] = {room_id: [] for room_id in room_ids}
    for row in rows:
        holds[row.room_id].append((row.starts_at, row.room_blocked_until))
    return holds


def patient_holds(connection: Connection, patient_id: str, starts_at: datetime, until: datetime) -> list[tuple]:
    """[(start, patient_busy_until), ...] of the patient's holds overlapping [starts_at, until)."""
    rows = connection.execute(
        sa.select(appointments.c.starts_at, appointments.c.patient_busy_until)
        .where(appointments.c.patient_id == patient_id, holding,
               appointments.c.starts_at < until, appointments.c.patient_busy_until > starts_at)
    ).all()
    return [(row.starts_at, row.patient_busy_until) for row in rows]


def still_to_come(connection: Connection, now: datetime, room_id: str | None = None,
                  on_days: tuple[datetime, datetime] | None = None) -> list[dict]:
    """Booked appointments still to come (optionally in one room, or starting within a window), earliest first."""
    query = (
        sa.select(appointments.c.id, appointments.c.room_id, appointments.c.kind, appointments.c.starts_at, appointments.c.ends_at)
        .where(appointments.c.status == "booked", appointments.c.ends_at > now)
        .order_by(appointments.c.starts_at)
    )
    if room_id is not None:
        query = query.where(appointments.c.room_id == room_id)
    if on_days is not None:
        query = query.where(appointments.c.starts_at < on_days[1], appointments.c.ends_at > on_days[0])
    return rows_of(connection, query)
