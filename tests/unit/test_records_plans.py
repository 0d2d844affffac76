"""Treatment plan rules and diagnosis codes: the lifecycle draft → active → retired, coherent drugs."""

import uuid
from decimal import Decimal

import pytest

from clinic.errors import Conflict
from records import domain

KETOROLAC = {"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain", "rate": None, "max_per_24h": "120"}


def plan(status=domain.DRAFT, drugs=(KETOROLAC,), **changes):
    return {"id": str(uuid.uuid4()), "patient_id": str(uuid.uuid4()), "status": status, "infusion_minutes": 150,
            "drugs": list(drugs), "notes": "watch BP; patient anxious about needles", **changes}


def drug(**changes):
    return {"name": "ketorolac", "dose": Decimal("30"), "unit": "mg", "route": "IV", "purpose": "pain", "rate": None,
            "max_per_24h": None, **changes}


def test_only_a_draft_can_be_edited():
    domain.ensure_editable(plan())
    for status in (domain.ACTIVE, domain.RETIRED):
        with pytest.raises(Conflict, match=status):
            domain.ensure_editable(plan(status))


def test_a_draft_with_drugs_can_be_activated():
    domain.ensure_activatable(plan())


@pytest.mark.parametrize("status, why", [(domain.ACTIVE, "already active"), (domain.RETIRED, "retired plan cannot be activated")])
def test_an_active_or_retired_plan_cannot_be_activated(status, why):
    with pytest.raises(Conflict, match=why) as refused:
        domain.ensure_activatable(plan(status))
    assert refused.value.details["status"] == status


def test_a_plan_without_drugs_cannot_be_activated():
    with pytest.raises(Conflict, match="without drugs") as refused:
        domain.ensure_activatable(plan(drugs=()))
    assert "drugs" in refused.value.details


def test_retiring_an_active_plan_is_news_a_draft_is_not_and_a_retired_one_is_refused():
    assert domain.retirement_is_news(plan(domain.ACTIVE)) is True
    assert domain.retirement_is_news(plan(domain.DRAFT)) is False
    with pytest.raises(Conflict, match="already retired"):
        domain.retirement_is_news(plan(domain.RETIRED))


def test_the_activated_payload_carries_drugs_limits_and_the_plan_sequence_but_not_the_notes():
    payload = domain.activated_payload(plan(), replaces_plan_id=None, plan_sequence=3)
    assert "notes" not in payload
    assert payload["infusion_minutes"] == 150
    assert payload["drugs"] == [KETOROLAC]
    assert payload["plan_sequence"] == 3


def test_the_retired_payload_carries_the_successor_and_the_plan_sequence():
    retired = plan(domain.ACTIVE)
    assert domain.retired_payload(retired, "next-plan", plan_sequence=4) == {
        "plan_id": retired["id"], "patient_id": retired["patient_id"], "replaced_by_plan_id": "next-plan", "plan_sequence": 4}


@pytest.mark.parametrize("changes, field", [
    ({"max_per_24h": Decimal("20")}, "max_per_24h"),          # a day's maximum below one dose
    ({"route": "IM", "rate": "10 mg/min"}, "rate"),             # a rate for an injection
    ({"route": "PO", "rate": "10 mg/h"}, "rate"),
    ({"dose": Decimal("0.00001")}, "dose"),                     # finer than anyone measures
    ({"dose": Decimal("100000")}, "dose"),
    ({"max_per_24h": Decimal("1E+6")}, "max_per_24h"),
])
def test_an_incoherent_drug_is_refused_naming_the_field(changes, field):
    assert domain.drug_problem(drug(**changes))[0] == field


@pytest.mark.parametrize("changes", [{}, {"max_per_24h": Decimal("30")}, {"rate": "125 mL/h", "unit": "mL", "dose": Decimal("1000")},
                                     {"route": "SC", "rate": "2 mL/h"}, {"dose": Decimal("0.125")}])
def test_a_coherent_drug_passes(changes):
    assert domain.drug_problem(drug(**changes)) is None


def test_the_same_drug_twice_for_one_route_is_ambiguous():
    assert domain.duplicate_drug([drug(), drug(name="Ketorolac ")]) == "Ketorolac "
    assert domain.duplicate_drug([drug(), drug(route="IM")]) is None


def test_doses_are_kept_as_exact_text():
    assert domain.decimal_text(Decimal("30.00")) == "30"
    assert domain.decimal_text(Decimal("0.1250")) == "0.125"
    assert domain.decimal_text(Decimal("1E+3")) == "1000"
    assert domain.decimal_text(None) is None


@pytest.mark.parametrize("typed, written", [("G43.709", "G43.709"), ("g43709", "G43.709"), (" G44.41 ", "G44.41"),
                                            ("G43", "G43"), ("M1A.0711", "M1A.0711"), ("U07.1", "U07.1")])
def test_icd10cm_codes_are_accepted_in_their_usual_forms(typed, written):
    assert domain.normalised_icd10cm(typed) == written


@pytest.mark.parametrize("typed", ["", "G4", "G4.3709", "G43.", "G43.70911", "443.1", "GG3.1", "G43..7", "G43-709", "migraine"])
def test_anything_else_is_not_an_icd10cm_code(typed):
    assert domain.normalised_icd10cm(typed) is None
