"""Treatment plans over HTTP, on PostgreSQL and on SQLite: the lifecycle, the events it writes to the outbox
(parsed against the shared schemas), bad input, and one active plan per patient under concurrency."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from clinic.db import new_id, utcnow
from clinic.testing import assert_error
from records import db
from tests.integration.records.support import KETOROLAC, ONDANSETRON, draft_plan, outbox_events, register


def activate(client, plan_id, role="neurologist"):
    return client.post(f"/treatment-plans/{plan_id}/activate", headers=client.as_role(role))


def test_a_plan_goes_from_draft_to_active_to_retired_and_says_so_on_the_bus(client, records_engine):
    patient = register(client)
    plan = draft_plan(client, patient["id"])
    assert plan["status"] == "draft" and plan["created_by"] == "tester"
    assert [drug["dose"] for drug in plan["drugs"]] == ["30", "4"]
    assert outbox_events(records_engine, about=plan["id"]) == [], "a draft means nothing outside records"

    active = activate(client, plan["id"])
    assert active.status_code == 200, active.get_data(as_text=True)
    assert active.get_json()["status"] == "active" and active.get_json()["activated_at"]
    activated, = outbox_events(records_engine, "records.treatment_plan.activated", about=plan["id"])
    assert str(activated.data["patient_id"]) == patient["id"] and activated.data["infusion_minutes"] == 150
    assert [(d["name"], str(d["dose"]), d["unit"], d["route"], d["purpose"], d["max_per_24h"] and str(d["max_per_24h"]))
            for d in activated.data["drugs"]] == [("ketorolac", "30", "mg", "IV", "pain", "120"),
                                                   ("ondansetron", "4", "mg", "IV", "nausea_vomiting", None)]
    assert "notes" not in activated.data and activated.data["replaces_plan_id"] is None
    assert activated.data["plan_sequence"] == 1

    retired = client.post(f"/treatment-plans/{plan['id']}/retire", headers=client.as_role("neurologist"))
    assert retired.status_code == 200 and retired.get_json()["status"] == "retired"
    event, = outbox_events(records_engine, "records.treatment_plan.retired", about=plan["id"])
    assert event.data["replaced_by_plan_id"] is None and event.data["plan_sequence"] == 2


def test_activating_a_second_plan_retires_the_first_in_the_same_transaction(client, records_engine):
    patient = register(client)
    first, second = draft_plan(client, patient["id"]), draft_plan(client, patient["id"], infusion_minutes=180)
    assert activate(client, first["id"]).status_code == 200
    assert activate(client, second["id"]).status_code == 200

    listed = client.get(f"/patients/{patient['id']}/treatment-plans", headers=client.as_role("nurse")).get_json()
    plans = {plan["id"]: plan for plan in listed}
    assert plans[first["id"]]["status"] == "retired" and plans[first["id"]]["replaced_by_plan_id"] == second["id"]
    assert plans[second["id"]]["status"] == "active"
    # Retired first, so a consumer that clears the patient's plan on retirement ends with the new one.
    # The patient's plan sequence orders them for a consumer that keeps one plan per patient: retired n+1, activated n+2.
    mine = [(event.type, str(event.data["plan_id"]), event.data["plan_sequence"])
            for event in outbox_events(records_engine, about=patient["id"]) if event.type.startswith("records.treatment_plan")]
    assert mine == [("records.treatment_plan.activated", first["id"], 1), ("records.treatment_plan.retired", first["id"], 2),
                    ("records.treatment_plan.activated", second["id"], 3)]
    replacing, = outbox_events(records_engine, "records.treatment_plan.activated", about=second["id"])
    assert str(replacing.data["replaces_plan_id"]) == first["id"]


@pytest.mark.parametrize("state, why", [("active", "already active"), ("retired", "retired plan cannot be activated")])
def test_an_active_or_retired_plan_cannot_be_activated_again(client, records_engine, state, why):
    plan = draft_plan(client, register(client)["id"])
    assert activate(client, plan["id"]).status_code == 200
    if state == "retired":
        client.post(f"/treatment-plans/{plan['id']}/retire", headers=client.as_role("neurologist"))
    before = len(outbox_events(records_engine))
    error = assert_error(activate(client, plan["id"]), 409, "conflict")
    assert why in error["message"] and error["details"]["status"] == state
    assert len(outbox_events(records_engine)) == before


def test_a_plan_without_drugs_cannot_be_activated_until_it_has_one(client):
    plan = draft_plan(client, register(client)["id"], drugs=[])
    error = assert_error(activate(client, plan["id"]), 409, "conflict")
    assert "without drugs" in error["message"]
    changed = client.patch(f"/treatment-plans/{plan['id']}", json={"drugs": [KETOROLAC]}, headers=client.as_role("neurologist"))
    assert changed.status_code == 200 and len(changed.get_json()["drugs"]) == 1
    assert activate(client, plan["id"]).status_code == 200


def test_only_a_draft_can_be_changed(client):
    plan = draft_plan(client, register(client)["id"])
    assert activate(client, plan["id"]).status_code == 200
    error = assert_error(client.patch(f"/treatment-plans/{plan['id']}", json={"infusion_minutes": 240},
                                      headers=client.as_role("neurologist")), 409, "conflict")
    assert error["details"]["status"] == "active"


def test_a_retired_draft_was_never_announced(client, records_engine):
    plan = draft_plan(client, register(client)["id"])
    assert client.post(f"/treatment-plans/{plan['id']}/retire", headers=client.as_role("neurologist")).status_code == 200
    assert outbox_events(records_engine, about=plan["id"]) == []
    assert_error(client.post(f"/treatment-plans/{plan['id']}/retire", headers=client.as_role("neurologist")), 409, "conflict")


@pytest.mark.parametrize("role", ["nurse", "front_desk", "admin"])
def test_only_a_neurologist_activates(client, role):
    plan = draft_plan(client, register(client)["id"])
    error = assert_error(activate(client, plan["id"], role), 403, "forbidden")
    assert error["details"]["required_roles"] == ["neurologist"]


def test_a_nurse_reads_plans_but_does_not_write_them(client):
    patient = register(client)
    plan = draft_plan(client, patient["id"])
    assert client.get(f"/treatment-plans/{plan['id']}", headers=client.as_role("nurse")).status_code == 200
    assert_error(client.post(f"/patients/{patient['id']}/treatment-plans", json={"infusion_minutes": 150},
                             headers=client.as_role("nurse")), 403)
    assert_error(client.get(f"/treatment-plans/{plan['id']}", headers=client.as_role("front_desk")), 403)


def test_unknown_patients_and_plans_are_404(client):
    unknown = new_id()
    assert_error(client.post(f"/patients/{unknown}/treatment-plans", json={"infusion_minutes": 150},
                             headers=client.as_role("neurologist")), 404, "not_found")
    assert_error(client.get(f"/patients/{unknown}/treatment-plans", headers=client.as_role("nurse")), 404)
    for path in (f"/treatment-plans/{unknown}/activate", f"/treatment-plans/{unknown}/retire"):
        assert_error(client.post(path, headers=client.as_role("neurologist")), 404, "not_found")
    assert_error(client.get(f"/treatment-plans/{unknown}", headers=client.as_role("nurse")), 404)


@pytest.mark.parametrize("body, field", [
    ({"infusion_minutes": 119}, "infusion_minutes"),
    ({"infusion_minutes": "150"}, "infusion_minutes"),
    ({"infusion_minutes": 150.5}, "infusion_minutes"),
    ({"infusion_minutes": 100000000000000000000}, "infusion_minutes"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": 0}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": "-5"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": "NaN"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": "1e999999"}]}, "drugs"),
    # Forms Python's Decimal reads but a neurologist did not write: never read as something else.
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": "1_0"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": " 5"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": "1E+2"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "dose": "\uff15"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "unit": "spoonfuls"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "route": "intrathecal"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "purpose": "sedation"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "max_per_24h": "15"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "rate": "quickly"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "name": "keto\x00rolac"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**KETOROLAC, "name": "   "}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [KETOROLAC, {**KETOROLAC, "dose": "15"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": [{**ONDANSETRON, "route": "PO", "rate": "4 mg/h"}]}, "drugs"),
    ({"infusion_minutes": 150, "drugs": "ketorolac"}, "drugs"),
    ({"infusion_minutes": 150, "notes": "a\x00b"}, "notes"),
    ({"infusion_minutes": 150, "status": "active"}, "status"),
])
def test_bad_plan_input_is_a_422_naming_the_field(client, records_engine, body, field):
    patient = register(client)
    error = assert_error(client.post(f"/patients/{patient['id']}/treatment-plans", json=body, headers=client.as_role("neurologist")),
                         422, "validation_failed")
    assert field in error["details"]
    with records_engine.connect() as connection:
        assert db.list_plans(connection, patient["id"]) == []


def test_the_drug_at_fault_is_named_by_position_and_field(client):
    patient = register(client)
    error = assert_error(client.post(f"/patients/{patient['id']}/treatment-plans", headers=client.as_role("neurologist"),
                                     json={"infusion_minutes": 150, "drugs": [KETOROLAC, {**ONDANSETRON, "unit": "tablets"}]}), 422)
    assert error["details"] == {"drugs": {"1": {"unit": [error["details"]["drugs"]["1"]["unit"][0]]}}}


def test_two_neurologists_activating_two_drafts_at_once_leave_exactly_one_active(client, records_engine):
    patient = register(client)
    drafts = [draft_plan(client, patient["id"]) for _ in range(6)]
    start = threading.Barrier(len(drafts))
    statuses = {}

    def activate_at_once(plan_id):
        own = client.application.test_client()  # a test client per thread
        start.wait()
        statuses[plan_id] = own.post(f"/treatment-plans/{plan_id}/activate", headers=client.as_role("neurologist")).status_code

    threads = [threading.Thread(target=activate_at_once, args=(plan["id"],)) for plan in drafts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses.values()) == [200] * len(drafts)  # they queued up; each later one replaced the one before

    with records_engine.connect() as connection:
        plans = db.list_plans(connection, patient["id"])
    active = [plan for plan in plans if plan["status"] == "active"]
    assert len(active) == 1
    activated = outbox_events(records_engine, "records.treatment_plan.activated", about=patient["id"])
    retired = outbox_events(records_engine, "records.treatment_plan.retired", about=patient["id"])
    assert len(activated) == len(drafts) and len(retired) == len(drafts) - 1
    assert str(activated[-1].data["plan_id"]) == active[0]["id"], "the last activation announced is the plan in force"
    sequences = sorted(event.data["plan_sequence"] for event in activated + retired)
    assert sequences == list(range(1, 2 * len(drafts))), "each event one more of the patient's plan sequence, none twice"
    assert max(activated, key=lambda event: event.data["plan_sequence"]) is activated[-1]


def test_the_database_itself_refuses_a_second_active_plan(client, records_engine):
    patient = register(client)
    assert activate(client, draft_plan(client, patient["id"])["id"]).status_code == 200
    now = utcnow()
    with pytest.raises(sa.exc.IntegrityError), records_engine.begin() as connection:
        connection.execute(db.treatment_plans.insert().values(
            id=new_id(), patient_id=patient["id"], status="active", infusion_minutes=120, drugs=[], created_by="x",
            created_at=now, updated_at=now))
