"""Scheduling's handlers when events come late: a retried event may arrive after later events about the
same appointment or patient, and an event whose transaction failed is applied again from the start.
Applied through the inbox with scheduling's own handlers, on PostgreSQL and on SQLite. (A start heard
after its session's completion is test_in_progress's; the plan copies' orders are test_plan_copies'.)"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from clinic import events
from clinic.db import rows_of
from clinic.inbox import APPLIED, FAILED, apply_once
from scheduling import SERVICE
from scheduling.db import metadata, tables
from scheduling.domain import SchedulingRules
from scheduling.handlers import make_handlers
from tests.integration.scheduling.support import MONDAY, NY, local, plan_activated, plan_retired, session_ended, session_started


def checked_in(clinic, hhmm: str = "09:00") -> dict:
    """An infusion booked on Monday at `hhmm` and checked in five minutes before, as shown."""
    infusion = clinic.booked(clinic.plan(minutes=120), local(MONDAY, hhmm))
    clinic.clock.set(local(MONDAY, hhmm) - timedelta(minutes=5))
    response = clinic.call("POST", f"/appointments/{infusion['id']}/check-in")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def shown(clinic, appointment_id: str) -> dict:
    return clinic.call("GET", f"/appointments/{appointment_id}").get_json()


def test_an_abort_heard_before_its_start_completes_the_appointment_and_the_start_changes_nothing(clinic):
    clinic.room("Infusion 1")
    infusion = checked_in(clinic)
    started = session_started(infusion, local(MONDAY, "09:02"))
    assert clinic.deliver(session_ended(infusion, local(MONDAY, "09:40"), completed=False,
                                        session_id=started.data["session_id"])) == APPLIED
    aborted = shown(clinic, infusion["id"])
    assert (aborted["status"], aborted["session_outcome"], aborted["follow_up_id"]) == ("completed", "aborted", None)

    assert clinic.deliver(started) == APPLIED
    assert shown(clinic, infusion["id"]) == aborted


def failing_after(handler):
    """The handler, then a failure in the same transaction (the batch's next statement, the commit)."""
    def handle(uow, event):
        handler(uow, event)
        raise RuntimeError("the transaction failed after the handler")
    return handle


def snapshot(clinic) -> dict:
    """What scheduling's handlers may change: the appointments, the plan copies and the outbox."""
    with clinic.engine.connect() as connection:
        return {table.name: sorted(map(repr, rows_of(connection, sa.select(table))))
                for table in (tables.appointments, tables.plan_copies, tables.outbox)}


@pytest.mark.parametrize("event_type", [events.SESSION_STARTED, events.SESSION_COMPLETED, events.SESSION_ABORTED,
                                        events.PLAN_ACTIVATED, events.PLAN_RETIRED])
def test_an_event_whose_transaction_failed_left_nothing_and_applies_once_when_retried(clinic, event_type):
    """Every effect of a handler (a status, a follow-up visit and its appointment.booked, a plan copy)
    is in the inbox's transaction: a failure leaves no trace, and the retry applies the event as if
    for the first time."""
    clinic.room("Infusion 1")
    clinic.room("Exam A", kind="exam")
    infusion = checked_in(clinic)
    patient = infusion["patient_id"]
    late = {
        events.SESSION_STARTED: lambda: session_started(infusion, local(MONDAY, "09:02")),
        events.SESSION_COMPLETED: lambda: session_ended(infusion, local(MONDAY, "11:05")),
        events.SESSION_ABORTED: lambda: session_ended(infusion, local(MONDAY, "09:40"), completed=False),
        events.PLAN_ACTIVATED: lambda: plan_activated(patient, minutes=180, sequence=clinic.next_plan_sequence(patient)),
        events.PLAN_RETIRED: lambda: plan_retired(patient, str(uuid.uuid4()), sequence=clinic.next_plan_sequence(patient)),
    }[event_type]()
    event = events.parse(late.to_json())
    handler = make_handlers(SchedulingRules(timezone=NY))[event_type]
    before = snapshot(clinic)

    assert apply_once(clinic.engine, metadata, SERVICE, event, failing_after(handler), clock=clinic.clock) == FAILED
    assert snapshot(clinic) == before

    assert clinic.deliver(late) == APPLIED
    assert snapshot(clinic) != before
    if event_type == events.SESSION_COMPLETED:
        assert clinic.count(kind="follow_up") == 1
        assert [e["data"]["kind"] for e in clinic.events(events.APPOINTMENT_BOOKED)] == ["infusion", "follow_up"]
