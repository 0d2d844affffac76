"""The booking hot path's statements, written for as few round trips as the rules allow.

A booking is two statements: what it needs to know first (booking_context: the calendar version, the
patient's plan copy, the room, with the locks of scheduling.db.locks), and the change itself
(book_if_free: the appointment and its outbox event, written only if nothing holds the room or the
patient then). A reschedule looks at what is in its way with in_the_way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles

from clinic.db import UtcDateTime, is_postgresql
from scheduling.db.calendar import current_version
from scheduling.db.locks import CALENDAR_LOCK_KEY
from scheduling.db.tables import appointments, audit_log, holding, outbox, plan_copies, rooms
from scheduling.domain import PlanCopy


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
    return (appointments.c.patient_id == patient_id, holding,
            overlaps(appointments.c.starts_at, appointments.c.patient_busy_until, starts_at, until))


def _holding_room(room_is, starts_at, until) -> tuple:
    """The conditions of an appointment holding a room (`room_is`) during [starts_at, until)."""
    return (room_is, holding, overlaps(appointments.c.starts_at, appointments.c.room_blocked_until, starts_at, until))


# --- what a booking needs to know first ---------------------------------------------------------

# One row whatever exists: the calendar version, the patient's plan copy and the room asked for (each
# NULL when absent). On PostgreSQL the same statement takes locks 1, 3 and 4 of scheduling.db.locks, in
# that order: the lateral subqueries that lock the rows refer to the calendar lock's column, so
# PostgreSQL evaluates the lock first (the outer side of the nested loop) and the row locks after it.
_one_row = sa.select(sa.literal(1).label("one")).subquery("one_row")
_room_columns = [rooms.c.id.label("room_id"), rooms.c.name.label("room_name"), rooms.c.kind.label("room_kind"),
                 rooms.c.active.label("room_active")]
_plan_columns = [plan_copies.c.patient_id, plan_copies.c.plan_id, plan_copies.c.infusion_minutes, plan_copies.c.version]
_booking_context = sa.select(current_version.label("calendar_version"), *_plan_columns, *_room_columns).select_from(
    _one_row.outerjoin(plan_copies, plan_copies.c.patient_id == sa.bindparam("patient_id"))
    .outerjoin(rooms, rooms.c.id == sa.bindparam("room_id"))
)
_calendar_lock = sa.select(sa.func.pg_advisory_xact_lock_shared(CALENDAR_LOCK_KEY).label("locked")).subquery("calendar_lock")
_after_the_lock = _calendar_lock.c.locked.is_not(None)   # always true: there for the order it forces
_locked_plan = sa.select(*_plan_columns).where(plan_copies.c.patient_id == sa.bindparam("patient_id"), _after_the_lock) \
    .with_for_update(key_share=True).lateral("locked_plan")
_locked_room = sa.select(*_room_columns).where(rooms.c.id == sa.bindparam("room_id"), _after_the_lock) \
    .with_for_update(key_share=True).lateral("locked_room")
_booking_context_locked = sa.select(
    current_version.label("calendar_version"),
    _locked_plan.c.patient_id, _locked_plan.c.plan_id, _locked_plan.c.infusion_minutes, _locked_plan.c.version,
    _locked_room.c.room_id, _locked_room.c.room_name, _locked_room.c.room_kind, _locked_room.c.room_active,
).select_from(_calendar_lock.outerjoin(_locked_plan, sa.true()).outerjoin(_locked_room, sa.true()))


@dataclass(frozen=True)
class BookingContext:
    calendar_version: int
    plan: PlanCopy | None
    room: dict | None


def booking_context(connection: Connection, patient_id: str, room_id: str | None) -> BookingContext:
    """What a booking needs to know first, in one statement (with its locks on PostgreSQL).

    The statement's snapshot may predate the calendar lock by a hair (PostgreSQL takes it when the
    statement starts, and the lock may have been waited for), so the version read here can be older
    than the calendar the lock protects: book_if_free returns the version again, from a later
    snapshot, and a booking whose reads turn out older than a change is made again.
    """
    query = _booking_context_locked if is_postgresql(connection) else _booking_context
    row = connection.execute(query, {"patient_id": patient_id, "room_id": room_id}).one()
    plan = PlanCopy(row.patient_id, row.plan_id, row.infusion_minutes, row.version) if row.patient_id else None
    room = {"id": row.room_id, "name": row.room_name, "kind": row.room_kind, "active": row.room_active} if row.room_id else None
    return BookingContext(row.calendar_version, plan, room)


# --- the change ---------------------------------------------------------------------------------

_NEW_APPOINTMENT = ("id", "patient_id", "kind", "status", "room_id", "plan_id", "starts_at", "ends_at", "room_blocked_until",
                    "patient_busy_until", "booked_at", "updated_at", "booked_by", "updated_by", "version")
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
    outbox.insert().from_select(list(_event), sa.select(*_event.values()).select_from(_booked)).returning(current_version)
)
# The audit row of the request that books (clinic.unit_of_work.UnitOfWork.audit_rows), in the same statement.
_AUDITED = [column.name for column in audit_log.c if column.name != "id"]
_audit = {name: sa.bindparam(f"audit_{name}", type_=audit_log.c[name].type) for name in _AUDITED}
_audited = audit_log.insert().from_select(_AUDITED, sa.select(*_audit.values()).select_from(_booked)).cte("audited")
_book_if_free_with_event_and_audit = _book_if_free_with_event.add_cte(_audited)


def book_if_free(connection: Connection, appointment: dict, event: dict, audit: dict | None = None) -> tuple[bool, int | None]:
    """Insert a new appointment, its outbox event (UnitOfWork.event_row) and the audit row of the
    request (UnitOfWork.audit_rows; None when nothing is audited), unless the room or the patient is
    held then: (booked, calendar version).

    The condition sits in the INSERT itself, so no window is left between a look and the write: on
    SQLite (one writer at a time) it is the rule; on PostgreSQL the exclusion constraints are the
    rule and this turns a slot found taken into an answer rather than an aborted transaction. On
    PostgreSQL all rows go in one statement, and the version is the calendar's as of that statement.
    """
    if is_postgresql(connection):
        if audit is None:
            row = connection.execute(_book_if_free_with_event, {**appointment, **event}).first()
        else:
            audited = {f"audit_{name}": audit[name] for name in _AUDITED}
            row = connection.execute(_book_if_free_with_event_and_audit, {**appointment, **event, **audited}).first()
        return (True, row[0]) if row else (False, None)
    if connection.execute(_insert_if_free, appointment).rowcount != 1:
        return False, None
    connection.execute(outbox.insert(), event)
    if audit is not None:
        connection.execute(audit_log.insert(), audit)
    return True, None


# --- what is in the way ---------------------------------------------------------------------------

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
