"""Sessions' handlers when events come late: a retried event may arrive after later events about the
same patient or appointment, and an event whose transaction failed is applied again from the start.
Applied through the inbox with sessions' own handlers, on PostgreSQL and on SQLite."""

from __future__ import annotations

import pytest

from clinic import events
from clinic.inbox import APPLIED, FAILED, apply_once
from sessions import SERVICE
from sessions.db import metadata, tables
from tests.integration.sessions.support import (
    KETOROLAC,
    ONDANSETRON,
    check_in_data,
    deliver,
    deliver_event,
    new_id,
    plan,
    retire_plan,
    room,
    sent,
    session_of_appointment,
)


def plans_of(ward, patient_id: str) -> dict[str, bool]:
    """{plan id: active} of the patient's plan copies."""
    return {row["plan_id"]: row["active"] for row in ward.rows(tables.plans, patient_id=patient_id)}


def test_an_activation_heard_after_the_plan_that_replaced_it_is_kept_but_not_in_force(ward):
    """Plan A activated (1), then replaced: A retired (2), B activated (3). A's two events were retried
    and arrive after B's: A's copy gets its drugs for the session checked in under it, but records has
    one active plan per patient, and from sequence 3 on that is B."""
    patient, old_plan, new_plan = new_id(), new_id(), new_id()
    data = check_in_data(patient, room(ward), old_plan)          # scheduling checked in under A
    deliver(ward, events.APPOINTMENT_CHECKED_IN, data)
    session_id = session_of_appointment(ward, data["appointment_id"])["id"]

    plan(ward, patient, [ONDANSETRON], plan_id=new_plan, sequence=3)
    plan(ward, patient, [KETOROLAC], plan_id=old_plan, sequence=1)

    assert plans_of(ward, patient) == {old_plan: False, new_plan: True}
    shown = ward.call("GET", f"/sessions/{session_id}").get_json()
    assert (shown["plan_id"], [drug["name"] for drug in shown["drugs"]]) == (old_plan, ["ketorolac"])
    assert shown["plan_changed"] is True

    retire_plan(ward, patient, old_plan, sequence=2, replaced_by=new_plan)     # the retirement, late too
    assert plans_of(ward, patient) == {old_plan: False, new_plan: True}
    assert ward.call("GET", f"/sessions/{session_id}").get_json()["plan_changed"] is True


def test_an_activation_of_the_patients_latest_sequence_is_in_force_whatever_arrived_before(ward):
    """The other way round: the older plan's events first, the newer activation last, in force."""
    patient, old_plan, new_plan = new_id(), new_id(), new_id()
    plan(ward, patient, plan_id=old_plan, sequence=1)
    plan(ward, patient, plan_id=new_plan, sequence=3)          # before A's retirement at 2: B is still in force
    retire_plan(ward, patient, old_plan, sequence=2, replaced_by=new_plan)
    assert plans_of(ward, patient) == {old_plan: False, new_plan: True}


def failing_after(handler):
    """The handler, then a failure in the same transaction (the batch's next statement, the commit)."""
    def handle(uow, event):
        handler(uow, event)
        raise RuntimeError("the transaction failed after the handler")
    return handle


def snapshot(ward) -> dict:
    """What sessions' handlers may change: every row of their tables."""
    return {table.name: sorted(map(repr, ward.rows(table)))
            for table in (tables.sessions, tables.session_drugs, tables.plans, tables.rooms, tables.cancelled_appointments)}


@pytest.mark.parametrize("event_type", [events.APPOINTMENT_CHECKED_IN, events.APPOINTMENT_CANCELLED, events.ROOM_CHANGED,
                                        events.PLAN_ACTIVATED, events.PLAN_RETIRED])
def test_an_event_whose_transaction_failed_left_nothing_and_applies_once_when_retried(ward, event_type):
    """Every effect of a handler is in the inbox's transaction: a failure leaves no trace, and the retry
    applies the event as if for the first time."""
    patient, room_id, plan_id = new_id(), room(ward), new_id()
    check_in = check_in_data(patient, room_id, plan_id)
    if event_type in (events.APPOINTMENT_CHECKED_IN, events.PLAN_RETIRED):
        plan(ward, patient, [KETOROLAC], plan_id=plan_id, sequence=1)      # drugs to copy; a plan to retire
    if event_type in (events.APPOINTMENT_CANCELLED, events.PLAN_ACTIVATED):
        deliver(ward, events.APPOINTMENT_CHECKED_IN, check_in)          # a waiting session to close, or to give drugs
    payloads = {
        events.APPOINTMENT_CHECKED_IN: check_in,
        events.APPOINTMENT_CANCELLED: {"appointment_id": check_in["appointment_id"], "patient_id": patient, "kind": "infusion",
                                       "starts_at": check_in["starts_at"], "appointment_version": 3},
        events.ROOM_CHANGED: {"room_id": room_id, "name": "Infusion 7", "kind": "infusion", "active": False, "room_version": 2},
        events.PLAN_ACTIVATED: {"plan_id": plan_id, "patient_id": patient, "infusion_minutes": 180, "drugs": [ONDANSETRON],
                                "replaces_plan_id": None, "plan_sequence": 2},
        events.PLAN_RETIRED: {"plan_id": plan_id, "patient_id": patient, "replaced_by_plan_id": None, "plan_sequence": 2},
    }
    event = sent(event_type, payloads[event_type])
    before = snapshot(ward)

    failed = apply_once(ward.engine, metadata, SERVICE, event, failing_after(ward.handlers[event_type]), clock=ward.clock)
    assert failed == FAILED
    assert snapshot(ward) == before
    assert ward.rows(tables.inbox, event_id=event.id) == []

    assert deliver_event(ward, event) == APPLIED
    after = snapshot(ward)
    assert after != before
    assert len(after["sessions"]) == len(before["sessions"]) + (event_type == events.APPOINTMENT_CHECKED_IN)
