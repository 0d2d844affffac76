import json
import uuid
from datetime import datetime, timezone

import pytest

from clinic import events

CONTACT = {"patient_id": str(uuid.uuid4()), "given_name": "Ada", "family_name": "Moss", "email": "ada@example.org",
           "phone": None, "preferred_contact": "email", "email_opt_out": False}


def test_every_event_in_the_design_has_a_version_1_schema():
    expected = {
        "records.patient.registered", "records.patient.contact_changed", "records.treatment_plan.activated",
        "records.treatment_plan.retired", "scheduling.appointment.booked", "scheduling.appointment.rescheduled",
        "scheduling.appointment.cancelled", "scheduling.appointment.checked_in", "scheduling.appointment.no_show",
        "sessions.session.started", "sessions.vitals.alert_raised", "sessions.session.completed", "sessions.session.aborted",
    }
    assert expected <= {event_type for event_type, version in events.SCHEMAS if version == 1}


def test_an_event_round_trips_through_its_envelope():
    event = events.Event(type="records.patient.contact_changed", producer="records", correlation_id="c-1",
                         data=events.serialise_payload("records.patient.contact_changed", CONTACT))
    parsed = events.parse(event.to_json())
    assert (parsed.id, parsed.type, parsed.version, parsed.producer, parsed.correlation_id) == (event.id, event.type, 1, "records", "c-1")
    assert str(parsed.data["patient_id"]) == CONTACT["patient_id"]
    assert parsed.occurred_at.tzinfo is not None


def test_a_payload_with_an_undeclared_field_is_refused_before_it_leaves():
    with pytest.raises(events.InvalidEvent, match="birth_date"):
        events.serialise_payload("records.patient.contact_changed", {**CONTACT, "birth_date": "1980-01-01"})


def test_registered_carries_ids_only():
    with pytest.raises(events.InvalidEvent):
        events.serialise_payload("records.patient.registered", {"patient_id": CONTACT["patient_id"], "given_name": "Ada"})


@pytest.mark.parametrize("change", [{"version": 2}, {"type": "records.patient.unheard_of"}, {"id": "not-a-uuid"},
                                    {"occurred_at": "yesterday"}, {"data": {"patient_id": "x"}}])
def test_a_message_that_is_not_a_known_valid_event_is_rejected(change):
    body = json.loads(events.Event(type="records.patient.registered", producer="records",
                                   data={"patient_id": CONTACT["patient_id"]}).to_json())
    with pytest.raises(events.InvalidEvent):
        events.parse(json.dumps({**body, **change}))


def test_naive_times_are_refused():
    with pytest.raises(events.InvalidEvent):
        events.serialise_payload("scheduling.appointment.no_show", {"appointment_id": str(uuid.uuid4()),
                                 "patient_id": str(uuid.uuid4()), "starts_at": datetime(2026, 1, 1, 9, 0)})
    ok = events.serialise_payload("scheduling.appointment.no_show", {"appointment_id": str(uuid.uuid4()),
                                  "patient_id": str(uuid.uuid4()), "starts_at": datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)})
    assert ok["starts_at"].startswith("2026-01-01T09:00:00")


def test_a_plan_needs_at_least_120_minutes_and_a_drug():
    plan = {"plan_id": str(uuid.uuid4()), "patient_id": str(uuid.uuid4()), "infusion_minutes": 90,
            "drugs": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain"}]}
    with pytest.raises(events.InvalidEvent, match="infusion_minutes"):
        events.serialise_payload("records.treatment_plan.activated", plan)
    with pytest.raises(events.InvalidEvent, match="drugs"):
        events.serialise_payload("records.treatment_plan.activated", {**plan, "infusion_minutes": 120, "drugs": []})
    assert events.serialise_payload("records.treatment_plan.activated", {**plan, "infusion_minutes": 150})["infusion_minutes"] == 150
