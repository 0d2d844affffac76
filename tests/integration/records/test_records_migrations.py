"""Records' migrations: they build exactly the tables records.db describes, on PostgreSQL and on SQLite
(what `make run` uses), carry patients registered before them, and the service works on both."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from clinic.auth import issue_token
from clinic.db import create_engine, utcnow
from clinic.migrations import migrate
from clinic.testing.migrations import downgrade, schema_differences
from records import db, domain
from records.app import create_app
from tests.integration.records.support import registered_by_an_older_pod


@pytest.mark.parametrize("down_to", ["0003", "0002", "0001"])
def test_the_migrations_build_what_records_db_describes_and_go_down_and_up_again(empty_database, down_to):
    migrate(empty_database, db.MIGRATIONS)
    assert schema_differences(empty_database, db.metadata) == []
    downgrade(empty_database, db.MIGRATIONS, down_to)
    migrate(empty_database, db.MIGRATIONS)
    assert schema_differences(empty_database, db.metadata) == []


def test_patients_registered_before_their_versions_existed_start_at_zero(empty_database):
    migrate(empty_database, db.MIGRATIONS, revision="0002")
    now = utcnow()
    with empty_database.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO patients (id, medical_record_number, given_name, family_name, birth_date, sex, email, phone, "
            "preferred_contact, email_opt_out, identity_key, search_name, created_at, updated_at) VALUES "
            "('a1b2c3d4-0000-4000-8000-000000000002', '123456782', 'Ana', 'Reyes', :born, 'female', 'ana@example.org', NULL, "
            "'email', false, 'k2', 'ana reyes', :now, :now)"), {"born": date(1984, 3, 9), "now": now})
    migrate(empty_database, db.MIGRATIONS)
    with empty_database.connect() as connection:
        patient = db.get_patient(connection, "a1b2c3d4-0000-4000-8000-000000000002")
    assert (patient["contact_version"], patient["plan_sequence"]) == (0, 0)


def test_patients_registered_before_the_upgrade_can_be_found_after_it(empty_database):
    migrate(empty_database, db.MIGRATIONS, revision="0001")
    now = utcnow()
    with empty_database.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO patients (id, medical_record_number, given_name, family_name, birth_date, sex, email, phone, "
            "preferred_contact, email_opt_out, identity_key, created_at, updated_at) VALUES "
            "('a1b2c3d4-0000-4000-8000-000000000001', '123456782', 'Zoë', 'Ångström', :born, 'female', NULL, '+1 555 0100', "
            "'phone', false, 'k1', :now, :now)"), {"born": date(1970, 1, 1), "now": now})
    migrate(empty_database, db.MIGRATIONS)
    with empty_database.connect() as connection:
        found = db.search_patients(connection, None, ["zoe", "angs"], None, 10)
        by_family_name = db.search_patients(connection, "angstrom", [], date(1970, 1, 1), 10)
    assert [patient["id"] for patient in found] == ["a1b2c3d4-0000-4000-8000-000000000001"]
    assert [patient["id"] for patient in by_family_name] == ["a1b2c3d4-0000-4000-8000-000000000001"]


def test_family_names_that_folding_lengthens_are_carried_and_found_after_the_upgrade(empty_database):
    """ß folds to "ss" and U+FDFA to eighteen characters: a family name of 60 ß, which the columns of
    revision 0003 hold, folds to 120 characters."""
    migrate(empty_database, db.MIGRATIONS, revision="0003")
    names = {"a1b2c3d4-0000-4000-8000-000000000003": "ß" * 60, "a1b2c3d4-0000-4000-8000-000000000004": "\ufdfa" * 10}
    with empty_database.begin() as connection:
        for number, (patient_id, family_name) in enumerate(names.items()):
            registered_by_an_older_pod(connection, patient_id, f"12345678{number}", family_name)
    migrate(empty_database, db.MIGRATIONS)
    with empty_database.connect() as connection:
        for patient_id, family_name in names.items():
            found = db.search_patients(connection, domain.search_family_name(family_name), [], None, 10)
            assert [patient["id"] for patient in found] == [patient_id]
    assert schema_differences(empty_database, db.metadata) == []


def test_the_whole_records_service_works_on_sqlite(tmp_path, settings_for):
    """`make run` keeps records in a SQLite file: the partial unique indexes and JSON columns must work there too."""
    settings = settings_for("records", f"sqlite:///{tmp_path / 'records.db'}")
    migrate(create_engine(settings.database_url), db.MIGRATIONS)
    app = create_app(settings)
    client = app.test_client()

    def as_role(role):
        return {"Authorization": f"Bearer {issue_token(settings, 'sqlite-tester', [role])}"}

    patient = client.post("/patients", headers=as_role("front_desk"), json={
        "given_name": "Ana", "family_name": "Reyes", "birth_date": "1984-03-09", "sex": "female", "email": "ana@example.org"})
    assert patient.status_code == 201
    patient_id = patient.get_json()["id"]
    drugs = [{"name": "ketorolac", "dose": "0.1", "unit": "mg", "route": "IV", "purpose": "pain"}]
    plans = [client.post(f"/patients/{patient_id}/treatment-plans", json={"infusion_minutes": 120, "drugs": drugs},
                         headers=as_role("neurologist")).get_json()["id"] for _ in range(2)]
    for plan_id in plans:
        assert client.post(f"/treatment-plans/{plan_id}/activate", headers=as_role("neurologist")).status_code == 200
    listed = client.get(f"/patients/{patient_id}/treatment-plans", headers=as_role("nurse")).get_json()
    assert sorted(plan["status"] for plan in listed) == ["active", "retired"]
    assert listed[0]["drugs"][0]["dose"] == "0.1", "a dose stays exact on SQLite"
    assert client.post(f"/patients/{patient_id}/diary", headers=as_role("nurse"),
                       json={"entry_date": "2025-01-01", "headache": True, "worst_intensity": 7}).status_code == 201
    assert client.get(f"/patients/{patient_id}/diary/summary?days=30", headers=as_role("nurse")).status_code == 200
    assert client.get("/patients?family_name=reyes", headers=as_role("front_desk")).get_json()[0]["id"] == patient_id
    audit = client.get("/audit", query_string={"patient_id": patient_id}, headers=as_role("admin")).get_json()
    assert audit["total"] >= 8
    assert client.get("/openapi.json").status_code == 200
    with pytest.raises(sa.exc.IntegrityError), app.extensions["clinic.engine"].begin() as connection:
        connection.execute(db.treatment_plans.update().where(db.treatment_plans.c.id == plans[0]).values(status="active"))
    app.extensions["clinic.engine"].dispose()
