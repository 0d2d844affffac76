"""What scheduling does with the events it consumes: one function per event type.

    records.treatment_plan.activated / retired   keep each patient's active plan (who may be booked, for how long)
    sessions.session.completed                   the appointment is completed; the return office visit is booked
    sessions.session.aborted                     the appointment is completed; no return visit is booked

Each runs inside the inbox's transaction (clinic.inbox.apply_once), so a redelivered event has no
second effect; the session handlers are idempotent on their own as well.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from clinic.db import one_at_a_time, utcnow
from clinic.events import Event
from clinic.inbox import Handler
from clinic.unit_of_work import UnitOfWork
from scheduling import db, domain, services
from scheduling.domain import SchedulingRules


def keep_active_plan(uow: UnitOfWork, event: Event) -> None:
    connection = uow.connection
    data = event.data
    patient_id = str(data["patient_id"])
    # A retirement and the activation that follows it may be applied by two worker replicas at once.
    one_at_a_time(connection, f"plan-copy:{patient_id}")
    updated = domain.plan_after_activation(db.get_plan_copy(connection, patient_id), patient_id, str(data["plan_id"]),
                                           data["infusion_minutes"], event.occurred_at)
    if updated is not None:
        db.save_plan_copy(connection, updated)


def forget_retired_plan(uow: UnitOfWork, event: Event) -> None:
    connection = uow.connection
    data = event.data
    patient_id = str(data["patient_id"])
    one_at_a_time(connection, f"plan-copy:{patient_id}")
    updated = domain.plan_after_retirement(db.get_plan_copy(connection, patient_id), patient_id, str(data["plan_id"]), event.occurred_at)
    if updated is not None:
        db.save_plan_copy(connection, updated)


def make_handlers(rules: SchedulingRules, clock: Callable[[], datetime] = utcnow) -> dict[str, Handler]:
    """The handlers, bound to the clinic's scheduling rules (the session handlers book follow-ups)."""

    def complete_appointment(uow: UnitOfWork, event: Event) -> None:
        services.record_session_end(uow.connection, rules, clock(), str(event.data["appointment_id"]), event.data["ended_at"],
                                    domain.SESSION_COMPLETED)

    def end_aborted_appointment(uow: UnitOfWork, event: Event) -> None:
        services.record_session_end(uow.connection, rules, clock(), str(event.data["appointment_id"]), event.data["ended_at"],
                                    domain.SESSION_ABORTED)

    return {
        "records.treatment_plan.activated": keep_active_plan,
        "records.treatment_plan.retired": forget_retired_plan,
        "sessions.session.completed": complete_appointment,
        "sessions.session.aborted": end_aborted_appointment,
    }
