"""Scheduling's use cases for appointments. Each runs in one database transaction, which also
writes its event to the outbox, so the event exists exactly when the change does.

No double booking is the database's job, not a check that two requests can both pass:
  - A new appointment is inserted only if nothing holds its room or its patient then: the
    condition is part of the INSERT (scheduling.db.book_if_free).
  - PostgreSQL: two exclusion constraints refuse a second hold on a room or on a patient, whatever
    writes it. Bookings also lock the patient's plan copy and the room's row first
    (scheduling.db.booking_context), so bookings that could collide queue behind each other instead
    of deadlocking inside the constraint check. A change the constraints refuse anyway (a
    reschedule or follow-up got in first) is retried from the start, and the retry names the winner.
  - SQLite: every transaction is BEGIN IMMEDIATE (clinic.db), so each runs alone.
A look at what holds the room and the patient (choose_room) picks a free room and names the
colliding appointment in a 409.

A refusal ends its transaction before anything is written (clinic.db.transaction keeps the
connection's prepared statements then; refused bookings are routine at a busy desk).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from clinic.db import new_id, transaction
from clinic.errors import ClinicError, Conflict, NotFound, RuleViolation
from clinic.outbox import add_event, outbox_row
from scheduling import SERVICE, db, domain, office_hours
from scheduling.domain import SchedulingRules

log = logging.getLogger(__name__)

# Columns a new booking leaves empty, so it is shown like any appointment read back.
_UNSET = {column.name: None for column in db.appointments.c}
# A booking retried this often after losing races is told to try again rather than looping.
MAX_ATTEMPTS = 4


@dataclass(frozen=True)
class BookingRequest:
    patient_id: str
    kind: str
    starts_at: datetime
    room_id: str | None = None
    booked_by: str | None = None   # the staff member


def book(engine: Engine, rules: SchedulingRules, now: datetime, request: BookingRequest) -> dict:
    """Book an appointment; returns it with its room's name. Raises RuleViolation, Conflict."""
    return _retrying_lost_races(engine, lambda connection: _book(connection, rules, now, request))


def reschedule(engine: Engine, rules: SchedulingRules, now: datetime, appointment_id: str,
               starts_at: datetime | None, room_id: str | None, actor: str) -> dict:
    """Move a booked appointment to a new start and/or room, under the same rules as a booking.

    Without a room it stays in its room when that is free at the new time, else takes the first
    free room of its kind.
    """
    return _retrying_lost_races(engine, lambda connection: _reschedule(connection, rules, now, appointment_id, starts_at, room_id,
                                                                       actor))


def _retrying_lost_races(engine: Engine, work: Callable[[Connection], dict]) -> dict:
    for _ in range(MAX_ATTEMPTS):
        try:
            with transaction(engine, refusals=(ClinicError, TryAgain)) as connection:
                return work(connection)
        except TryAgain:
            continue  # e.g. read just before an admin's change to the calendar committed: read again
        except sa.exc.DBAPIError as exc:
            if not db.lost_a_race(exc):
                raise
            # Another booking got there first; the next attempt's check sees it and names it.
    raise Conflict("this time was taken by other bookings while this one was being made; try again", {})


def _book(connection: Connection, rules: SchedulingRules, now: datetime, request: BookingRequest) -> dict:
    domain.check_start(request.starts_at, now)
    context = db.booking_context(connection, request.patient_id, request.room_id)
    plan = context.plan
    domain.require_known_patient(request.kind, plan, request.patient_id)
    span = domain.span_for(request.kind, request.starts_at, plan, rules)
    calendar = calendar_as_of(connection, context.calendar_version)
    office_hours.check_open(span.starts_at, span.ends_at, calendar.template, calendar.closures, rules.timezone)
    if request.room_id is not None:
        domain.check_room(context.room, request.kind, request.room_id)   # locked with the context
        room = context.room
    else:
        room = choose_room(connection, request.kind, candidate_rooms(connection, request.kind, None), request.patient_id, span)
        db.lock_room(connection, room["id"])
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
    }
    event = outbox_row(SERVICE, "scheduling.appointment.booked", domain.booked_payload(appointment, room))
    booked, version = db.book_if_free(connection, appointment, event)
    if not booked:
        if request.room_id is not None:
            choose_room(connection, request.kind, [room], request.patient_id, span)  # raises the 409 naming what is in the way
        raise TryAgain()  # what was in the way has just gone, or another free room may be had: look again
    if version not in (None, context.calendar_version):
        raise CalendarChanged()
    return {**_UNSET, **appointment, "room_name": room["name"], "follow_up_id": None}


