"""What happens to a booked appointment at the desk: cancelled, checked in, or a no-show.

Each locks the appointment alone (lock 2 of scheduling.db.locks), changes it with its next version
and writes its event in the same transaction.
"""

from __future__ import annotations

from clinic.errors import RuleViolation
from clinic.events import APPOINTMENT_CANCELLED, APPOINTMENT_CHECKED_IN, APPOINTMENT_NO_SHOW
from clinic.unit_of_work import UnitOfWork
from scheduling import domain, payloads
from scheduling.db import appointments, locks, plan_copies, rooms
from scheduling.domain import SchedulingRules


def cancel(uow: UnitOfWork, appointment_id: str, reason: str, actor: str) -> dict:
    """Cancel a booked or checked-in appointment; its room and the patient are free again at once."""
    with uow:
        appointment = _changing(uow, "cancel", appointment_id)
        cancelled = appointments.change(uow.connection, appointment, uow.now, status=domain.CANCELLED, cancelled_at=uow.now,
                                        cancelled_by=actor, cancel_reason=reason, updated_by=actor)
        uow.add_event(APPOINTMENT_CANCELLED, payloads.cancelled_payload(cancelled))
        return appointments.shown(uow.connection, appointment_id)


def check_in(uow: UnitOfWork, rules: SchedulingRules, appointment_id: str, actor: str) -> dict:
    """The patient has arrived. For an infusion the event carries the active plan, which sessions needs."""
    with uow:
        connection, now = uow.connection, uow.now
        appointment = _changing(uow, "check_in", appointment_id)
        domain.check_check_in_time(appointment, now, rules.timezone)
        plan_id = None
        if appointment["kind"] == domain.INFUSION:
            plan = plan_copies.get(connection, appointment["patient_id"])
            if plan is None or not plan.is_active:
                raise RuleViolation("the patient has no active treatment plan; an infusion cannot start without one",
                                    {"patient_id": appointment["patient_id"]})
            domain.check_plan_fits_booking(appointment, plan, rules)
            plan_id = plan.plan_id
        checked_in = appointments.change(connection, appointment, now, status=domain.CHECKED_IN, checked_in_at=now,
                                         checked_in_by=actor, plan_id=plan_id or appointment["plan_id"], updated_by=actor)
        uow.add_event(APPOINTMENT_CHECKED_IN,
                      payloads.checked_in_payload(checked_in, rooms.get(connection, appointment["room_id"]), plan_id, now))
        return appointments.shown(connection, appointment_id)


def mark_no_show(uow: UnitOfWork, rules: SchedulingRules, appointment_id: str, actor: str) -> dict:
    """The patient did not come. Allowed once the grace period after the start has passed; frees room and patient."""
    with uow:
        appointment = _changing(uow, "no_show", appointment_id)
        domain.check_no_show_time(appointment, uow.now, rules)
        missed = appointments.change(uow.connection, appointment, uow.now, status=domain.NO_SHOW, no_show_at=uow.now,
                                     no_show_by=actor, updated_by=actor)
        uow.add_event(APPOINTMENT_NO_SHOW, payloads.no_show_payload(missed))
        return appointments.shown(uow.connection, appointment_id)


def _changing(uow: UnitOfWork, action: str, appointment_id: str) -> dict:
    """The appointment, locked for the change, its patient named in the audit, the action allowed from its status."""
    appointment = domain.found(locks.appointment(uow.connection, appointment_id), appointment_id)
    uow.audit.concerning(patient_id=appointment["patient_id"])
    domain.ensure_allowed(action, appointment)
    return appointment
