"""Scheduling's tables and queries.

The migrations (migrations/versions) are the schema of record; these Table objects describe the
same tables for queries. On PostgreSQL two exclusion constraints (migration 0002) refuse a room
or a patient held twice at once; on SQLite every transaction is BEGIN IMMEDIATE (clinic.db), so
the conditions written into a change (book_if_free) or checked just before it (a reschedule's
look) run alone and are the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.compiler import compiles

from clinic.db import UtcDateTime, is_postgresql, messaging_tables, save_by_key
from scheduling.domain import HOLDING_STATUSES, PlanCopy
from scheduling.office_hours import OpenInterval

MIGRATIONS = Path(__file__).parent / "migrations"

ROOM_CONSTRAINT = "appointments_room_not_double_booked"
PATIENT_CONSTRAINT = "appointments_patient_in_one_place"
ROOM_NAME_CONSTRAINT = "uq_rooms_name"
_EXCLUSION_VIOLATION = "23P01"
_DEADLOCK_DETECTED = "40P01"
_SERIALIZATION_FAILURE = "40001"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("name", name=ROOM_NAME_CONSTRAINT),
)

# The weekly template, in the clinic's local wall-clock time; weekday 0 is Monday.
office_hours = sa.Table(
    "office_hours",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("weekday", sa.Integer(), nullable=False),
    sa.Column("opens", sa.Time(), nullable=False),
    sa.Column("closes", sa.Time(), nullable=False),
)

# Whole local dates the clinic is closed.
closures = sa.Table(
    "closures",
    metadata,
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

# Each patient's active treatment plan, copied from records' events. A row stays after the plan is
# retired (plan_id NULL): the patient is still known, for follow-up visits.
plan_copies = sa.Table(
    "plan_copies",
    metadata,
    sa.Column("patient_id", sa.String(36), primary_key=True),
    sa.Column("plan_id", sa.String(36), nullable=True),
    sa.Column("infusion_minutes", sa.Integer(), nullable=True),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
)

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("room_id", sa.String(36), sa.ForeignKey("rooms.id"), nullable=False),
    sa.Column("plan_id", sa.String(36), nullable=True),
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("ends_at", UtcDateTime(), nullable=False),
    sa.Column("room_blocked_until", UtcDateTime(), nullable=False),
    sa.Column("patient_busy_until", UtcDateTime(), nullable=False),
    sa.Column("booked_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("checked_in_at", UtcDateTime(), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("session_outcome", sa.String(20), nullable=True),
    sa.Column("cancelled_at", UtcDateTime(), nullable=True),
    sa.Column("cancel_reason", sa.String(500), nullable=True),
    sa.Column("no_show_at", UtcDateTime(), nullable=True),
    # Who did it: the staff member (their token's subject) beside each change's time. Empty where the
    # clinic's own software made the change (the automatic follow-up visit, a session's end) and on
    # appointments older than these columns. updated_by is whoever made the latest change.
    sa.Column("booked_by", sa.String(200), nullable=True),
    sa.Column("checked_in_by", sa.String(200), nullable=True),
    sa.Column("cancelled_by", sa.String(200), nullable=True),
    sa.Column("no_show_by", sa.String(200), nullable=True),
    sa.Column("updated_by", sa.String(200), nullable=True),
    # On a follow-up visit booked after an infusion: that infusion. Unique, so one infusion never
    # gets two automatic follow-ups, whatever arrives twice.
    sa.Column("follow_up_of", sa.String(36), nullable=True, unique=True),
)
# A room's day and a patient's appointments, and a day across rooms. (On PostgreSQL the exclusion
# constraints of migration 0002 add a GiST index each.)
sa.Index("ix_appointments_room_starts_at", appointments.c.room_id, appointments.c.starts_at)
sa.Index("ix_appointments_patient_starts_at", appointments.c.patient_id, appointments.c.starts_at)
sa.Index("ix_appointments_starts_at", appointments.c.starts_at)

# The statuses are written into the SQL rather than bound: constants, and a statement that needs
# no expanding at each execution.
_holding = appointments.c.status.in_([sa.literal_column(f"'{status}'") for status in HOLDING_STATUSES])


# --- the calendar lock and version ----------------------------------------------------------

# Office hours, closures and which rooms are in use ("the calendar") change rarely, by an admin, and
# such a change is refused while it would strand a booked appointment. So that no booking slips in
# between that check and the change's commit:
#   - a change takes this advisory lock exclusively and bumps calendar_version (begin_calendar_change);
#   - a booking takes it shared (bookings never wait for each other) in its first statement, which also
#     reads the version. That statement's snapshot may predate the lock by a hair (PostgreSQL takes
#     the snapshot when the statement starts), so the booking's insert returns the version again, from
#     a snapshot after the lock, and a booking whose reads turn out older than a change is retried.
# The version also tells each process when its cached copy of the calendar is out of date.
_CALENDAR_LOCK_KEY = 0x7363686564  # "sched"

calendar_version = sa.Table(
    "calendar_version",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
)
_current_version = sa.select(calendar_version.c.version).where(calendar_version.c.id == 1).scalar_subquery()


def lock_calendar_for_booking(connection: Connection) -> None:
    """For work that reads the calendar in later statements (rescheduling, follow-ups): the shared lock alone."""
    if is_postgresql(connection):
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(_CALENDAR_LOCK_KEY)))


def begin_calendar_change(connection: Connection) -> None:
    """Before changing office hours, closures or a room's use: wait out bookings under way, keep new ones out
    until commit, and tell every process's calendar cache that it is out of date."""
    if is_postgresql(connection):
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_CALENDAR_LOCK_KEY)))
    connection.execute(calendar_version.update().where(calendar_version.c.id == 1).values(version=calendar_version.c.version + 1))


