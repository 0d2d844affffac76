"""Records' payloads held against the shared schemas: what records builds is what consumers will load."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from clinic import events
from records import domain

PLAN = {"id": str(uuid.uuid4()), "patient_id": str(uuid.uuid4()), "status": domain.DRAFT, "infusion_minutes": 180,
        "notes": "free text that must stay in records",
        # As plans_api stores them: doses as exact decimal text.
        "drugs": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain", "rate": None, "max_per_24h": "120"},
                  {"name": "metoclopramide", "dose": "10", "unit": "mg", "route": "IV", "purpose": "nausea_vomiting",
                   "rate": None, "max_per_24h": None},
                  {"name": "normal saline", "dose": "1000", "unit": "mL", "route": "IV", "purpose": "hydration",
                   "rate": "500 mL/h", "max_per_24h": None}]}


def test_the_activated_payload_matches_its_schema_and_keeps_doses_exact():
    previous = str(uuid.uuid4())
    payload = events.serialise_payload("records.treatment_plan.activated", domain.activated_payload(PLAN, previous, plan_sequence=2))
    assert set(payload) == {"plan_id", "patient_id", "infusion_minutes", "drugs", "replaces_plan_id", "plan_sequence"}
    assert (payload["replaces_plan_id"], payload["plan_sequence"]) == (previous, 2)
    assert [(drug["name"], drug["dose"], drug["max_per_24h"], drug["rate"]) for drug in payload["drugs"]] == [
        ("ketorolac", "30", "120", None), ("metoclopramide", "10", None, None), ("normal saline", "1000", None, "500 mL/h")]


def test_the_retired_payload_matches_its_schema_with_or_without_a_successor():
    alone = events.serialise_payload("records.treatment_plan.retired", domain.retired_payload(PLAN, plan_sequence=1))
    assert alone == {"plan_id": PLAN["id"], "patient_id": PLAN["patient_id"], "replaced_by_plan_id": None, "plan_sequence": 1}
    successor = str(uuid.uuid4())
    replaced = events.serialise_payload("records.treatment_plan.retired", domain.retired_payload(PLAN, successor, plan_sequence=2))
    assert replaced["replaced_by_plan_id"] == successor


@pytest.mark.parametrize("change, field", [({"unit": "milligrams"}, "unit"), ({"rate": "fast"}, "rate"), ({"rate": "0 mL/h"}, "rate"),
                                           ({"max_per_24h": "0"}, "max_per_24h"), ({"route": "IT"}, "route")])
def test_a_drug_consumers_could_not_hold_a_dose_to_never_leaves(change, field):
    drugs = [{**PLAN["drugs"][0], **change}]
    with pytest.raises(events.InvalidEvent, match=field):
        events.serialise_payload("records.treatment_plan.activated",
                                 domain.activated_payload({**PLAN, "drugs": drugs}, None, plan_sequence=1))


def test_a_completed_session_round_trips_into_what_the_encounter_keeps():
    started = datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc)
    completed = {"session_id": str(uuid.uuid4()), "appointment_id": str(uuid.uuid4()), "patient_id": str(uuid.uuid4()),
                 "room_id": str(uuid.uuid4()), "room_name": "Infusion 2", "started_at": started, "ended_at": started + timedelta(hours=2),
                 "drugs_given": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV",
                                  "given_at": started + timedelta(minutes=5)}],
                 "pain_before": 8, "pain_after": 3, "highest_news2": 2,
                 "alerts": [{"level": "urgent", "news2_score": 5, "observed_at": started + timedelta(minutes=40)}]}
    event = events.parse(events.Event(type="sessions.session.completed", producer="sessions",
                                      data=events.serialise_payload("sessions.session.completed", completed)).to_json())
    kept = events.schema_for(event.type, event.version).dump(event.data)
    assert events.DrugGiven(many=True).load(kept["drugs_given"])[0]["given_at"] == started + timedelta(minutes=5)
    assert events.AlertSummary(many=True).load(kept["alerts"])[0]["news2_score"] == 5
    assert kept["drugs_given"][0]["dose"] == "30"
