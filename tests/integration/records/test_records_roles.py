"""Who may do what in records (issue 4), endpoint by endpoint and role by role:

front desk: register and update patients, read demographics; nurse: read patients, plans, diary and
encounters, add diary entries; neurologist: everything clinical; admin: the audit."""

from __future__ import annotations

import pytest

from clinic.auth import STAFF_ROLES
from tests.integration.records.support import draft_plan, register, unique_email

FRONT, NURSE, NEURO, ADMIN = "front_desk", "nurse", "neurologist", "admin"

# A new diary day for each role allowed to add one, so the second role's entry is not the first's 409.
DIARY_DAY = {NURSE: "2025-01-02", NEURO: "2025-01-03"}

# (method, path, body, roles allowed). {p} a patient, {plan} a draft plan, {dx} a diagnosis, {entry} a diary entry.
# A body may be a function of the role asking, for writes more than one role may make.
MATRIX = [
    ("GET", "/patients?family_name=lena", None, {FRONT, NURSE, NEURO}),
    ("POST", "/patients", lambda role: {"given_name": "X", "family_name": "Y", "birth_date": "1990-01-01", "sex": "other",
                                        "email": unique_email()}, {FRONT}),
    ("GET", "/patients/{p}", None, {FRONT, NURSE, NEURO}),
    ("PATCH", "/patients/{p}", {"phone": "+1 555 0101"}, {FRONT}),
    ("GET", "/patients/{p}/diagnoses", None, {NEURO}),
    ("POST", "/patients/{p}/diagnoses", {"code": "G43.709", "description": "Chronic migraine"}, {NEURO}),
    ("PATCH", "/patients/{p}/diagnoses/{dx}", {"status": "resolved"}, {NEURO}),
    ("GET", "/patients/{p}/treatment-plans", None, {NURSE, NEURO}),
    ("POST", "/patients/{p}/treatment-plans", {"infusion_minutes": 150}, {NEURO}),
    ("GET", "/treatment-plans/{plan}", None, {NURSE, NEURO}),
    ("PATCH", "/treatment-plans/{plan}", {"notes": "n"}, {NEURO}),
    ("POST", "/treatment-plans/{plan}/activate", None, {NEURO}),
    ("POST", "/treatment-plans/{plan}/retire", None, {NEURO}),
    ("GET", "/patients/{p}/diary", None, {NURSE, NEURO}),
    ("POST", "/patients/{p}/diary", lambda role: {"entry_date": DIARY_DAY.get(role, "2025-01-04"), "headache": False},
     {NURSE, NEURO}),
    ("PUT", "/patients/{p}/diary/{entry}", {"headache": False}, {NURSE, NEURO}),
    ("GET", "/patients/{p}/diary/summary", None, {NURSE, NEURO}),
    ("GET", "/patients/{p}/encounters", None, {NURSE, NEURO}),
    ("GET", "/audit", None, {ADMIN}),
]


@pytest.fixture
def resources(client):
    patient = register(client)
    neuro = client.as_role(NEURO)
    diagnosis = client.post(f"/patients/{patient['id']}/diagnoses", json={"code": "G44.41", "description": "MOH"}, headers=neuro)
    entry = client.post(f"/patients/{patient['id']}/diary", json={"entry_date": "2025-01-01", "headache": False}, headers=neuro)
    return {"p": patient["id"], "plan": draft_plan(client, patient["id"])["id"], "dx": diagnosis.get_json()["id"],
            "entry": entry.get_json()["id"]}


@pytest.mark.parametrize("method, path, body, allowed", MATRIX, ids=[f"{method} {path}" for method, path, _, _ in MATRIX])
def test_each_role_gets_exactly_what_it_is_allowed(client, resources, method, path, body, allowed):
    url = path.format(**resources)
    for role in STAFF_ROLES:
        response = client.open(url, method=method, json=body(role) if callable(body) else body, headers=client.as_role(role))
        if role in allowed:
            # Allowed means the operation succeeded: a 404 or a 422 would hide a role check that never ran.
            assert 200 <= response.status_code < 300, f"{role}: {method} {path} {response.status_code} {response.get_data(as_text=True)}"
        else:
            assert response.status_code == 403, f"{role} got {response.status_code} for {method} {path}"
