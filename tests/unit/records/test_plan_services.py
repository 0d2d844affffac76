"""Treatment plans' use cases called directly on a unit of work: draft, change, activate, retire, the
events they announce with the patient's plan sequence, and each refusal leaving nothing behind."""

from __future__ import annotations

import pytest

from clinic import events
from clinic.errors import Conflict, NotFound
from records import db, domain
from records.services import plans
from tests.unit.records.examples import KETOROLAC, NOW

UNKNOWN = "7b0f0d3e-6a56-4a4b-9a8e-1d2f3c4b5a69"


@pytest.fixture
def draft(uow, patient):
    """draft(**changes) -> a new draft plan of the patient, written by dr-a."""

    def write(**changes) -> dict:
        body = {"infusion_minutes": 150, "drugs": [KETOROLAC], "notes": "start slowly", **changes}
        return plans.write_draft(uow(), patient["id"], body, by="dr-a")

    return write


def plan_events(published) -> list[tuple[str, str, int]]:
    found = [(events.PLAN_ACTIVATED, data) for data in published(events.PLAN_ACTIVATED)]
    found += [(events.PLAN_RETIRED, data) for data in published(events.PLAN_RETIRED)]
    return sorted(((kind, str(data["plan_id"]), data["plan_sequence"]) for kind, data in found), key=lambda item: item[2])


def test_a_draft_keeps_doses_as_exact_text_and_announces_nothing(draft, published, audit_trail):
    plan = draft()
    assert (plan["status"], plan["created_by"], plan["created_at"]) == (domain.DRAFT, "dr-a", NOW)
    assert [(drug["name"], drug["dose"], drug["max_per_24h"]) for drug in plan["drugs"]] == [("ketorolac", "30", "120")]
    assert plan_events(published) == []
    assert audit_trail()[-1]["resource_id"] == plan["id"]


def test_a_draft_for_an_unknown_patient_is_not_found(uow):
    with pytest.raises(NotFound):
        plans.write_draft(uow(), UNKNOWN, {"infusion_minutes": 150, "drugs": [], "notes": None}, by="dr-a")


def test_a_draft_is_changed_and_its_drugs_replaced_whole(uow, draft):
    plan = draft()
    changed = plans.change_draft(uow(), plan["id"], {"drugs": [{**KETOROLAC, "dose": KETOROLAC["dose"] / 2}], "notes": None})
    assert ([drug["dose"] for drug in changed["drugs"]], changed["notes"], changed["infusion_minutes"]) == (["15"], None, 150)


def test_only_a_draft_can_be_changed(uow, draft, stored):
    plan = draft()
    plans.activate_plan(uow(), plan["id"], by="dr-a")
    with pytest.raises(Conflict, match="only a draft"):
        plans.change_draft(uow(), plan["id"], {"infusion_minutes": 240})
    assert stored(db.treatment_plans, plan["id"])["infusion_minutes"] == 150
    with pytest.raises(NotFound):
        plans.change_draft(uow(), UNKNOWN, {"infusion_minutes": 240})


def test_activation_announces_the_plan_at_the_next_plan_sequence(uow, patient, draft, published, stored):
    plan = draft()
    active = plans.activate_plan(uow(subject="dr-b"), plan["id"], by="dr-b")
    assert (active["status"], active["activated_by"], active["activated_at"]) == (domain.ACTIVE, "dr-b", NOW)
    assert plan_events(published) == [(events.PLAN_ACTIVATED, plan["id"], 1)]
    assert stored(db.patients, patient["id"])["plan_sequence"] == 1


