"""The PHI access audit, on PostgreSQL and on SQLite: every read and write of a patient's data says who, when,
which patient, what and whether they were let in; a write and its audit row commit together."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from clinic import audit
from clinic.db import new_id
from clinic.testing import assert_error
from records import db
from tests.integration.records.support import audit_rows, draft_plan, outbox_events, register

NOT_PATIENT_DATA = {"health.healthz", "health.readyz", "api-docs.openapi_json", "clinic_docs.page", "clinic_docs.start",
                    "clinic_docs.bundle_file", "static"}

# A caller's correlation id is kept when it is a UUID (anything else is replaced at the edge).
CORRELATION_ID = "0b6b3c1e-4d1f-4c55-9a1e-5f2d6c7e8a01"


def test_every_view_of_patient_data_is_audited_and_every_change_in_its_transaction(client):
    app = client.application
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in NOT_PATIENT_DATA:
            continue
        view_class = app.view_functions[rule.endpoint].view_class
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            action, resource, write = getattr(view_class, method.lower())._clinic_audit
            assert write == (method != "GET"), f"{method} {rule.rule} is audited as {'a write' if write else 'a read'}"
            checked += 1
    assert checked >= 15


def test_a_read_names_who_in_which_role_which_patient_and_what(client, records_engine):
    patient = register(client)
    response = client.get(f"/patients/{patient['id']}", headers={**client.as_role("nurse", subject="nurse-7"),
                                                                  "X-Correlation-ID": CORRELATION_ID})
    assert response.status_code == 200
    row, = audit_rows(records_engine, patient_id=patient["id"], action="read")
    assert (row["subject"], row["roles"], row["resource"], row["outcome"], row["correlation_id"]) == (
        "nurse-7", "nurse", "patient", "allowed", CORRELATION_ID)
    assert datetime.now(timezone.utc) - row["occurred_at"] < timedelta(minutes=1)


def test_a_read_refused_for_the_role_is_audited_as_denied_with_the_patient_it_was_about(client, records_engine):
    patient = register(client)
    plan = draft_plan(client, patient["id"])
    assert_error(client.get(f"/treatment-plans/{plan['id']}", headers=client.as_role("front_desk", subject="desk-2")), 403)
    assert_error(client.get(f"/patients/{patient['id']}/diary", headers=client.as_role("admin", subject="admin-1")), 403)
    denied = audit_rows(records_engine, patient_id=patient["id"], outcome="denied")
    assert [(row["subject"], row["resource"], row["resource_id"]) for row in denied] == [
        ("desk-2", "treatment_plan", plan["id"]), ("admin-1", "diary", None)]


def test_a_request_without_a_valid_token_names_nobody_and_is_not_recorded(client, records_engine):
    patient = register(client)
    before = len(audit_rows(records_engine))
    for headers in ({}, {"Authorization": "Bearer forged"}):
        assert_error(client.get(f"/patients/{patient['id']}", headers=headers), 401)
    assert len(audit_rows(records_engine)) == before


def test_a_refused_request_is_audited_as_failed(client, records_engine):
    unknown = new_id()
    assert_error(client.get(f"/patients/{unknown}/encounters", headers=client.as_role("nurse")), 404)
    row, = audit_rows(records_engine, patient_id=unknown)
    assert (row["outcome"], row["error_code"], row["resource"]) == ("failed", "not_found", "encounter")

    patient = register(client)
    assert_error(client.post(f"/patients/{patient['id']}/diary", json={"headache": "?"}, headers=client.as_role("nurse")), 422)
    row, = audit_rows(records_engine, patient_id=patient["id"], resource="diary")
    assert (row["action"], row["outcome"], row["error_code"]) == ("create", "failed", "validation_failed")


def test_a_duplicate_registration_is_audited_against_the_patient_the_409_discloses(client, records_engine):
    patient = register(client, email="dup-audit@example.org")
    body = {key: patient[key] for key in ("given_name", "family_name", "birth_date", "sex", "email")}
    error = assert_error(client.post("/patients", json=body, headers=client.as_role("front_desk", subject="desk-9")), 409)
    assert error["details"]["patient_id"] == patient["id"]
    rows = audit_rows(records_engine, patient_id=patient["id"], subject="desk-9")
    assert [(row["action"], row["outcome"], row["error_code"]) for row in rows] == [("create", "failed", "conflict")]


def test_a_write_and_its_audit_row_commit_together_or_not_at_all(client, records_engine, monkeypatch):
    plan = draft_plan(client, register(client)["id"])
    activated = client.post(f"/treatment-plans/{plan['id']}/activate", headers=client.as_role("neurologist", subject="dr-a"))
    assert activated.status_code == 200
    row, = audit_rows(records_engine, resource_id=plan["id"], action="activate")
    assert (row["subject"], row["patient_id"], row["outcome"]) == ("dr-a", plan["patient_id"], "allowed")

    def audit_unavailable(connection, table, rows):
        raise RuntimeError("the audit table cannot be written")

    monkeypatch.setattr(audit, "write", audit_unavailable)
    outbox_before = len(outbox_events(records_engine))
    response = client.post("/patients", json={"given_name": "Unaudited", "family_name": "Change", "birth_date": "1990-01-01",
                                              "sex": "male", "email": "unaudited@example.org"}, headers=client.as_role("front_desk"))
    assert response.status_code == 500
    with records_engine.connect() as connection:
        assert connection.execute(sa.select(db.patients.c.id).where(db.patients.c.email == "unaudited@example.org")).first() is None
    assert len(outbox_events(records_engine)) == outbox_before, "no event may leave for a change that was not made"


def test_data_is_not_served_when_its_read_cannot_be_audited(client, monkeypatch):
    patient = register(client)

    def audit_unavailable(connection, table, rows):
        raise RuntimeError("the audit table cannot be written")

    monkeypatch.setattr(audit, "write", audit_unavailable)
    response = client.get(f"/patients/{patient['id']}", headers=client.as_role("nurse"))
    assert response.status_code == 500 and patient["family_name"] not in response.get_data(as_text=True)


def test_a_search_is_audited_once_for_each_patient_it_shows(client, records_engine):
    shown = [register(client, given_name=given, family_name="Auditwell") for given in ("Quincy", "Quinn")]
    found = client.get("/patients", query_string={"family_name": "auditwell"}, headers=client.as_role("front_desk", subject="desk-3"))
    assert {row["id"] for row in found.get_json()} == {patient["id"] for patient in shown}
    rows = audit_rows(records_engine, subject="desk-3", action="search")
    assert sorted(row["patient_id"] for row in rows) == sorted(patient["id"] for patient in shown)
    client.get("/patients", query_string={"family_name": "nobody-by-this-name"}, headers=client.as_role("front_desk", subject="desk-4"))
    row, = audit_rows(records_engine, subject="desk-4", action="search")
    assert row["patient_id"] is None


def test_an_admin_reads_the_audit_of_one_patient_over_a_period_page_by_page(client, records_engine):
    patient = register(client)
    for subject in ("n1", "n2", "n3"):
        client.get(f"/patients/{patient['id']}", headers=client.as_role("nurse", subject=subject))
    admin = client.as_role("admin", subject="privacy-officer")
    since = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat()

    page = client.get("/audit", query_string={"patient_id": patient["id"], "from": since, "limit": 2}, headers=admin)
    assert page.status_code == 200, page.get_data(as_text=True)
    body = page.get_json()
    assert body["total"] == 4 and len(body["entries"]) == 2           # the registration and three reads
    assert [(entry["action"], entry["subject"]) for entry in body["entries"]] == [("create", "tester"), ("read", "n1")]
    rest = client.get("/audit", query_string={"patient_id": patient["id"], "from": since, "limit": 2, "offset": 2}, headers=admin)
    assert [entry["subject"] for entry in rest.get_json()["entries"]] == ["n2", "n3"]

    past = client.get("/audit", query_string={"patient_id": patient["id"], "to": "2000-01-01"}, headers=admin).get_json()
    assert past["total"] == 0
    # Reading the audit is itself audited.
    assert audit_rows(records_engine, subject="privacy-officer", resource="audit_log", patient_id=patient["id"])


@pytest.mark.parametrize("role", ["front_desk", "nurse", "neurologist"])
def test_only_an_admin_reads_the_audit_and_a_refused_look_is_recorded(client, records_engine, role):
    assert_error(client.get("/audit", headers=client.as_role(role, subject=f"curious-{role}")), 403)
    row, = audit_rows(records_engine, subject=f"curious-{role}")
    assert (row["resource"], row["outcome"]) == ("audit_log", "denied")


@pytest.mark.parametrize("query, field", [({"patient_id": "nobody"}, "patient_id"), ({"from": "last week"}, "from"),
                                          ({"from": "2026-02-02", "to": "2026-02-01"}, "from"), ({"limit": 0}, "limit"),
                                          ({"patient": new_id()}, "patient")])
def test_a_bad_audit_query_is_a_422_naming_the_field(client, query, field):
    error = assert_error(client.get("/audit", query_string=query, headers=client.as_role("admin")), 422)
    assert field in error["details"]