def _reschedule(connection: Connection, rules: SchedulingRules, now: datetime, appointment_id: str,
                starts_at: datetime | None, room_id: str | None, actor: str) -> dict:
    db.lock_calendar_for_booking(connection)
    current = existing_appointment(connection, appointment_id, for_update=True)
    domain.ensure_allowed("reschedule", current)
    new_start = starts_at or current["starts_at"]
    domain.check_start(new_start, now)
    plan = db.get_plan_copy(connection, current["patient_id"], for_update=True)
    domain.require_known_patient(current["kind"], plan, current["patient_id"])
    span = domain.span_for(current["kind"], new_start, plan, rules)
    check_open(connection, rules, span.starts_at, span.ends_at)
    rooms = candidate_rooms(connection, current["kind"], room_id, prefer=current["room_id"])
    room = choose_room(connection, current["kind"], rooms, current["patient_id"], span, ignore_id=current["id"])
    db.lock_room(connection, room["id"])
    changes = {
        "room_id": room["id"],
        "plan_id": plan.plan_id if current["kind"] == domain.INFUSION else None,
        "starts_at": span.starts_at,
        "ends_at": span.ends_at,
        "room_blocked_until": span.room_blocked_until,
        "patient_busy_until": span.patient_busy_until,
    }
    if all(current[key] == value for key, value in changes.items()):
        return db.appointment_view(connection, appointment_id)
    _update(connection, appointment_id, **changes, updated_at=now, updated_by=actor)
    moved = {**current, **changes}
    add_event(connection, db.outbox, SERVICE, "scheduling.appointment.rescheduled", domain.rescheduled_payload(moved, room, current))
    return db.appointment_view(connection, appointment_id)


def cancel(engine: Engine, now: datetime, appointment_id: str, reason: str, actor: str) -> dict:
    """Cancel a booked or checked-in appointment; its room and the patient are free again at once."""
    with engine.begin() as connection:
        appointment = existing_appointment(connection, appointment_id, for_update=True)
        domain.ensure_allowed("cancel", appointment)
        _update(connection, appointment_id, status=domain.CANCELLED, cancelled_at=now, cancelled_by=actor, cancel_reason=reason,
                updated_at=now, updated_by=actor)
        add_event(connection, db.outbox, SERVICE, "scheduling.appointment.cancelled", domain.cancelled_payload(appointment))
        return db.appointment_view(connection, appointment_id)


def check_in(engine: Engine, rules: SchedulingRules, now: datetime, appointment_id: str, actor: str) -> dict:
    """The patient has arrived. For an infusion the event carries the active plan, which sessions needs."""
    with engine.begin() as connection:
        appointment = existing_appointment(connection, appointment_id, for_update=True)
        domain.ensure_allowed("check_in", appointment)
        domain.check_check_in_time(appointment, now, rules.timezone)
        plan_id = None
        if appointment["kind"] == domain.INFUSION:
            plan = db.get_plan_copy(connection, appointment["patient_id"])
            if plan is None or not plan.is_active:
                raise RuleViolation("the patient has no active treatment plan; an infusion cannot start without one",
                                    {"patient_id": appointment["patient_id"]})
            domain.check_plan_fits_booking(appointment, plan, rules)
            plan_id = plan.plan_id
        room = db.get_room(connection, appointment["room_id"])
        _update(connection, appointment_id, status=domain.CHECKED_IN, checked_in_at=now, checked_in_by=actor,
                plan_id=plan_id or appointment["plan_id"], updated_at=now, updated_by=actor)
        add_event(connection, db.outbox, SERVICE, "scheduling.appointment.checked_in",
                  domain.checked_in_payload(appointment, room, plan_id, now))
        return db.appointment_view(connection, appointment_id)