def test_activation_over_an_active_plan_retires_it_first_retired_n_plus_1_then_activated_n_plus_2(uow, patient, draft, published,
                                                                                                      stored):
    first, second = draft(), draft(infusion_minutes=180)
    plans.activate_plan(uow(), first["id"], by="dr-a")
    plans.activate_plan(uow(), second["id"], by="dr-a")
    assert plan_events(published) == [(events.PLAN_ACTIVATED, first["id"], 1), (events.PLAN_RETIRED, first["id"], 2),
                                       (events.PLAN_ACTIVATED, second["id"], 3)]
    retired = stored(db.treatment_plans, first["id"])
    assert (retired["status"], retired["replaced_by_plan_id"]) == (domain.RETIRED, second["id"])
    assert str(published(events.PLAN_ACTIVATED)[-1]["replaces_plan_id"]) == first["id"]
    assert stored(db.patients, patient["id"])["plan_sequence"] == 3


@pytest.mark.parametrize("state, why", [("active", "already active"), ("retired", "retired plan cannot be activated"),
                                        ("without drugs", "without drugs")])
def test_activation_is_refused_for_an_active_or_retired_plan_or_one_without_drugs(uow, patient, draft, published, stored, state, why):
    plan = draft(drugs=[]) if state == "without drugs" else draft()
    if state != "without drugs":
        plans.activate_plan(uow(), plan["id"], by="dr-a")
    if state == "retired":
        plans.retire_plan(uow(), plan["id"], by="dr-a")
    before = (plan_events(published), stored(db.patients, patient["id"])["plan_sequence"])
    with pytest.raises(Conflict, match=why):
        plans.activate_plan(uow(), plan["id"], by="dr-a")
    assert (plan_events(published), stored(db.patients, patient["id"])["plan_sequence"]) == before


def test_activating_or_retiring_an_unknown_plan_is_not_found(uow):
    for use_case in (plans.activate_plan, plans.retire_plan):
        with pytest.raises(NotFound):
            use_case(uow(), UNKNOWN, by="dr-a")


def test_retiring_the_active_plan_is_announced_at_the_next_plan_sequence(uow, patient, draft, published, stored):
    plan = draft()
    plans.activate_plan(uow(), plan["id"], by="dr-a")
    retired = plans.retire_plan(uow(), plan["id"], by="dr-c")
    assert (retired["status"], retired["retired_by"], retired["replaced_by_plan_id"]) == (domain.RETIRED, "dr-c", None)
    assert plan_events(published) == [(events.PLAN_ACTIVATED, plan["id"], 1), (events.PLAN_RETIRED, plan["id"], 2)]
    assert stored(db.patients, patient["id"])["plan_sequence"] == 2


def test_a_draft_set_aside_is_not_announced_and_a_retired_plan_cannot_be_retired_again(uow, patient, draft, published, stored):
    plan = draft()
    assert plans.retire_plan(uow(), plan["id"], by="dr-a")["status"] == domain.RETIRED
    assert plan_events(published) == [] and stored(db.patients, patient["id"])["plan_sequence"] == 0
    with pytest.raises(Conflict, match="already retired"):
        plans.retire_plan(uow(), plan["id"], by="dr-a")


def test_a_patients_plans_are_listed_and_each_plans_patient_found(engine, uow, patient, draft):
    first = draft()
    second = draft()
    with engine.connect() as connection:
        assert {plan["id"] for plan in plans.patient_plans(connection, patient["id"])} == {first["id"], second["id"]}
        assert plans.plan_owner(connection, first["id"]) == patient["id"]
        assert plans.plan_owner(connection, UNKNOWN) is None
        with pytest.raises(NotFound):
            plans.patient_plans(connection, UNKNOWN)


def test_were_the_locks_ever_bypassed_the_database_still_keeps_one_active_plan(uow, draft, monkeypatch, published):
    first, second = draft(), draft()
    plans.activate_plan(uow(), first["id"], by="dr-a")
    monkeypatch.setattr(db, "active_plan", lambda connection, patient_id: None)  # as if the first were not seen
    with pytest.raises(Conflict, match="at the same moment"):
        plans.activate_plan(uow(), second["id"], by="dr-a")
    assert [str(data["plan_id"]) for data in published(events.PLAN_ACTIVATED)] == [first["id"]]
