"""The calendar: the weekly office hours and the closures, its version, and each process's copy of it.

Every change to the calendar (or to a room) bumps the version under the calendar lock
(scheduling.db.locks.calendar_change). A booking reads the version in its first statement and the
calendar from this process's cache, read again only when the version has moved: a handful of rows
that change a few times a year are not read on every booking.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import rows_of
from scheduling.db.tables import calendar_version, closures, office_hours
from scheduling.local_time import OpenInterval

current_version = sa.select(calendar_version.c.version).where(calendar_version.c.id == 1).scalar_subquery()


@dataclass(frozen=True)
class Calendar:
    """The weekly template and every closure, as of one calendar version."""

    version: int
    template: list[OpenInterval]
    closures: dict[date, str]


# The whole calendar with its version, in one query: a handful of rows.
_calendar = sa.union_all(
    sa.select(current_version.label("version"), office_hours.c.weekday, office_hours.c.opens, office_hours.c.closes,
              sa.cast(sa.null(), sa.Date()).label("day"), sa.cast(sa.null(), sa.String()).label("reason")),
    sa.select(current_version, sa.cast(sa.null(), sa.Integer()), sa.cast(sa.null(), sa.Time()), sa.cast(sa.null(), sa.Time()),
              closures.c.day, closures.c.reason),
    # A row even when there are neither hours nor closures, to carry the version.
    sa.select(current_version, sa.cast(sa.null(), sa.Integer()), sa.cast(sa.null(), sa.Time()), sa.cast(sa.null(), sa.Time()),
              sa.cast(sa.null(), sa.Date()), sa.cast(sa.null(), sa.String())),
)


def read_calendar(connection: Connection) -> Calendar:
    """The calendar as this statement sees it."""
    version, template, closed = None, [], {}
    for row in connection.execute(_calendar):
        version = row.version
        if row.weekday is not None:
            template.append(OpenInterval(row.weekday, row.opens, row.closes))
        elif row.day is not None:
            closed[row.day] = row.reason
    return Calendar(version, sorted(template), closed)


# Each process keeps the calendar it last read, per database, and reads it again when its version moves.
_calendars: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_calendars_lock = threading.Lock()


def calendar_as_of(connection: Connection, version: int) -> Calendar:
    """The calendar at `version` from this process's cache when it has it, else read now (and cached).
    What was read may be of another version than asked for: the caller compares."""
    cached = _calendars.get(connection.engine)
    if cached is not None and cached.version == version:
        return cached
    fresh = read_calendar(connection)
    with _calendars_lock:
        current = _calendars.get(connection.engine)
        if current is None or current.version < fresh.version:
            _calendars[connection.engine] = fresh
    return fresh


def remember(connection: Connection, calendar: Calendar) -> None:
    """Put a calendar in this process's cache (tests use it to make the cache stale on purpose)."""
    with _calendars_lock:
        _calendars[connection.engine] = calendar


# --- office hours ---------------------------------------------------------------------------


def weekly_template(connection: Connection) -> list[OpenInterval]:
    rows = connection.execute(sa.select(office_hours.c.weekday, office_hours.c.opens, office_hours.c.closes)).all()
    return sorted(OpenInterval(row.weekday, row.opens, row.closes) for row in rows)


def replace_weekly_template(connection: Connection, template: list[OpenInterval]) -> None:
    connection.execute(office_hours.delete())
    if template:
        connection.execute(office_hours.insert(), [{"weekday": i.weekday, "opens": i.opens, "closes": i.closes} for i in template])


# --- closures -------------------------------------------------------------------------------


def closures_between(connection: Connection, first: date, last: date) -> dict[date, str]:
    rows = connection.execute(sa.select(closures.c.day, closures.c.reason).where(closures.c.day.between(first, last))).all()
    return {row.day: row.reason for row in rows}


def list_closures(connection: Connection, first: date | None, last: date | None) -> list[dict]:
    query = sa.select(closures).order_by(closures.c.day)
    if first is not None:
        query = query.where(closures.c.day >= first)
    if last is not None:
        query = query.where(closures.c.day <= last)
    return rows_of(connection, query)


def is_closed(connection: Connection, day: date) -> bool:
    return connection.execute(sa.select(closures.c.day).where(closures.c.day == day)).first() is not None


def add_closure(connection: Connection, closure: dict) -> None:
    connection.execute(closures.insert().values(**closure))


def remove_closure(connection: Connection, day: date) -> bool:
    """True when the day was closed."""
    return connection.execute(closures.delete().where(closures.c.day == day)).rowcount == 1