def mark_no_show(engine: Engine, rules: SchedulingRules, now: datetime, appointment_id: str, actor: str) -> dict:
    """The patient did not come. Allowed once the grace period after the start has passed; frees room and patient."""
    with engine.begin() as connection:
        appointment = existing_appointment(connection, appointment_id, for_update=True)
        domain.ensure_allowed("no_show", appointment)
        domain.check_no_show_time(appointment, now, rules)
        _update(connection, appointment_id, status=domain.NO_SHOW, no_show_at=now, no_show_by=actor, updated_at=now, updated_by=actor)
        add_event(connection, db.outbox, SERVICE, "scheduling.appointment.no_show", domain.no_show_payload(appointment))
        return db.appointment_view(connection, appointment_id)


def find_availability(connection: Connection, rules: SchedulingRules, now: datetime, patient_id: str, kind: str,
                      window_start: datetime, window_end: datetime, room_id: str | None = None, limit: int = 50) -> list[dict]:
    """Free (room, start, end) slots for this patient and kind inside [window_start, window_end), earliest first."""
    if window_end <= window_start:
        raise RuleViolation("'to' must be after 'from'", {"to": ["must be after from"]})
    if window_end - window_start > timedelta(days=domain.AVAILABILITY_MAX_DAYS):
        raise RuleViolation(f"look at most {domain.AVAILABILITY_MAX_DAYS} days at a time",
                            {"to": [f"at most {domain.AVAILABILITY_MAX_DAYS} days after from"]})
    plan = db.get_plan_copy(connection, patient_id)
    domain.require_known_patient(kind, plan, patient_id)
    rooms = candidate_rooms(connection, kind, room_id)
    slots = free_slots(connection, rules, kind, plan, rooms, patient_id, max(window_start, now), window_end, limit)
    names = {room["id"]: room["name"] for room in rooms}
    return [{"room_id": slot.room_id, "room_name": names[slot.room_id], "starts_at": slot.starts_at, "ends_at": slot.ends_at}
            for slot in slots]


def free_slots(connection: Connection, rules: SchedulingRules, kind: str, plan, rooms: list[dict], patient_id: str,
               not_before: datetime, not_after: datetime, limit: int) -> list[office_hours.Slot]:
    if not_after <= not_before:
        return []
    length = domain.appointment_length(kind, plan, rules)
    hold = domain.room_held_for(kind, rules)
    tz = rules.timezone
    days = office_hours.local_dates(not_before, not_after, tz)
    template = db.get_template(connection)
    closed = db.closures_between(connection, days[0], days[-1])
    windows = [(max(start, not_before), min(end, not_after))
               for start, end in office_hours.open_windows(template, closed, tz, days[0], days[-1])
               if end > not_before and start < not_after]
    room_ids = [room["id"] for room in rooms]
    holds = db.room_holds(connection, room_ids, not_before, not_after + hold)
    busy_rooms = [(room_id, office_hours.Busy(holds[room_id])) for room_id in room_ids]
    patient = office_hours.Busy(db.patient_holds(connection, patient_id, not_before, not_after))
    return office_hours.free_slots(windows, length, hold, rules.grid, tz, not_before, busy_rooms, patient, limit)


# --- after the infusion ---------------------------------------------------------------------


class UnknownAppointment(LookupError):
    """An event names an appointment scheduling never made: dead-lettered for a person to look at."""


