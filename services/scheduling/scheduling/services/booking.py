"""Booking and rescheduling: an appointment put into a room at a time, under every rule at once.

No double booking is the database's job, not a check that two requests can both pass:
  - A new appointment is inserted only if nothing holds its room or its patient then: the
    condition is part of the INSERT (scheduling.db.booking_sql.book_if_free).
  - PostgreSQL: two exclusion constraints refuse a second hold on a room or on a patient, whatever
    writes it. Work that could collide queues behind row locks first (scheduling.db.locks, which
    also gives the order every transaction takes its locks in). A change the constraints refuse
    anyway (another got in first) is made again from the start, and the new attempt names the winner.
  - SQLite: every transaction is BEGIN IMMEDIATE (clinic.db), so each runs alone.
A look at what holds the room and the patient (choose_room) picks a free room and names the
colliding appointment in a 409.

A refusal ends its transaction before anything is written, and clinic.db.transaction then commits
rather than rolls back, which keeps the connection's prepared statements (refused bookings are
routine at a busy desk): give the unit of work refusals=REFUSALS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from clinic.db import is_conflict_victim, new_id, violated_constraint
from clinic.errors import ClinicError, Conflict, RuleViolation
from clinic.events import APPOINTMENT_BOOKED, APPOINTMENT_RESCHEDULED
from clinic.unit_of_work import UnitOfWork
from scheduling import domain, payloads
from scheduling.db import appointments, booking_sql, locks, plan_copies, rooms
from scheduling.db.calendar import calendar_as_of, read_calendar
from scheduling.db.tables import PATIENT_CONSTRAINT, ROOM_CONSTRAINT
from scheduling.db.tables import appointments as appointments_table
from scheduling.domain import SchedulingRules
from scheduling.local_time import check_open


class TryAgain(Exception):
    """What this attempt read changed before it could write; the attempt is made again."""


class CalendarChanged(TryAgain):
    """A booking read the calendar just before an admin's change to it committed."""


REFUSALS = (ClinicError, TryAgain)
# A booking made again this often after losing races is told to try again rather than looping.
MAX_ATTEMPTS = 4
# Columns a new booking leaves empty, so it is shown like any appointment read back.
_UNSET = {column.name: None for column in appointments_table.c}


@dataclass(frozen=True)
class BookingRequest:
    patient_id: str
    kind: str
    starts_at: datetime
    room_id: str | None = None
    booked_by: str | None = None   # the staff member


def book(uow: UnitOfWork, rules: SchedulingRules, request: BookingRequest) -> dict:
    """Book an appointment; returns it as shown (with its room's name). Raises RuleViolation, Conflict."""
    uow.audit.concerning(patient_id=request.patient_id)
    return _retrying_lost_races(uow, lambda: _book(uow, rules, request))


def reschedule(uow: UnitOfWork, rules: SchedulingRules, appointment_id: str, starts_at: datetime | None, room_id: str | None,
               actor: str) -> dict:
    """Move a booked appointment to a new start and/or room, under the same rules as a booking.

    Without a room it stays in its room when that is free at the new time, else takes the first
    free room of its kind.
    """
    return _retrying_lost_races(uow, lambda: _reschedule(uow, rules, appointment_id, starts_at, room_id, actor))


def _retrying_lost_races(uow: UnitOfWork, work: Callable[[], dict]) -> dict:
    for _ in range(MAX_ATTEMPTS):
        try:
            with uow:
                return work()
        except TryAgain:
            continue  # e.g. read just before an admin's change to the calendar committed: read again
        except DBAPIError as exc:
            if not lost_a_race(exc):
                raise
            # Another booking got there first; the next attempt's look sees it and names it.
    raise Conflict("this time was taken by other bookings while this one was being made; try again", {})


def lost_a_race(exc: DBAPIError) -> bool:
    """True when PostgreSQL refused this transaction because a concurrent one got there first: a double
    booking refused by an exclusion constraint, or a deadlock between two conflicting inserts (each
    waits for the other to commit before it can check its constraint; one is aborted)."""
    return violated_constraint(exc) in (ROOM_CONSTRAINT, PATIENT_CONSTRAINT) or is_conflict_victim(exc)


