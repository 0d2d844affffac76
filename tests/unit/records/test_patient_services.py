"""Registering and changing patients, called directly on a unit of work: what is stored, what is
announced, what is audited, and each refusal leaving nothing behind."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from clinic import audit, events
from clinic.errors import Conflict, NotFound, RuleViolation
from records import db, domain
from records.services import patients
from tests.unit.records.examples import ANA, NOW


def test_registering_stores_the_patient_announces_the_contact_at_version_1_and_audits_the_change(
        uow, published, audit_trail, stored):
    work = uow(subject="desk-1", roles=("front_desk",), action=audit.CREATE)
    patient = patients.register_patient(work, dict(ANA))
    row = stored(db.patients, patient["id"])
    assert (row["given_name"], row["contact_version"], row["plan_sequence"], row["created_at"]) == ("Ana", 1, 0, NOW)
    assert len(row["medical_record_number"]) == 9 and row["search_name"] == "ana reyes"
    assert [str(data["patient_id"]) for data in published(events.PATIENT_REGISTERED)] == [patient["id"]]
    contact, = published(events.PATIENT_CONTACT_CHANGED)
    assert (contact["email"], contact["contact_version"]) == ("ana@example.org", 1)
    entry, = audit_trail()
    assert (entry["subject"], entry["action"], entry["patient_id"], entry["outcome"]) == ("desk-1", "create", patient["id"], "allowed")


def test_the_same_person_again_is_a_conflict_naming_the_first_and_audited_against_them(uow, patient, published, audit_trail):
    work = uow(roles=("front_desk",), action=audit.CREATE)
    with pytest.raises(Conflict) as refused:
        patients.register_patient(work, {**ANA, "given_name": " ANA", "email": "Ana@Example.org"})
    assert refused.value.details == {"patient_id": patient["id"], "medical_record_number": patient["medical_record_number"]}
    assert work.access.patient_ids == [patient["id"]] and not work.access.recorded  # the view records the refusal
    assert len(published(events.PATIENT_REGISTERED)) == 1 and len(audit_trail()) == 1


def test_a_record_number_drawn_twice_is_drawn_again(uow, patient, monkeypatch, stored):
    drawn = []

    def taken_then_fresh():
        drawn.append(patient["medical_record_number"] if not drawn else "000000018")
        return drawn[-1]

    monkeypatch.setattr(domain, "new_medical_record_number", taken_then_fresh)
    other = patients.register_patient(uow(roles=("front_desk",)), {**ANA, "email": "other@example.org"})
    assert drawn == [patient["medical_record_number"], "000000018"]
    assert stored(db.patients, other["id"])["medical_record_number"] == "000000018"


def test_a_generator_that_only_draws_taken_numbers_fails_after_a_few_attempts_instead_of_looping(uow, patient, monkeypatch):
    drawn = []
    monkeypatch.setattr(domain, "new_medical_record_number", lambda: drawn.append(1) or patient["medical_record_number"])
    with pytest.raises(sa.exc.IntegrityError):
        patients.register_patient(uow(roles=("front_desk",)), {**ANA, "email": "other@example.org"})
    assert len(drawn) == patients.RECORD_NUMBER_ATTEMPTS


def test_a_contact_change_is_one_more_contact_version_announced_with_the_change(uow, patient, published, stored):
    changed = patients.change_patient(uow(roles=("front_desk",)), patient["id"], {"phone": "+1 555 0100", "preferred_contact": "sms"})
    assert (changed["contact_version"], changed["updated_at"]) == (2, NOW)
    assert stored(db.patients, patient["id"])["contact_version"] == 2
    assert [(data["preferred_contact"], data["contact_version"]) for data in published(events.PATIENT_CONTACT_CHANGED)] == [
        ("email", 1), ("sms", 2)]


def test_a_change_that_is_no_contact_detail_announces_nothing(uow, patient, published, stored):
    patients.change_patient(uow(roles=("front_desk",)), patient["id"], {"birth_date": date(1984, 3, 10), "sex": "other"})
    row = stored(db.patients, patient["id"])
    assert (row["birth_date"], row["sex"], row["contact_version"]) == (date(1984, 3, 10), "other", 1)
    assert len(published(events.PATIENT_CONTACT_CHANGED)) == 1
    assert row["identity_key"] == domain.identity_key("Ana", "Reyes", date(1984, 3, 10), "ana@example.org")


def test_a_change_that_leaves_the_preferred_contact_unreachable_is_refused(uow, patient, published, stored):
    with pytest.raises(RuleViolation) as refused:
        patients.change_patient(uow(roles=("front_desk",)), patient["id"], {"preferred_contact": "sms"})
    assert "phone" in refused.value.details
    assert stored(db.patients, patient["id"])["preferred_contact"] == "email" and len(published()) == 2


def test_changing_an_unknown_patient_is_not_found(uow):
    with pytest.raises(NotFound):
        patients.change_patient(uow(roles=("front_desk",)), "7b0f0d3e-6a56-4a4b-9a8e-1d2f3c4b5a69", {"sex": "other"})


def test_a_change_that_makes_two_records_one_person_is_a_conflict_naming_the_other(uow, patient, stored):
    other = patients.register_patient(uow(roles=("front_desk",)), {**ANA, "email": "other@example.org"})
    work = uow(roles=("front_desk",))
    with pytest.raises(Conflict) as refused:
        patients.change_patient(work, other["id"], {"email": "ANA@example.org"})
    assert refused.value.details["patient_id"] == patient["id"] and work.access.patient_ids == [patient["id"]]
    assert stored(db.patients, other["id"])["email"] == "other@example.org"


def test_patients_are_found_by_the_whole_family_name_or_a_birth_date_without_case_or_accents(engine, uow, patient):
    patients.register_patient(uow(roles=("front_desk",)), {**ANA, "given_name": "José", "family_name": "Álvarez",
                                                            "birth_date": date(1990, 1, 1), "email": "jose@example.org"})
    with engine.connect() as connection:
        assert [row["given_name"] for row in patients.find_patients(connection, "ALVAREZ", "", None, 10)] == ["José"]
        assert patients.find_patients(connection, "alv", "", None, 10) == []
        assert [row["given_name"] for row in patients.find_patients(connection, None, "jo", date(1990, 1, 1), 10)] == ["José"]
        assert [row["id"] for row in patients.find_patients(connection, None, "", date(1984, 3, 9), 1)] == [patient["id"]]
        # Neither a family name nor a birth date would list patients by a prefix: refused.
        with pytest.raises(RuleViolation):
            patients.find_patients(connection, None, "jo", None, 10)
