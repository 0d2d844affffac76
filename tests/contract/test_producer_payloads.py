"""Producers' payloads held against the shared schemas, so a producer cannot drift from what consumers load."""

import uuid

from clinic import events
from records import domain


def test_records_contact_payload_matches_the_contact_changed_schema():
    patient = {"id": str(uuid.uuid4()), "given_name": "Ana", "family_name": "Reyes", "email": "ana@example.org",
               "phone": "+1 555 0100", "preferred_contact": "sms", "email_opt_out": False,
               "birth_date": "1984-03-09", "sex": "female", "medical_record_number": "123456782", "contact_version": 3}
    payload = events.serialise_payload("records.patient.contact_changed", domain.contact_details(patient))
    # Contact details only: no birth date, sex or record number travel on the bus.
    assert set(payload) == {"patient_id", "given_name", "family_name", "email", "phone", "preferred_contact", "email_opt_out",
                            "contact_version"}
    assert payload["contact_version"] == 3


def test_every_routing_key_names_service_entity_and_a_past_tense_verb():
    for event_type, _ in events.SCHEMAS:
        if event_type.startswith("probe."):
            continue
        service, entity, verb = event_type.split(".")
        assert service in {"records", "scheduling", "sessions"}
        assert any(word.endswith("ed") for word in verb.split("_")) or verb == "no_show", event_type