def violated_exclusion(exc: IntegrityError) -> str | None:
    """'room' or 'patient' when PostgreSQL refused a double booking, else None."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) != _EXCLUSION_VIOLATION:
        return None
    name = getattr(getattr(orig, "diag", None), "constraint_name", None)
    return {ROOM_CONSTRAINT: "room", PATIENT_CONSTRAINT: "patient"}.get(name)


def lost_a_race(exc: DBAPIError) -> bool:
    """True when PostgreSQL gave up on this transaction because a concurrent one got there first:
    a double booking refused, or a deadlock between two conflicting inserts (each waits for the other
    to commit before it can check its exclusion constraint; one is aborted). Retrying is the cure."""
    if isinstance(exc, IntegrityError):
        return violated_exclusion(exc) is not None
    return getattr(exc.orig, "sqlstate", None) in (_DEADLOCK_DETECTED, _SERIALIZATION_FAILURE)


# --- rooms ----------------------------------------------------------------------------------


def get_room(connection: Connection, room_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(rooms).where(rooms.c.id == room_id)
    if for_update:
        query = query.with_for_update()
    row = connection.execute(query).mappings().first()
    return dict(row) if row else None


def lock_room(connection: Connection, room_id: str) -> None:
    """Queue behind other bookings into this room (see booking_context); PostgreSQL only."""
    if is_postgresql(connection):
        connection.execute(sa.select(rooms.c.id).where(rooms.c.id == room_id).with_for_update(key_share=True))


def room_by_name(connection: Connection, name: str) -> dict | None:
    row = connection.execute(sa.select(rooms).where(rooms.c.name == name)).mappings().first()
    return dict(row) if row else None


def list_rooms(connection: Connection, kind: str | None = None, active: bool | None = None) -> list[dict]:
    query = sa.select(rooms).order_by(rooms.c.name)
    if kind is not None:
        query = query.where(rooms.c.kind == kind)
    if active is not None:
        query = query.where(rooms.c.active == active)
    return [dict(row) for row in connection.execute(query).mappings()]


# --- office hours and closures --------------------------------------------------------------


def get_template(connection: Connection) -> list[OpenInterval]:
    rows = connection.execute(sa.select(office_hours.c.weekday, office_hours.c.opens, office_hours.c.closes)).all()
    return sorted(OpenInterval(row.weekday, row.opens, row.closes) for row in rows)


def replace_template(connection: Connection, template: list[OpenInterval]) -> None:
    connection.execute(office_hours.delete())
    if template:
        connection.execute(office_hours.insert(), [{"weekday": i.weekday, "opens": i.opens, "closes": i.closes} for i in template])


def closures_between(connection: Connection, first: date, last: date) -> dict[date, str]:
    rows = connection.execute(sa.select(closures.c.day, closures.c.reason).where(closures.c.day.between(first, last))).all()
    return {row.day: row.reason for row in rows}


def list_closures(connection: Connection, first: date | None, last: date | None) -> list[dict]:
    query = sa.select(closures).order_by(closures.c.day)
    if first is not None:
        query = query.where(closures.c.day >= first)
    if last is not None:
        query = query.where(closures.c.day <= last)
    return [dict(row) for row in connection.execute(query).mappings()]


def get_closure(connection: Connection, day: date) -> dict | None:
    row = connection.execute(sa.select(closures).where(closures.c.day == day)).mappings().first()
    return dict(row) if row else None


# --- plan copies ----------------------------------------------------------------------------


def get_plan_copy(connection: Connection, patient_id: str, for_update: bool = False) -> PlanCopy | None:
    query = sa.select(plan_copies).where(plan_copies.c.patient_id == patient_id)
    if for_update:
        # Queues behind the patient's other bookings (see booking_context).
        query = query.with_for_update(key_share=True)
    row = connection.execute(query).mappings().first()
    return PlanCopy(**row) if row else None


def save_plan_copy(connection: Connection, copy: PlanCopy) -> None:
    save_by_key(connection, plan_copies, "patient_id", {"patient_id": copy.patient_id, "plan_id": copy.plan_id,
                                                       "infusion_minutes": copy.infusion_minutes, "changed_at": copy.changed_at})


# --- what a booking reads, in as few round trips as the rules allow ---------------------------

# One row whatever exists: the calendar version, the patient's plan copy and the room asked for (each
# NULL when absent).
#
# On PostgreSQL the same statement takes the calendar lock shared and locks the plan copy and the room
# rows (FOR NO KEY UPDATE, which leaves the appointments' foreign-key checks alone). Those row locks
# queue bookings for one patient or one room behind each other. Without them, simultaneous inserts that
# collide each add their row and then wait for the others' to commit before the exclusion constraint
# can decide, a deadlock PostgreSQL breaks only one victim per deadlock_timeout (1 s): fifty desks
# clicking the same slot would take a minute. With them, the constraint only ever meets committed rows.
_one_row = sa.select(sa.literal(1).label("one")).subquery("one_row")
_room_columns = [rooms.c.id.label("room_id"), rooms.c.name.label("room_name"), rooms.c.kind.label("room_kind"),
                 rooms.c.active.label("room_active")]
_booking_context = sa.select(
    _current_version.label("calendar_version"),
    plan_copies.c.patient_id, plan_copies.c.plan_id, plan_copies.c.infusion_minutes, plan_copies.c.changed_at, *_room_columns,
).select_from(
    _one_row.outerjoin(plan_copies, plan_copies.c.patient_id == sa.bindparam("patient_id"))
    .outerjoin(rooms, rooms.c.id == sa.bindparam("room_id"))
)
_locked_plan = sa.select(plan_copies).where(plan_copies.c.patient_id == sa.bindparam("patient_id")) \
    .with_for_update(key_share=True).lateral("locked_plan")
_locked_room = sa.select(*_room_columns).where(rooms.c.id == sa.bindparam("room_id")).with_for_update(key_share=True) \
    .lateral("locked_room")
_booking_context_locked = sa.select(
    _current_version.label("calendar_version"),
    _locked_plan.c.patient_id, _locked_plan.c.plan_id, _locked_plan.c.infusion_minutes, _locked_plan.c.changed_at,
    _locked_room.c.room_id, _locked_room.c.room_name, _locked_room.c.room_kind, _locked_room.c.room_active,
    sa.func.pg_advisory_xact_lock_shared(_CALENDAR_LOCK_KEY).label("locked"),
).select_from(_one_row.outerjoin(_locked_plan, sa.true()).outerjoin(_locked_room, sa.true()))


@dataclass(frozen=True)
class BookingContext:
    calendar_version: int
    plan: PlanCopy | None
    room: dict | None


def booking_context(connection: Connection, patient_id: str, room_id: str | None) -> BookingContext:
    """What a booking needs to know first, in one statement (with its locks on PostgreSQL)."""
    query = _booking_context_locked if is_postgresql(connection) else _booking_context
    row = connection.execute(query, {"patient_id": patient_id, "room_id": room_id}).one()
    plan = PlanCopy(row.patient_id, row.plan_id, row.infusion_minutes, row.changed_at) if row.patient_id else None
    room = {"id": row.room_id, "name": row.room_name, "kind": row.room_kind, "active": row.room_active} if row.room_id else None
    return BookingContext(row.calendar_version, plan, room)


@dataclass(frozen=True)
class Calendar:
    """The weekly template and every closure, as of one calendar version."""

    version: int
    template: list[OpenInterval]
    closures: dict[date, str]


# The whole calendar with its version, in one query: a handful of rows, read again only after a change.
_calendar = sa.union_all(
    sa.select(_current_version.label("version"), office_hours.c.weekday, office_hours.c.opens, office_hours.c.closes,
              sa.cast(sa.null(), sa.Date()).label("day"), sa.cast(sa.null(), sa.String()).label("reason")),
    sa.select(_current_version, sa.cast(sa.null(), sa.Integer()), sa.cast(sa.null(), sa.Time()), sa.cast(sa.null(), sa.Time()),
              closures.c.day, closures.c.reason),
    # A row even when there are neither hours nor closures, to carry the version.
    sa.select(_current_version, sa.cast(sa.null(), sa.Integer()), sa.cast(sa.null(), sa.Time()), sa.cast(sa.null(), sa.Time()),
              sa.cast(sa.null(), sa.Date()), sa.cast(sa.null(), sa.String())),
)


def read_calendar(connection: Connection) -> Calendar:
    version, template, closed = None, [], {}
    for row in connection.execute(_calendar):
        version = row.version
        if row.weekday is not None:
            template.append(OpenInterval(row.weekday, row.opens, row.closes))
        elif row.day is not None:
            closed[row.day] = row.reason
    return Calendar(version, sorted(template), closed)


def book_if_free(connection: Connection, appointment: dict, event: dict) -> tuple[bool, int | None]:
    """Insert a new appointment and its outbox event (clinic.outbox.outbox_row), unless the room or the
    patient is held then: (booked, calendar version).

    The condition sits in the INSERT itself, so no window is left between a look and the write: on
    SQLite (one writer at a time) it is the rule; on PostgreSQL the exclusion constraints are the
    rule and this turns a slot found taken into an answer rather than an aborted transaction. On PostgreSQL
    both rows go in one statement, and the version is the calendar's as of that statement (see the
    calendar lock above).
    """
    if is_postgresql(connection):
        row = connection.execute(_book_if_free_with_event, {**appointment, **event}).first()
        return (True, row[0]) if row else (False, None)
    if connection.execute(_insert_if_free, appointment).rowcount != 1:
        return False, None
    connection.execute(outbox.insert(), event)
    return True, None


# --- appointments ---------------------------------------------------------------------------

_follow_up = appointments.alias("follow_up")
_with_room_and_follow_up = (
    sa.select(appointments, rooms.c.name.label("room_name"), _follow_up.c.id.label("follow_up_id"))
    .join(rooms, rooms.c.id == appointments.c.room_id)
    .outerjoin(_follow_up, _follow_up.c.follow_up_of == appointments.c.id)
)


def get_appointment(connection: Connection, appointment_id: str, for_update: bool = False) -> dict | None:
    query = sa.select(appointments).where(appointments.c.id == appointment_id)
    if for_update:
        query = query.with_for_update()
    row = connection.execute(query).mappings().first()
    return dict(row) if row else None


def appointment_view(connection: Connection, appointment_id: str) -> dict | None:
    """An appointment with its room's name and, for an infusion, the follow-up booked after it."""
    row = connection.execute(_with_room_and_follow_up.where(appointments.c.id == appointment_id)).mappings().first()
    return dict(row) if row else None


