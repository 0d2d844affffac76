"""A session from check-in to start, and how sessions are read: opened when the patient checks in for
an infusion, closed if the appointment is cancelled while it waits, started by a nurse, its SpO2
scale set by a neurologist; one session, or a page of them, as the staff apps show them.

Discharge and abort, which end a started session, are in sessions.services.discharge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from clinic.db import new_id, row_of, rows_of, violated_constraint
from clinic.errors import Conflict, NotFound
from clinic.events import SESSION_STARTED
from clinic.unit_of_work import UnitOfWork
from sessions.db.tables import (
    ONE_STARTED_PER_ROOM,
    cancelled_appointments,
    locked_session,
    plans,
    rooms,
    session_drugs,
    sessions,
    started_session_in_room,
)
from sessions.domain import care
from sessions.services import copies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckIn:
    """What scheduling.appointment.checked_in says of an infusion's check-in."""

    appointment_id: str
    patient_id: str
    room_id: str
    room_name: str
    plan_id: str | None
    starts_at: datetime
    ends_at: datetime
    checked_in_at: datetime


def open_session(uow: UnitOfWork, check_in: CheckIn) -> str | None:
    """The patient checked in for an infusion: a waiting session in the appointment's room, under the
    plan active at check-in, with its drugs when the plan copy is here (else when it arrives). One
    session per appointment, however often the check-in arrives, and none for an appointment whose
    cancellation arrived first. Returns the session's id (None when none opens)."""
    connection, now = uow.connection, uow.now
    copies.lock_patient(connection, check_in.patient_id)
    existing = row_of(connection, sa.select(sessions.c.id).where(sessions.c.appointment_id == check_in.appointment_id))
    if existing:
        return existing["id"]
    if row_of(connection, sa.select(cancelled_appointments).where(cancelled_appointments.c.appointment_id == check_in.appointment_id)):
        log.info("appointment %s was cancelled before its check-in arrived; no session opens", check_in.appointment_id)
        return None
    copies.room_seen_at_check_in(connection, check_in.room_id, check_in.room_name, now)
    plan = copies.plan_copy(connection, check_in.plan_id) if check_in.plan_id else copies.active_plan_of(connection, check_in.patient_id)
    session = {
        "id": new_id(), "appointment_id": check_in.appointment_id, "patient_id": check_in.patient_id,
        "room_id": check_in.room_id, "room_name": check_in.room_name,
        "plan_id": check_in.plan_id or (plan["plan_id"] if plan else None), "plan_version": None,
        "planned_minutes": care.planned_minutes(None, care.minutes_between(check_in.starts_at, check_in.ends_at)),
        "status": care.WAITING, "spo2_scale": 1, "appointment_starts_at": check_in.starts_at,
        "appointment_ends_at": check_in.ends_at, "checked_in_at": check_in.checked_in_at,
        "created_at": now, "updated_at": now, "version": 1,
    }
    connection.execute(sessions.insert().values(**session))
    if plan is not None and plan["drugs"] is not None:
        copies.copy_plan_drugs(connection, session, plan)
    return session["id"]


def close_cancelled(uow: UnitOfWork, appointment_id: str, patient_id: str) -> None:
    """scheduling cancelled the appointment: its waiting session closes. A started one is left as it
    is (scheduling refuses that cancel; the session is aborted instead). An appointment with no session
    yet is remembered as cancelled, in case its check-in was overtaken by this cancellation."""
    connection = uow.connection
    copies.lock_patient(connection, patient_id)  # as a check-in does: the two are applied one after the other
    found = row_of(connection, sa.select(sessions.c.id).where(sessions.c.appointment_id == appointment_id))
    if found is None:
        if not row_of(connection, sa.select(cancelled_appointments).where(cancelled_appointments.c.appointment_id == appointment_id)):
            connection.execute(cancelled_appointments.insert().values(appointment_id=appointment_id, cancelled_at=uow.now))
        return
    session = locked_session(connection, found["id"])
    if session["status"] != care.WAITING:
        if session["status"] == care.STARTED:
            log.warning("appointment %s cancelled while its session %s has started; the session is kept", appointment_id,
                        session["id"])
        return
    change(connection, session, uow.now, status=care.CANCELLED, ended_at=uow.now)


def start_session(uow: UnitOfWork, session_id: str, by: str) -> dict:
    """A nurse starts the infusion. A room has one started session at a time: the database's partial
    unique index refuses a second, whoever sends it, and the 409 names the session in the way."""
    with uow:
        connection, now = uow.connection, uow.now
        session = changing(uow, session_id, "start")
        try:
            with connection.begin_nested():
                change(connection, session, now, status=care.STARTED, started_at=now, started_by=by)
        except IntegrityError as exc:
            if violated_constraint(exc) not in (ONE_STARTED_PER_ROOM, ""):
                raise
            other = started_session_in_room(connection, session["room_id"])
            raise Conflict(f"room {session['room_name']} has a started session already; end it before starting another",
                           {"session_id": other["id"] if other else None, "room_id": session["room_id"]}) from None
        uow.add_event(SESSION_STARTED, {"session_id": session["id"], "appointment_id": session["appointment_id"],
                                        "patient_id": session["patient_id"], "room_id": session["room_id"], "started_at": now})
        return shown(connection, session_id)


