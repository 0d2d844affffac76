"""Reading and changing rooms (the row lock a change takes is in locks)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import row_of, rows_of
from scheduling.db.tables import rooms


def get(connection: Connection, room_id: str) -> dict | None:
    return row_of(connection, sa.select(rooms).where(rooms.c.id == room_id))


def named(connection: Connection, name: str) -> dict | None:
    """The room with this name, whatever its case (names are unique regardless of case)."""
    return row_of(connection, sa.select(rooms).where(sa.func.lower(rooms.c.name) == sa.func.lower(name)))


def listed(connection: Connection, kind: str | None = None, active: bool | None = None) -> list[dict]:
    """The rooms by name, optionally of one kind, in use or not."""
    query = sa.select(rooms).order_by(rooms.c.name)
    if kind is not None:
        query = query.where(rooms.c.kind == kind)
    if active is not None:
        query = query.where(rooms.c.active == active)
    return rows_of(connection, query)


def insert(connection: Connection, room: dict) -> None:
    connection.execute(rooms.insert().values(**room))


def update(connection: Connection, room_id: str, **values) -> None:
    connection.execute(rooms.update().where(rooms.c.id == room_id).values(**values))