def _book(uow: UnitOfWork, rules: SchedulingRules, request: BookingRequest) -> dict:
    connection, now = uow.connection, uow.now
    domain.check_start(request.starts_at, now)
    context = booking_sql.booking_context(connection, request.patient_id, request.room_id)   # locks 1, 3 and 4
    plan = context.plan
    domain.require_known_patient(request.kind, plan, request.patient_id)
    span = domain.span_for(request.kind, request.starts_at, plan, rules)
    calendar = calendar_as_of(connection, context.calendar_version)
    if calendar.version != context.calendar_version:
        raise CalendarChanged()
    check_open(span.starts_at, span.ends_at, calendar.template, calendar.closures, rules.timezone)
    if request.room_id is not None:
        domain.check_room(context.room, request.kind, request.room_id)
        room = context.room
    else:
        room = choose_room(connection, request.kind, candidate_rooms(connection, request.kind, None), request.patient_id, span)
        locks.room(connection, room["id"])
    appointment = {
        "id": new_id(),
        "patient_id": request.patient_id,
        "kind": request.kind,
        "status": domain.BOOKED,
        "room_id": room["id"],
        "plan_id": plan.plan_id if request.kind == domain.INFUSION else None,
        "starts_at": span.starts_at,
        "ends_at": span.ends_at,
        "room_blocked_until": span.room_blocked_until,
        "patient_busy_until": span.patient_busy_until,
        "booked_at": now,
        "updated_at": now,
        "booked_by": request.booked_by,
        "updated_by": request.booked_by,
        "version": 1,
    }
    # The request's audit row goes in with the booking, so that a booking stays two statements. It
    # names the appointment; the request's own entry does so once the appointment exists.
    rows = uow.audit_rows()   # one patient: one row, or none in the worker
    audit = {**rows[0], "resource_id": appointment["id"]} if rows else None
    event = uow.event_row(APPOINTMENT_BOOKED, payloads.booked_payload(appointment, room))
    booked, version = booking_sql.book_if_free(connection, appointment, event, audit)
    if not booked:
        if request.room_id is not None:
            choose_room(connection, request.kind, [room], request.patient_id, span)  # raises the 409 naming what is in the way
        raise TryAgain()  # what was in the way has just gone, or another free room may be had: look again
    if version not in (None, context.calendar_version):
        raise CalendarChanged()
    uow.audit.concerning(resource_id=appointment["id"])
    return {**_UNSET, **appointment, "room_name": room["name"], "follow_up_id": None}


def _reschedule(uow: UnitOfWork, rules: SchedulingRules, appointment_id: str, starts_at: datetime | None, room_id: str | None,
                actor: str) -> dict:
    connection, now = uow.connection, uow.now
    locks.share_calendar(connection)                                                         # lock 1
    current = domain.found(locks.appointment(connection, appointment_id), appointment_id)   # lock 2
    uow.audit.concerning(patient_id=current["patient_id"])
    domain.ensure_allowed("reschedule", current)
    new_start = starts_at or current["starts_at"]
    domain.check_start(new_start, now)
    plan = plan_copies.from_row(locks.plan_copy_row(connection, current["patient_id"]))     # lock 3
    domain.require_known_patient(current["kind"], plan, current["patient_id"])
    span = domain.span_for(current["kind"], new_start, plan, rules)
    calendar = read_calendar(connection)
    check_open(span.starts_at, span.ends_at, calendar.template, calendar.closures, rules.timezone)
    candidates = candidate_rooms(connection, current["kind"], room_id, prefer=current["room_id"])
    room = choose_room(connection, current["kind"], candidates, current["patient_id"], span, ignore_id=current["id"])
    locks.room(connection, room["id"])                                                       # lock 4
    changes = {
        "room_id": room["id"],
        "plan_id": plan.plan_id if current["kind"] == domain.INFUSION else None,
        "starts_at": span.starts_at,
        "ends_at": span.ends_at,
        "room_blocked_until": span.room_blocked_until,
        "patient_busy_until": span.patient_busy_until,
    }
    if all(current[key] == value for key, value in changes.items()):
        return appointments.shown(connection, appointment_id)
    moved = appointments.change(connection, current, now, **changes, updated_by=actor)
    uow.add_event(APPOINTMENT_RESCHEDULED, payloads.rescheduled_payload(moved, room, current))
    return appointments.shown(connection, appointment_id)


def candidate_rooms(connection: Connection, kind: str, room_id: str | None, prefer: str | None = None) -> list[dict]:
    """The room asked for (checked), or every room in use of the kind needed, `prefer` first, then by name."""
    if room_id is not None:
        room = rooms.get(connection, room_id)
        domain.check_room(room, kind, room_id)
        return [room]
    found = rooms.listed(connection, kind=domain.ROOM_KIND_FOR[kind], active=True)
    if not found:
        raise RuleViolation(f"the clinic has no {domain.ROOM_KIND_FOR[kind]} room in use", {"room_id": ["no room of this kind"]})
    return sorted(found, key=lambda room: room["id"] != prefer)


def choose_room(connection: Connection, kind: str, candidates: list[dict], patient_id: str, span: domain.Span,
                ignore_id: str | None = None) -> dict:
    """The first of the candidate rooms free for the span; 409 naming the appointment in the way otherwise.

    This look is what names the appointment in the way. For a reschedule it is also the rule on
    SQLite (the transaction runs alone); on PostgreSQL the exclusion constraints are the rule, and a
    change they refuse because another committed after this look is made again (_retrying_lost_races).
    A new booking's own rule is the condition in its INSERT (booking_sql.book_if_free).
    """
    busy_with, taken = booking_sql.in_the_way(connection, [room["id"] for room in candidates], patient_id, span.starts_at,
                                              span.room_blocked_until, span.patient_busy_until, ignore_id)
    if busy_with:
        raise Conflict("the patient already has an appointment at this time", {"appointment_id": busy_with, "patient_id": patient_id})
    for room in candidates:
        if room["id"] not in taken:
            return room
    if len(candidates) == 1:
        room = candidates[0]
        raise Conflict(f"room {room['name']} is taken at this time (with the turnover gap after an infusion)",
                       {"appointment_id": taken[room["id"]], "room_id": room["id"]})
    raise Conflict(f"no {domain.ROOM_KIND_FOR[kind]} room is free at this time",
                   {"appointment_id": taken[candidates[0]["id"]], "appointment_ids": sorted(set(taken.values()))})
