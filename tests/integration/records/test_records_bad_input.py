"""No input makes records answer 500 or half-write a change: every field of every write, and every query
parameter, replaced by values of the wrong type, out of range or malformed, is answered 4xx."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clinic.testing import assert_error
from records import db
from tests.integration.records.support import KETOROLAC, draft_plan, register

ODD_VALUES = [None, "", "x", "\x00", " " * 3, "9" * 400, 0, -1, 1.5, 10**30, 1e308, True, [], [None], {}, {"a": 1},
              "2999-12-31", "0001-01-01", "1e999999", "NaN"]

WRITES = [  # (method, path, a valid body, role)
    ("POST", "/patients", {"given_name": "Ana", "family_name": "Reyes", "birth_date": "1984-03-09", "sex": "female",
                           "email": "fuzz@example.org", "phone": "+1 555 0100", "preferred_contact": "email",
                           "email_opt_out": False}, "front_desk"),
    ("PATCH", "/patients/{p}", {"given_name": "Ana", "birth_date": "1984-03-09", "sex": "female", "email": "f2@example.org",
                                "phone": "+1 555 0100", "preferred_contact": "sms", "email_opt_out": True}, "front_desk"),
    ("POST", "/patients/{p}/diagnoses", {"code": "G43.709", "description": "Chronic migraine", "onset_date": "2010-01-01",
                                         "status": "resolved"}, "neurologist"),
    ("POST", "/patients/{p}/treatment-plans", {"infusion_minutes": 150, "drugs": [KETOROLAC], "notes": "n"}, "neurologist"),
    ("PATCH", "/treatment-plans/{plan}", {"infusion_minutes": 150, "drugs": [KETOROLAC], "notes": "n"}, "neurologist"),
    ("POST", "/patients/{p}/diary", {"entry_date": "2025-02-01", "headache": True, "worst_intensity": 5,
                                     "acute_medication": ["triptan"]}, "nurse"),
    ("PUT", "/patients/{p}/diary/{entry}", {"headache": True, "worst_intensity": 5, "acute_medication": ["opioid"]}, "nurse"),
]
DRUG_FIELDS = list(KETOROLAC) + ["rate"]

READS = [  # (path, query parameters to vary, role)
    ("/patients", {"name": "ana", "birth_date": "1984-03-09"}, "front_desk"),
    ("/patients/{p}/diary", {"from": "2025-01-01", "to": "2025-02-01"}, "nurse"),
    ("/patients/{p}/diary/summary", {"days": "90", "around_days": "30"}, "nurse"),
    ("/audit", {"patient_id": "{p}", "from": "2025-01-01", "to": "2025-02-01", "limit": "10", "offset": "0"}, "admin"),
]
ODD_QUERY_VALUES = ["", "x", "\x00", "-1", "0", "99999999999999999999", "1.5", "0001-01-01", "9999-12-31", "2025-02-30",
                    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+05:00", "%", "a" * 500]


@pytest.fixture
def ids(client):
    patient = register(client, birth_date="1960-01-01")
    entry = client.post(f"/patients/{patient['id']}/diary", json={"entry_date": "2025-01-01", "headache": False},
                        headers=client.as_role("nurse")).get_json()
    return {"p": patient["id"], "plan": draft_plan(client, patient["id"])["id"], "entry": entry["id"]}


def _bodies(valid: dict):
    yield from ([], "text", 1, None)
    for field in valid:
        for value in ODD_VALUES:
            yield {**valid, field: value}
    if "drugs" in valid:
        for field in DRUG_FIELDS:
            for value in ODD_VALUES:
                yield {**valid, "drugs": [{**KETOROLAC, field: value}]}


@pytest.mark.parametrize("method, path, valid, role", WRITES, ids=[f"{method} {path}" for method, path, _, _ in WRITES])
def test_no_body_makes_a_write_fail_with_a_500(client, records_engine, ids, method, path, valid, role):
    url = path.format(**ids)
    for body in _bodies(valid):
        response = client.open(url, method=method, json=body, headers=client.as_role(role))
        assert response.status_code < 500, f"{body!r}: {response.get_data(as_text=True)}"
        if response.status_code >= 400:
            assert set(response.get_json()) == {"error"}
    with records_engine.connect() as connection:
        # Whatever was refused left nothing behind: no patient without its registration event.
        patients = connection.execute(sa.select(sa.func.count()).select_from(db.patients)).scalar_one()
        registered = connection.execute(sa.select(sa.func.count()).select_from(db.outbox)
                                        .where(db.outbox.c.event_type == "records.patient.registered")).scalar_one()
    assert patients == registered


@pytest.mark.parametrize("path, valid, role", READS, ids=[path for path, _, _ in READS])
def test_no_query_makes_a_read_fail_with_a_500(client, ids, path, valid, role):
    url = path.format(**ids)
    valid = {name: value.format(**ids) for name, value in valid.items()}
    for name in valid:
        for value in ODD_QUERY_VALUES:
            for query in ({**valid, name: value}, {name: value}):
                response = client.get(url, query_string=query, headers=client.as_role(role))
                assert response.status_code < 500, f"{query!r}: {response.get_data(as_text=True)}"


def _stored_updated_at(engine, table, row_id):
    with engine.connect() as connection:
        return connection.execute(sa.select(table.c.updated_at).where(table.c.id == row_id)).scalar_one()


@pytest.mark.parametrize("body", [None, {}], ids=["no body", "empty object"])
def test_a_change_that_changes_nothing_is_a_422_and_touches_nothing(client, records_engine, ids, body):
    diagnosis = client.post(f"/patients/{ids['p']}/diagnoses", json={"code": "G43.709", "description": "Chronic migraine"},
                            headers=client.as_role("neurologist")).get_json()
    changes = [(f"/patients/{ids['p']}", "front_desk", db.patients, ids["p"]),
               (f"/patients/{ids['p']}/diagnoses/{diagnosis['id']}", "neurologist", db.diagnoses, diagnosis["id"]),
               (f"/treatment-plans/{ids['plan']}", "neurologist", db.treatment_plans, ids["plan"])]
    for url, role, table, row_id in changes:
        before = _stored_updated_at(records_engine, table, row_id)
        sent = {} if body is None else {"json": body}
        assert_error(client.patch(url, headers=client.as_role(role), **sent), 422, "validation_failed")
        assert _stored_updated_at(records_engine, table, row_id) == before, url
