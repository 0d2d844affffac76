"""The plan copy is ordered by the patient's plan sequence that records stamps, never by clocks: plan
events delivered in any order, with occurred_at deliberately wrong (the later the event, the earlier
its clock), leave the copy at the highest sequence; on PostgreSQL and on SQLite."""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from clinic.testing import assert_error
from scheduling.db import plan_copies
from tests.integration.scheduling.support import MONDAY, apply, local, plan_activated, plan_retired

# A clock that runs backwards: each event of the history claims to be an hour older than the one before.
SKEWED = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def history(patient: str, plans: list[str], end_retired: bool = False) -> list:
    """Plan A activated; each next plan replaces the one before (retired n+1, activated n+2); optionally the
    last one retired too. Sequence numbers as records stamps them, clocks running backwards."""
    events, sequence = [], 0

    def stamp():
        nonlocal sequence
        sequence += 1
        return sequence, SKEWED - timedelta(hours=sequence)

    for index, plan in enumerate(plans):
        if index:
            number, at = stamp()
            events.append(plan_retired(patient, plans[index - 1], number, occurred_at=at))
        number, at = stamp()
        events.append(plan_activated(patient, minutes=150 + 30 * index, plan_id=plan, sequence=number, occurred_at=at))
    if end_retired:
        number, at = stamp()
        events.append(plan_retired(patient, plans[-1], number, occurred_at=at))
    return events


def copy_of(clinic, patient: str):
    with clinic.engine.connect() as connection:
        return plan_copies.get(connection, patient)


@pytest.mark.parametrize("order", ["as sent", "reversed", "shuffled 1", "shuffled 2", "shuffled 3"])
def test_the_highest_plan_sequence_wins_whatever_the_order_and_the_clocks(clinic, order):
    patient, plans = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    sent = history(patient, plans)                  # A(1), A retired(2), B(3), B retired(4), C(5)
    delivered = list(reversed(sent)) if order == "reversed" else list(sent)
    if order.startswith("shuffled"):
        random.Random(order).shuffle(delivered)
    for event in delivered:
        apply(clinic.engine, event)
    copy = copy_of(clinic, patient)
    assert (copy.plan_id, copy.infusion_minutes, copy.version) == (plans[2], 210, 5)
    # What the desk notices: the infusion lasts the last plan's 210 minutes.
    clinic.room("Infusion 1")
    assert clinic.booked(patient, local(MONDAY, "09:00"))["ends_at_local"] == "2030-01-07T12:30:00-05:00"


def test_a_late_activation_never_brings_back_a_plan_retired_since(clinic):
    patient, plans = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
    sent = history(patient, plans, end_retired=True)   # A(1), A retired(2), B(3), B retired(4)
    for permutation in itertools.permutations(sent):
        clinic_patient = str(uuid.uuid4())
        for event in permutation:
            apply(clinic.engine, _for_patient(event, clinic_patient))
        copy = copy_of(clinic, clinic_patient)
        assert (copy.plan_id, copy.version) == (None, 4), [e.data["plan_sequence"] for e in permutation]
    clinic.room("Infusion 1")
    error = assert_error(clinic.book(clinic_patient, local(MONDAY, "09:00")), 422)
    assert "no active treatment plan" in error["message"]


def test_plan_events_applied_at_once_by_several_workers_end_at_the_highest_sequence(clinic):
    patient, plans = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(5)]
    sent = history(patient, plans)                  # nine events, the last the activation of plans[4] at 9
    random.Random(7).shuffle(sent)
    start = threading.Barrier(len(sent))
    failures = []

    def worker(event):
        start.wait()
        try:
            apply(clinic.engine, event)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(event,)) for event in sent]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    copy = copy_of(clinic, patient)
    assert (copy.plan_id, copy.version) == (plans[4], 9)


def _for_patient(event, patient: str):
    """The same event about another patient (a fresh copy for each permutation)."""
    data = {**event.data, "patient_id": patient}
    if event.type.endswith("activated"):
        return plan_activated(patient, data["infusion_minutes"], data["plan_id"], data["plan_sequence"], occurred_at=event.occurred_at)
    return plan_retired(patient, data["plan_id"], data["plan_sequence"], occurred_at=event.occurred_at)
