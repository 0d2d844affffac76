"""Helpers for records' integration tests that are not fixtures (those are in conftest.py)."""

from __future__ import annotations

import itertools
import json
from datetime import date

import sqlalchemy as sa

from clinic import events
from clinic.db import rows_of, utcnow
from records import db, domain

_emails = itertools.count(1)

KETOROLAC = {"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain", "max_per_24h": "120"}
ONDANSETRON = {"name": "ondansetron", "dose": 4, "unit": "mg", "route": "IV", "purpose": "nausea_vomiting"}


def unique_email() -> str:
    """An email address no other registration in this test run has used."""
    return f"patient{next(_emails)}@example.org"


def register(client, **changes) -> dict:
    """A newly registered patient (front desk), with an email no other test uses."""
    patient = {"given_name": "Lena", "family_name": "Park", "birth_date": "1979-06-14", "sex": "female",
               "email": unique_email(), **changes}
    response = client.post("/patients", json=patient, headers=client.as_role("front_desk"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def draft_plan(client, patient_id: str, **changes) -> dict:
    body = {"infusion_minutes": 150, "drugs": [KETOROLAC, ONDANSETRON], "notes": "start slowly", **changes}
    response = client.post(f"/patients/{patient_id}/treatment-plans", json=body, headers=client.as_role("neurologist"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def outbox_events(engine, event_type: str | None = None, about: str | None = None) -> list[events.Event]:
    """Events in the outbox, in order, each parsed (so checked) against its shared schema.

    `about` keeps those whose payload names this id (a patient's or a plan's).
    """
    query = sa.select(db.outbox.c.body).order_by(db.outbox.c.position)
    if event_type:
        query = query.where(db.outbox.c.event_type == event_type)
    with engine.connect() as connection:
        bodies = connection.execute(query).scalars().all()
    parsed = [events.parse(body) for body in bodies]
    if about:
        parsed = [event for event in parsed if about in json.dumps(event.data, default=str)]
    return parsed


def audit_rows(engine, **equal) -> list[dict]:
    """Audit rows, oldest first, whose columns equal the given values."""
    query = sa.select(db.audit_log).order_by(db.audit_log.c.id)
    for column, value in equal.items():
        query = query.where(db.audit_log.c[column] == value)
    with engine.connect() as connection:
        return rows_of(connection, query)


def registered_by_an_older_pod(connection, patient_id: str, number: str, family_name: str) -> None:
    """The INSERT of a records pod of revision 0003: every column it knew, family_search not among them."""
    now = utcnow()
    connection.execute(sa.text(
        "INSERT INTO patients (id, medical_record_number, given_name, family_name, birth_date, sex, email, phone, "
        "preferred_contact, email_opt_out, identity_key, search_name, created_at, updated_at, contact_version, plan_sequence) "
        "VALUES (:id, :number, 'Ana', :family, :born, 'female', NULL, '+1 555 0100', 'phone', false, :id, :search, :now, :now, 1, 0)"),
        {"id": patient_id, "number": number, "family": family_name, "born": date(1984, 3, 9),
         "search": domain.search_name("Ana", family_name), "now": now})
