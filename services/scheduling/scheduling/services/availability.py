"""The free slots: where and when a patient could be booked, for the desk and for the automatic follow-up."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from clinic.errors import RuleViolation
from scheduling import domain
from scheduling.db import appointments
from scheduling.db.calendar import closures_between, weekly_template
from scheduling.db.plan_copies import get as plan_copy
from scheduling.domain import PlanCopy, SchedulingRules
from scheduling.local_time import local_dates, open_windows
from scheduling.services.booking import candidate_rooms
from scheduling.slot_finder import Busy, Slot, free_slots


def find_availability(connection: Connection, rules: SchedulingRules, now: datetime, patient_id: str, kind: str,
                      window_start: datetime, window_end: datetime, room_id: str | None = None, limit: int = 50) -> list[dict]:
    """Free (room, start, end) slots for this patient and kind inside [window_start, window_end), earliest first."""
    if window_end <= window_start:
        raise RuleViolation("'to' must be after 'from'", {"to": ["must be after from"]})
    if window_end - window_start > timedelta(days=domain.AVAILABILITY_MAX_DAYS):
        raise RuleViolation(f"look at most {domain.AVAILABILITY_MAX_DAYS} days at a time",
                            {"to": [f"at most {domain.AVAILABILITY_MAX_DAYS} days after from"]})
    plan = plan_copy(connection, patient_id)
    domain.require_known_patient(kind, plan, patient_id)
    rooms = candidate_rooms(connection, kind, room_id)
    slots = slots_for(connection, rules, kind, plan, rooms, patient_id, max(window_start, now), window_end, limit)
    names = {room["id"]: room["name"] for room in rooms}
    return [{"room_id": slot.room_id, "room_name": names[slot.room_id], "starts_at": slot.starts_at, "ends_at": slot.ends_at}
            for slot in slots]


def slots_for(connection: Connection, rules: SchedulingRules, kind: str, plan: PlanCopy | None, rooms: list[dict], patient_id: str,
              not_before: datetime, not_after: datetime, limit: int) -> list[Slot]:
    """Free slots in these rooms for the patient between two moments, from the calendar and the holds stored now."""
    if not_after <= not_before:
        return []
    length = domain.appointment_length(kind, plan, rules)
    turnover = domain.turnover_after(kind, rules)
    tz = rules.timezone
    days = local_dates(not_before, not_after, tz)
    closed = closures_between(connection, days[0], days[-1])
    windows = [(max(start, not_before), min(end, not_after))
               for start, end in open_windows(weekly_template(connection), closed, tz, days[0], days[-1])
               if end > not_before and start < not_after]
    room_ids = [room["id"] for room in rooms]
    holds = appointments.room_holds(connection, room_ids, not_before, not_after + turnover)
    busy_rooms = [(room_id, Busy(holds[room_id])) for room_id in room_ids]
    patient = Busy(appointments.patient_holds(connection, patient_id, not_before, not_after))
    return free_slots(windows, length, turnover, rules.grid, tz, not_before, busy_rooms, patient, limit)