def record_session_end(connection: Connection, rules: SchedulingRules, now: datetime, appointment_id: str,
                       ended_at: datetime, outcome: str) -> str | None:
    """sessions reports that the session ended (completed or aborted): the appointment is completed
    and its room and patient are free from the actual end. After a completed infusion the return
    office visit is booked. Returns the follow-up's id when one was booked now.

    Safe to apply twice: a completed appointment is not completed again, and an infusion has at most
    one automatic follow-up (a unique key on follow_up_of says so even to two different events).
    """
    appointment = db.get_appointment(connection, appointment_id, for_update=True)
    if appointment is None:
        raise UnknownAppointment(f"no appointment {appointment_id}")
    if appointment["status"] in domain.ALLOWED_FROM["complete"]:
        room_until, patient_until = domain.released_after_session(appointment, ended_at, rules)
        _update(connection, appointment_id, status=domain.COMPLETED, ended_at=ended_at, session_outcome=outcome,
                room_blocked_until=room_until, patient_busy_until=patient_until, updated_at=now, updated_by=None)
        appointment["session_outcome"] = outcome
    elif appointment["status"] != domain.COMPLETED:
        # A session ran although the appointment was cancelled or marked a no-show (the two messages
        # crossed). Its status stays, but the infusion happened: record it, and book the return visit.
        log.warning("session ended for appointment %s which is %s; status kept", appointment_id, appointment["status"])
        if appointment["session_outcome"] is None:
            _update(connection, appointment_id, ended_at=ended_at, session_outcome=outcome, updated_at=now, updated_by=None)
            appointment["session_outcome"] = outcome
    if (outcome == domain.SESSION_COMPLETED and appointment["kind"] == domain.INFUSION
            and appointment["session_outcome"] == domain.SESSION_COMPLETED):
        return book_follow_up(connection, rules, now, {**appointment, "ended_at": ended_at})
    return None


def book_follow_up(connection: Connection, rules: SchedulingRules, now: datetime, infusion: dict) -> str | None:
    """The first free exam-room slot from `follow_up_after_days` after the infusion, as a follow-up visit.

    None when one exists already, or when no slot is free within the search days (logged; the
    infusion then shows in GET /appointments?needs_follow_up=true for the front desk).
    """
    already = connection.execute(sa.select(db.appointments.c.id).where(db.appointments.c.follow_up_of == infusion["id"])).scalar()
    if already:
        return None
    db.lock_calendar_for_booking(connection)
    rooms = db.list_rooms(connection, kind=domain.EXAM_ROOM, active=True)
    search_from = domain.follow_up_search_start(infusion["ended_at"], now, rules)
    search_to = search_from + timedelta(days=rules.follow_up_search_days)
    slots = free_slots(connection, rules, domain.FOLLOW_UP, None, rooms, infusion["patient_id"], search_from, search_to, limit=20)
    names = {room["id"]: room for room in rooms}
    for slot in slots:
        follow_up = {
            "id": new_id(), "patient_id": infusion["patient_id"], "kind": domain.FOLLOW_UP, "status": domain.BOOKED,
            "room_id": slot.room_id, "plan_id": None, "starts_at": slot.starts_at, "ends_at": slot.ends_at,
            "room_blocked_until": slot.ends_at, "patient_busy_until": slot.ends_at, "booked_at": now, "updated_at": now,
            "follow_up_of": infusion["id"],
        }
        try:
            with connection.begin_nested():
                db.lock_room(connection, slot.room_id)
                connection.execute(db.appointments.insert().values(**follow_up))
        except IntegrityError as exc:
            if db.violated_exclusion(exc):
                continue  # a front-desk booking took this slot a moment ago: the next one
            raise
        add_event(connection, db.outbox, SERVICE, "scheduling.appointment.booked", domain.booked_payload(follow_up, names[slot.room_id]))
        log.info("follow-up %s booked after infusion %s", follow_up["id"], infusion["id"])
        return follow_up["id"]
    log.warning("no exam-room slot free for a follow-up after infusion %s within %d days; needs booking by hand",
                infusion["id"], rules.follow_up_search_days)
    return None


