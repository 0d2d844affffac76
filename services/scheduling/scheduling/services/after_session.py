"""After an infusion session (sessions' events): the appointment (checked in, or in progress since the
session started) is completed, its room and patient free from the actual end, and after a completed
infusion the return office visit is booked."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from clinic.db import new_id, violated_constraint
from clinic.events import APPOINTMENT_BOOKED
from clinic.unit_of_work import UnitOfWork
from scheduling import domain, payloads
from scheduling.db import appointments, locks, rooms
from scheduling.db.tables import PATIENT_CONSTRAINT, ROOM_CONSTRAINT
from scheduling.domain import SchedulingRules
from scheduling.services.availability import slots_for

log = logging.getLogger(__name__)


class UnknownAppointment(LookupError):
    """An event names an appointment scheduling never made: dead-lettered for a person to look at."""


def record_session_end(uow: UnitOfWork, rules: SchedulingRules, appointment_id: str, ended_at: datetime, outcome: str) -> str | None:
    """sessions reports that the session ended (completed or aborted): the appointment is completed
    and its room and patient are free from the actual end. After a completed infusion the return
    office visit is booked. Returns the follow-up's id when one was booked now.

    Safe to apply twice: a completed appointment is not completed again, and an infusion has at most
    one automatic follow-up (a unique key on follow_up_of says so even to two different events).
    """
    with uow:
        connection, now = uow.connection, uow.now
        locks.share_calendar(connection)                    # lock 1: the follow-up below reads office hours and rooms
        appointment = locks.appointment(connection, appointment_id)                          # lock 2
        if appointment is None:
            raise UnknownAppointment(f"no appointment {appointment_id}")
        if appointment["status"] in domain.ALLOWED_FROM["complete"]:
            room_until, patient_until = domain.released_after_session(appointment, ended_at, rules)
            appointment = appointments.change(connection, appointment, now, status=domain.COMPLETED, ended_at=ended_at,
                                              session_outcome=outcome, room_blocked_until=room_until,
                                              patient_busy_until=patient_until, updated_by=None)
        elif appointment["status"] != domain.COMPLETED:
            # A session ran although the appointment was cancelled or marked a no-show (the two messages
            # crossed). Its status stays, but the infusion happened: record it, and book the return visit.
            log.warning("session ended for appointment %s which is %s; status kept", appointment_id, appointment["status"])
            if appointment["session_outcome"] is None:
                appointment = appointments.change(connection, appointment, now, ended_at=ended_at, session_outcome=outcome,
                                                  updated_by=None)
        if (outcome == domain.SESSION_COMPLETED and appointment["kind"] == domain.INFUSION
                and appointment["session_outcome"] == domain.SESSION_COMPLETED):
            return _book_follow_up(uow, rules, {**appointment, "ended_at": ended_at})
        return None


def _book_follow_up(uow: UnitOfWork, rules: SchedulingRules, infusion: dict) -> str | None:
    """The first free exam-room slot from `follow_up_after_days` after the infusion, as a follow-up visit.

    None when one exists already, or when no slot is free within the search days (logged; the
    infusion then shows in GET /appointments?needs_follow_up=true for the front desk).
    """
    connection, now = uow.connection, uow.now
    if appointments.follow_up_of(connection, infusion["id"]):
        return None
    locks.plan_copy_row(connection, infusion["patient_id"])           # lock 3: queue behind the patient's bookings
    exam_rooms = rooms.listed(connection, kind=domain.EXAM_ROOM, active=True)
    search_from = domain.follow_up_search_start(infusion["ended_at"], now, rules)
    search_to = search_from + timedelta(days=rules.follow_up_search_days)
    slots = slots_for(connection, rules, domain.FOLLOW_UP, None, exam_rooms, infusion["patient_id"], search_from, search_to, limit=20)
    by_id = {room["id"]: room for room in exam_rooms}
    for slot in slots:
        follow_up = {
            "id": new_id(), "patient_id": infusion["patient_id"], "kind": domain.FOLLOW_UP, "status": domain.BOOKED,
            "room_id": slot.room_id, "plan_id": None, "starts_at": slot.starts_at, "ends_at": slot.ends_at,
            "room_blocked_until": slot.ends_at, "patient_busy_until": slot.ends_at, "booked_at": now, "updated_at": now,
            "follow_up_of": infusion["id"], "version": 1,
        }
        try:
            with connection.begin_nested():
                locks.room(connection, slot.room_id)                                          # lock 4
                appointments.insert(connection, follow_up)
        except IntegrityError as exc:
            if violated_constraint(exc) in (ROOM_CONSTRAINT, PATIENT_CONSTRAINT):
                continue  # a front-desk booking took this slot a moment ago: the next one
            raise
        uow.add_event(APPOINTMENT_BOOKED, payloads.booked_payload(follow_up, by_id[slot.room_id]))
        log.info("follow-up %s booked after infusion %s", follow_up["id"], infusion["id"])
        return follow_up["id"]
    log.warning("no exam-room slot free for a follow-up after infusion %s within %d days; needs booking by hand",
                infusion["id"], rules.follow_up_search_days)
    return None
