"""Records over HTTP, on PostgreSQL and on SQLite: bad input and bad identity get clear errors, never a 500,
and a database that goes away is a 503 that heals without a restart."""

from __future__ import annotations

import time

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from clinic import events, identity
from clinic.testing import assert_error, eventually
from records import db, domain
from tests.integration.records.support import outbox_events, register
from tests.support.tokens import claims_for

PATIENT = {"given_name": "Ana", "family_name": "Reyes", "birth_date": "1984-03-09", "sex": "female", "email": "ana@example.org"}

# A caller's correlation id is kept when it is a UUID (anything else is replaced at the edge).
CORRELATION_ID = "3f0c2a4e-8b7d-4e61-a2c5-9d1e0f4b7c17"


def test_a_malformed_body_is_a_400(client):
    error = assert_error(client.post("/patients", data="{not json", content_type="application/json",
                                           headers=client.as_role("front_desk")), 400)
    assert "JSON" in error["message"]


@pytest.mark.parametrize("field, value", [("given_name", 42), ("birth_date", "09/03/1984"), ("sex", "robot"),
                                          ("email", "not-an-email"), ("birth_date", "2999-01-01"), ("email_opt_out", "maybe")])
def test_a_wrong_value_is_a_422_naming_the_field(client, field, value):
    error = assert_error(client.post("/patients", json={**PATIENT, field: value}, headers=client.as_role("front_desk")),
                               422, "validation_failed")
    assert list(error["details"]) == [field]


@pytest.mark.parametrize("missing", ["given_name", "family_name", "birth_date", "sex"])
def test_a_missing_field_is_a_422_naming_it(client, missing):
    body = {key: value for key, value in PATIENT.items() if key != missing}
    error = assert_error(client.post("/patients", json=body, headers=client.as_role("front_desk")), 422)
    assert missing in error["details"]


def test_an_unknown_field_is_refused(client):
    error = assert_error(client.post("/patients", json={**PATIENT, "ssn": "123"}, headers=client.as_role("front_desk")), 422)
    assert "ssn" in error["details"]


def expired_token(settings):
    past = int(time.time()) - 7200
    return identity.sign_development_token(settings, claims_for(settings, sub="x", realm_access={"roles": ["admin"]},
                                                                iat=past, exp=past + 3600))


def forged_token(settings):
    """Well-formed, for this service, signed with a key the development JWKS does not publish."""
    return jwt.encode(claims_for(settings, sub="x", realm_access={"roles": ["admin"]}),
                      ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": "forged"})


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not.a.token", "Bearer {forged}", "Bearer {expired}"])
def test_a_missing_or_bad_token_is_a_401(client, header):
    headers = {}
    if header:
        headers["Authorization"] = header.format(forged=forged_token(client.settings), expired=expired_token(client.settings))
    assert_error(client.post("/patients", json=PATIENT, headers=headers), 401, "unauthorized")


def test_a_wrong_role_is_a_403(client):
    error = assert_error(client.post("/patients", json=PATIENT, headers=client.as_role("nurse")), 403, "forbidden")
    assert "front_desk" in error["details"]["required_roles"]


def test_registering_writes_the_patient_and_both_events_in_one_transaction(client, records_engine):
    headers = {**client.as_role("front_desk"), "X-Correlation-ID": CORRELATION_ID}
    response = client.post("/patients", json=PATIENT, headers=headers)
    assert response.status_code == 201
    patient = response.get_json()
    with records_engine.connect() as connection:
        stored = connection.execute(sa.select(db.outbox.c.event_type, db.outbox.c.body)).all()
    mine = [events.parse(row.body) for row in stored if patient["id"] in row.body]
    assert [event.type for event in mine] == [events.PATIENT_REGISTERED, events.PATIENT_CONTACT_CHANGED]
    assert {event.correlation_id for event in mine} == {CORRELATION_ID}
    assert mine[1].data["contact_version"] == 1

    again = client.post("/patients", json={**PATIENT, "given_name": "ANA "}, headers=client.as_role("front_desk"))
    error = assert_error(again, 409, "conflict")
    assert error["details"]["patient_id"] == patient["id"]


def test_a_record_number_drawn_twice_is_drawn_again_and_the_registration_succeeds(client, records_engine, monkeypatch):
    taken = register(client)["medical_record_number"]
    drawn = []

    def draw_the_taken_number_first():
        drawn.append(taken if not drawn else original())
        return drawn[-1]

    original = domain.new_medical_record_number
    monkeypatch.setattr(domain, "new_medical_record_number", draw_the_taken_number_first)
    response = client.post("/patients", json={**PATIENT, "email": "second-draw@example.org"}, headers=client.as_role("front_desk"))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert drawn[0] == taken and response.get_json()["medical_record_number"] == drawn[1] != taken
    registered = [event for event in outbox_events(records_engine, events.PATIENT_REGISTERED)
                  if str(event.data["patient_id"]) == response.get_json()["id"]]
    assert len(registered) == 1, "the first attempt left nothing behind"


def test_an_unknown_patient_is_a_404(client):
    assert_error(client.get("/patients/7b0f0d3e-6a56-4a4b-9a8e-1d2f3c4b5a69", headers=client.as_role("nurse")), 404, "not_found")


def test_a_stopped_database_is_a_503_and_recovers_without_a_restart(postgres_client, postgres):
    client = postgres_client
    headers = client.as_role("front_desk")
    assert client.get("/readyz").status_code == 200
    postgres.stop_server()
    try:
        started = time.monotonic()
        ready = client.get("/readyz")
        assert time.monotonic() - started < 1.0, "readiness must answer within a second"
        error = assert_error(ready, 503)
        assert error["details"]["checks"] == {"database": False, "broker": True}

        write = client.post("/patients", json={**PATIENT, "email": "outage@example.org"}, headers=headers)
        assert_error(write, 503, "database_unavailable")
    finally:
        postgres.start_server()

    eventually(lambda: client.get("/readyz").status_code == 200, timeout=15, message="ready again")
    assert client.post("/patients", json={**PATIENT, "email": "after@example.org"}, headers=headers).status_code == 201