def find_appointments(connection: Connection, *, starts_from: datetime | None = None, starts_before: datetime | None = None,
                      room_id: str | None = None, patient_id: str | None = None, status: str | None = None,
                      needs_follow_up: bool | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
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
    return [dict(row) for row in connection.execute(query.limit(limit).offset(offset)).mappings()]


class overlaps(sa.sql.functions.GenericFunction):
    """overlaps(starts, until, start, end): the hold [starts, until) overlaps [start, end).

    On PostgreSQL written as the range overlap that the exclusion constraints' GiST indexes answer.
    Prepared statements there soon run on a generic plan, made without the parameters' values, and
    for plain comparisons of times that plan may scan every appointment starting before the end;
    with the ranges it looks only at the room's or the patient's holds around that time.
    """

    type = sa.Boolean()
    inherit_cache = True


@compiles(overlaps)
def _overlaps_compared(element, compiler, **kw):
    # As the ranges below: an empty hold (starts == until, a session ended as it began) overlaps nothing.
    starts, until, start, end = element.clauses
    return f"({compiler.process(sa.and_(starts < until, start < end, starts < end, until > start), **kw)})"


@compiles(overlaps, "postgresql")
def _overlaps_as_ranges(element, compiler, **kw):
    starts, until, start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(tstzrange({starts}, {until}, '[)') && tstzrange({start}, {end}, '[)'))"


def _holding_patient(patient_id, starts_at, until) -> tuple:
    """The conditions of an appointment holding the patient during [starts_at, until)."""
    return (appointments.c.patient_id == patient_id, _holding,
            overlaps(appointments.c.starts_at, appointments.c.patient_busy_until, starts_at, until))


def _holding_room(room_is, starts_at, until) -> tuple:
    """The conditions of an appointment holding a room (`room_is`) during [starts_at, until)."""
    return (room_is, _holding, overlaps(appointments.c.starts_at, appointments.c.room_blocked_until, starts_at, until))


_starts_at, _patient_until, _room_until = (sa.bindparam(name, type_=UtcDateTime()) for name in ("starts_at", "patient_until", "room_until"))
_patient_in_the_way = (
    sa.select(sa.literal("patient").label("held"), appointments.c.patient_id.label("holder"), appointments.c.id, appointments.c.starts_at)
    .where(*_holding_patient(sa.bindparam("patient_id"), _starts_at, _patient_until),
           appointments.c.id != sa.bindparam("ignore_id"))
)
_rooms_in_the_way = (
    sa.select(sa.literal("room"), appointments.c.room_id, appointments.c.id, appointments.c.starts_at)
    .where(*_holding_room(appointments.c.room_id.in_(sa.bindparam("room_ids", expanding=True)), _starts_at, _room_until),
           appointments.c.id != sa.bindparam("ignore_id"))
)
_in_the_way = sa.union_all(_patient_in_the_way, _rooms_in_the_way)


_NEW_APPOINTMENT = ("id", "patient_id", "kind", "status", "room_id", "plan_id", "starts_at", "ends_at", "room_blocked_until",
                    "patient_busy_until", "booked_at", "updated_at", "booked_by", "updated_by")
_new = {name: sa.bindparam(name, type_=appointments.c[name].type) for name in _NEW_APPOINTMENT}
_insert_if_free = appointments.insert().from_select(
    _NEW_APPOINTMENT,
    sa.select(*_new.values()).where(
        ~sa.exists().where(*_holding_patient(_new["patient_id"], _new["starts_at"], _new["patient_busy_until"])),
        ~sa.exists().where(*_holding_room(appointments.c.room_id == _new["room_id"], _new["starts_at"], _new["room_blocked_until"])),
    ),
)
_booked = _insert_if_free.returning(appointments.c.id).cte("booked")
_event = {name: sa.bindparam(name, type_=outbox.c[name].type) for name in ("event_id", "event_type", "body", "created_at", "attempts")}
_book_if_free_with_event = (
    outbox.insert().from_select(list(_event), sa.select(*_event.values()).select_from(_booked)).returning(_current_version)
)


def in_the_way(connection: Connection, room_ids: list[str], patient_id: str, starts_at: datetime, room_until: datetime,
               patient_until: datetime, ignore_id: str | None = None) -> tuple[str | None, dict[str, str]]:
    """(an appointment holding the patient in [starts_at, patient_until), {room_id: an appointment holding that
    room in [starts_at, room_until)}), in one query; the earliest of each."""
    rows = connection.execute(_in_the_way, {
        "patient_id": patient_id, "room_ids": room_ids, "starts_at": starts_at, "room_until": room_until,
        "patient_until": patient_until, "ignore_id": ignore_id or ""}).all()
    patient, taken = None, {}
    for row in sorted(rows, key=lambda row: row.starts_at):
        if row.held == "patient":
            patient = patient or row.id
        else:
            taken.setdefault(row.holder, row.id)
    return patient, taken


def room_holds(connection: Connection, room_ids: list[str], starts_at: datetime, until: datetime) -> dict[str, list[tuple]]:
    """{room_id: [(start, room_blocked_until), ...]} of the holds overlapping [starts_at, until).

    Plain comparisons rather than `overlaps`: for a list of rooms (IN), which GiST cannot use, the
    btree on (room_id, starts_at) bounds the scan by the start.
    """
    rows = connection.execute(
        sa.select(appointments.c.room_id, appointments.c.starts_at, appointments.c.room_blocked_until)
        .where(appointments.c.room_id.in_(room_ids), _holding,
               appointments.c.starts_at < until, appointments.c.room_blocked_until > starts_at)
    ).all()
    holds: dict[str, list[tuple]] = {room_id: [] for room_id in room_ids}
    for row in rows:
        holds[row.room_id].append((row.starts_at, row.room_blocked_until))
    return holds


def patient_holds(connection: Connection, patient_id: str, starts_at: datetime, until: datetime) -> list[tuple]:
    rows = connection.execute(
        sa.select(appointments.c.starts_at, appointments.c.patient_busy_until)
        .where(appointments.c.patient_id == patient_id, _holding,
               appointments.c.starts_at < until, appointments.c.patient_busy_until > starts_at)
    ).all()
    return [(row.starts_at, row.patient_busy_until) for row in rows]


def future_appointments(connection: Connection, now: datetime, room_id: str | None = None, on_days: tuple[datetime, datetime] | None = None,
                        limit: int = 50) -> list[dict]:
    """Booked appointments still to come (optionally in one room, or starting within a window)."""
    query = (
        sa.select(appointments.c.id, appointments.c.room_id, appointments.c.kind, appointments.c.starts_at, appointments.c.ends_at)
        .where(appointments.c.status == "booked", appointments.c.ends_at > now)
        .order_by(appointments.c.starts_at)
    )
    if room_id is not None:
        query = query.where(appointments.c.room_id == room_id)
    if on_days is not None:
        query = query.where(appointments.c.starts_at < on_days[1], appointments.c.ends_at > on_days[0])
    if limit:
        query = query.limit(limit)
    return [dict(row) for row in connection.execute(query).mappings()]
