"""What scheduling does with the events it consumes: one function per event type.

    records.treatment_plan.activated / retired   keep each patient's active plan (who may be booked, for how long)
    sessions.session.started                     the checked-in appointment is in progress (no more cancelling it)
    sessions.session.completed                   the appointment is completed; the return office visit is booked
    sessions.session.aborted                     the appointment is completed; no return visit is booked

Each runs in the unit of work the inbox opened for the event (clinic.inbox: one transaction for a batch of events), so a
redelivered event has no second effect; each is safe to apply twice on its own as well.
"""

from __future__ import annotations

from clinic.events import PLAN_ACTIVATED, PLAN_RETIRED, SESSION_ABORTED, SESSION_COMPLETED, SESSION_STARTED, Event
from clinic.inbox import Handler
from clinic.unit_of_work import UnitOfWork
from scheduling import domain
from scheduling.domain import SchedulingRules
from scheduling.services.after_session import record_session_end
from scheduling.services.during_session import record_session_start
from scheduling.services.plan_copies import keep_plan_copy


def keep_active_plan(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    keep_plan_copy(uow, domain.copy_after_activation(str(data["patient_id"]), str(data["plan_id"]), data["infusion_minutes"],
                                                     data.get("plan_sequence")))


def forget_retired_plan(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    keep_plan_copy(uow, domain.copy_after_retirement(str(data["patient_id"]), data.get("plan_sequence")))


def session_started(uow: UnitOfWork, event: Event) -> None:
    record_session_start(uow, str(event.data["appointment_id"]), event.data["started_at"])


def make_handlers(rules: SchedulingRules) -> dict[str, Handler]:
    """The handlers, bound to the clinic's scheduling rules (the session handlers book follow-ups)."""

    def session_ended(outcome: str) -> Handler:
        def handle(uow: UnitOfWork, event: Event) -> None:
            record_session_end(uow, rules, str(event.data["appointment_id"]), event.data["ended_at"], outcome)
        return handle

    return {
        PLAN_ACTIVATED: keep_active_plan,
        PLAN_RETIRED: forget_retired_plan,
        SESSION_STARTED: session_started,
        SESSION_COMPLETED: session_ended(domain.SESSION_COMPLETED),
        SESSION_ABORTED: session_ended(domain.SESSION_ABORTED),
    }