# --- shared steps ---------------------------------------------------------------------------


def existing_appointment(connection: Connection, appointment_id: str, for_update: bool = False) -> dict:
    appointment = db.get_appointment(connection, appointment_id, for_update=for_update)
    if appointment is None:
        raise NotFound("no appointment with this id", {"appointment_id": appointment_id})
    return appointment


def check_open(connection: Connection, rules: SchedulingRules, starts_at: datetime, ends_at: datetime) -> None:
    """For work that took the calendar lock in an earlier statement: the calendar as it is now."""
    calendar = db.read_calendar(connection)
    office_hours.check_open(starts_at, ends_at, calendar.template, calendar.closures, rules.timezone)


class TryAgain(Exception):
    """What this attempt read changed before it could write; the attempt is run again."""


class CalendarChanged(TryAgain):
    """A booking read the calendar just before an admin's change to it committed."""


# Each process keeps the calendar it last read, per database, and reads it again when its version moves.
_calendars: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_calendars_lock = threading.Lock()


def calendar_as_of(connection: Connection, version: int) -> db.Calendar:
    """The calendar at `version` (the one the booking's first statement saw), from the cache when it has it."""
    cached = _calendars.get(connection.engine)
    if cached is not None and cached.version == version:
        return cached
    fresh = db.read_calendar(connection)
    with _calendars_lock:
        current = _calendars.get(connection.engine)
        if current is None or current.version < fresh.version:
            _calendars[connection.engine] = fresh
    if fresh.version != version:
        raise CalendarChanged()
    return fresh


def candidate_rooms(connection: Connection, kind: str, room_id: str | None, prefer: str | None = None) -> list[dict]:
    """The room asked for (checked), or every room in use of the kind needed, `prefer` first, then by name."""
    if room_id is not None:
        room = db.get_room(connection, room_id)
        domain.check_room(room, kind, room_id)
        return [room]
    rooms = db.list_rooms(connection, kind=domain.ROOM_KIND_FOR[kind], active=True)
    if not rooms:
        raise RuleViolation(f"the clinic has no {domain.ROOM_KIND_FOR[kind]} room in use", {"room_id": ["no room of this kind"]})
    return sorted(rooms, key=lambda room: room["id"] != prefer)


def choose_room(connection: Connection, kind: str, rooms: list[dict], patient_id: str, span: domain.Span,
                ignore_id: str | None = None) -> dict:
    """The first of `rooms` free for the span; 409 naming the appointment in the way otherwise.

    This look is what names the appointment in the way. For a reschedule it is also the rule on
    SQLite (the transaction runs alone); on PostgreSQL the exclusion constraints are the rule, and a
    change they refuse because another committed after this look is retried (_retrying_lost_races).
    A new booking's own rule is the condition in its INSERT (db.book_if_free).
    """
    busy_with, taken = db.in_the_way(connection, [room["id"] for room in rooms], patient_id, span.starts_at,
                                     span.room_blocked_until, span.patient_busy_until, ignore_id)
    if busy_with:
        raise Conflict("the patient already has an appointment at this time", {"appointment_id": busy_with, "patient_id": patient_id})
    for room in rooms:
        if room["id"] not in taken:
            return room
    if len(rooms) == 1:
        room = rooms[0]
        raise Conflict(f"room {room['name']} is taken at this time (with the turnover gap after an infusion)",
                       {"appointment_id": taken[room["id"]], "room_id": room["id"]})
    raise Conflict(f"no {domain.ROOM_KIND_FOR[kind]} room is free at this time",
                   {"appointment_id": taken[rooms[0]["id"]], "appointment_ids": sorted(set(taken.values()))})


def _update(connection: Connection, appointment_id: str, **values) -> None:
    connection.execute(db.appointments.update().where(db.appointments.c.id == appointment_id).values(**values))