def set_spo2_scale(uow: UnitOfWork, session_id: str, scale: int, by: str) -> dict:
    """A neurologist sets which NEWS2 SpO2 scale the session's readings are scored on (2: the
    hypercapnic target range, 88-92 %). Readings scored from then on use it."""
    with uow:
        session = changing(uow, session_id, "change")
        if session["spo2_scale"] != scale:
            change(uow.connection, session, uow.now, spo2_scale=scale)
        return shown(uow.connection, session_id)


# --- reading ---------------------------------------------------------------------------------------

# A session's plan has changed when the plan copy it was begun under is no longer active.
_plan_changed = sa.and_(plans.c.plan_id.is_not(None), plans.c.active.is_(False)).label("plan_changed")
_VIEW = (sa.select(sessions, sa.func.coalesce(rooms.c.name, sessions.c.room_name).label("room_shown"), _plan_changed)
         .select_from(sessions.outerjoin(plans, plans.c.plan_id == sessions.c.plan_id)
                      .outerjoin(rooms, rooms.c.id == sessions.c.room_id)))


def _shaped(row: dict) -> dict:
    row["room_name"] = row.pop("room_shown")
    row["plan_changed"] = bool(row["plan_changed"])
    discharged = row["escort_name"] is not None
    row["escort"] = {"name": row["escort_name"], "relationship": row["escort_relationship"], "phone": row["escort_phone"],
                     "adult_present": row["escort_adult_present"]} if discharged else None
    row["instructions_given"] = {"rest_today": row["told_to_rest_today"], "call_if_problems": row["told_to_call_if_problems"],
                                 "return_visit": row["told_of_return_visit"]} if discharged else None
    return row


def found(connection: Connection, session_id: str) -> dict:
    """The session as the staff apps see it (room name, plan_changed), or 404."""
    row = row_of(connection, _VIEW.where(sessions.c.id == session_id))
    if row is None:
        raise NotFound("no session with this id", {"session_id": session_id})
    return _shaped(row)


def shown(connection: Connection, session_id: str) -> dict:
    """One session with its plan's drugs, each with the id a nurse names when giving it."""
    session = found(connection, session_id)
    session["drugs"] = drugs_of(connection, session_id)
    return session


def drugs_of(connection: Connection, session_id: str) -> list[dict]:
    return rows_of(connection, sa.select(session_drugs).where(session_drugs.c.session_id == session_id)
                   .order_by(session_drugs.c.position))


def find(connection: Connection, status: str | None = None, room_id: str | None = None, checked_in_from: datetime | None = None,
         checked_in_before: datetime | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
    """Sessions, the latest check-in first, filtered by status, room and a span of check-in times."""
    query = _VIEW
    if status is not None:
        query = query.where(sessions.c.status == status)
    if room_id is not None:
        query = query.where(sessions.c.room_id == room_id)
    if checked_in_from is not None:
        query = query.where(sessions.c.checked_in_at >= checked_in_from)
    if checked_in_before is not None:
        query = query.where(sessions.c.checked_in_at < checked_in_before)
    query = query.order_by(sessions.c.checked_in_at.desc(), sessions.c.id).limit(limit).offset(offset)
    return [_shaped(row) for row in rows_of(connection, query)]


def find_open_in_rooms(connection: Connection, room_ids: list[str]) -> list[dict]:
    """The waiting and started sessions in these rooms, the earliest check-in first."""
    if not room_ids:
        return []
    query = (_VIEW.where(sessions.c.room_id.in_(room_ids), sessions.c.status.in_(care.OPEN))
             .order_by(sessions.c.checked_in_at, sessions.c.id))
    return [_shaped(row) for row in rows_of(connection, query)]


def local_day(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC span of a local date of the clinic (23 or 25 hours on the days the clocks change)."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


# --- changing ----------------------------------------------------------------------------------------


def changing(uow: UnitOfWork, session_id: str, action: str) -> dict:
    """The session, locked for the change, its patient named in the audit, the action allowed from its status."""
    session = locked_session(uow.connection, session_id)
    if session is None:
        raise NotFound("no session with this id", {"session_id": session_id})
    uow.audit.concerning(patient_id=session["patient_id"], resource_id=session_id)
    care.ensure_status(session, care.ALLOWED_FROM[action], action)
    return session


def change(connection: Connection, session: dict, now: datetime, **values) -> None:
    """Write a change to a session, with its next version."""
    connection.execute(sessions.update().where(sessions.c.id == session["id"])
                       .values(**values, updated_at=now, version=sessions.c.version + 1))
