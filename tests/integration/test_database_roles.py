"""One database per service and two roles each, as deploy/postgres-init.sh makes them: the owner runs
`clinic migrate` (with CLINIC_DATABASE_SERVICE_ROLE), and the service's login role, which the web app and
the worker use, can then do the service's work and nothing more: only read and add to the PHI audit,
only read Alembic's revision, no DDL, and no way into another service's database.

On the test PostgreSQL, with role and database names of this test's own (the init script's are fixed).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from clinic import audit, cli
from clinic.auth import Principal
from clinic.db import create_engine
from clinic.unit_of_work import UnitOfWork
from records import db
from records.services import patients

ANA = {"given_name": "Ana", "family_name": "Reyes", "birth_date": date(1984, 3, 9), "sex": "female",
       "email": "ana@example.org", "phone": None, "preferred_contact": "email", "email_opt_out": False}


def _as(url: str, user: str, database: str) -> str:
    """The test server's URL, logged in as `user` (a password the trust login ignores) to `database`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{user}:not-checked@{parts.hostname}:{parts.port}", f"/{database}", "", ""))


def _service_database(server_url: str, database: str) -> dict[str, str]:
    """What deploy/postgres-init.sh does for one service, under this test's names."""
    owner, login = f"{database}_owner", f"{database}_service"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'not-checked'").format(sql.Identifier(owner)))
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'not-checked'").format(sql.Identifier(login)))
        connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(owner)))
        connection.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
        connection.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(login)))
    with psycopg.connect(_as(server_url, "postgres", database), autocommit=True) as connection:
        connection.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))
        connection.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    return {"database": database, "owner": owner, "login": login,
            "owner_url": _as(server_url, owner, database), "login_url": _as(server_url, login, database)}


def _drop(server_url: str, names: dict[str, str]) -> None:
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(names["database"])))
        for role in (names["login"], names["owner"]):
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def records_database(postgres, broker, bus_namespace, monkeypatch):
    """The records database migrated by its owner with CLINIC_DATABASE_SERVICE_ROLE, as compose's
    records-migrate runs it; and a sessions database beside it."""
    tag = uuid.uuid4().hex[:8]
    records, sessions = (_service_database(postgres.url, f"{name}_{tag}") for name in ("records", "sessions"))
    try:
        monkeypatch.setenv("DATABASE_URL", records["owner_url"])
        monkeypatch.setenv("CLINIC_DATABASE_SERVICE_ROLE", records["login"])
        monkeypatch.setenv("RABBITMQ_URL", broker.url_for("records"))
        monkeypatch.setenv("CLINIC_BUS_NAMESPACE", bus_namespace)
        assert cli.main(["migrate", "records"]) == 0
        # Twice, as every deploy does: the grants come out the same.
        assert cli.main(["migrate", "records"]) == 0
        yield records, sessions
    finally:
        _drop(postgres.url, records)
        _drop(postgres.url, sessions)


def _refused(url: str, statement: str) -> str:
    with psycopg.connect(url, autocommit=True) as connection:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refusal:
            connection.execute(statement)
    return str(refusal.value)


def test_the_service_role_does_the_services_work(records_database):
    records, _ = records_database
    engine = create_engine(records["login_url"])
    try:
        access = audit.Access(Principal("desk-1", ("front_desk",)), audit.CREATE, "patient", None)
        patient = patients.register_patient(UnitOfWork(engine, db.metadata, "records", access=access), dict(ANA))
        with engine.begin() as connection:
            # What the relay and the views do: read, lock a row for a change, mark the outbox published.
            assert patients.existing_patient(connection, patient["id"], for_update=True)["given_name"] == "Ana"
            marked = connection.execute(db.outbox.update().where(db.outbox.c.published_at.is_(None))
                                        .values(published_at=datetime.now(timezone.utc)))
            assert marked.rowcount == 2   # registered, contact changed
            trail = connection.execute(sa.select(db.audit_log.c.subject, db.audit_log.c.patient_id)).all()
        assert [tuple(row) for row in trail] == [("desk-1", patient["id"])]
    finally:
        engine.dispose()


def test_the_service_role_only_reads_and_adds_to_the_audit_log(records_database):
    records, _ = records_database
    url = records["login_url"]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO audit_log (occurred_at, subject, roles, action, resource, outcome) "
                           "VALUES (now(), 'desk-1', 'front_desk', 'read', 'patient', 'allowed')")
        assert connection.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1
    assert "audit_log" in _refused(url, "UPDATE audit_log SET subject = 'someone else'")
    assert "audit_log" in _refused(url, "DELETE FROM audit_log")
    assert "audit_log" in _refused(url, "TRUNCATE audit_log")


def test_the_service_role_reads_the_revision_and_changes_no_schema(records_database):
    records, _ = records_database
    url = records["login_url"]
    with psycopg.connect(url, autocommit=True) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert "alembic_version" in _refused(url, "UPDATE alembic_version SET version_num = 'none'")
    assert "alembic_version" in _refused(url, "DELETE FROM alembic_version")
    assert "schema public" in _refused(url, "CREATE TABLE smuggled (id int)")
    _refused(url, "ALTER TABLE patients ADD COLUMN smuggled text")
    _refused(url, "DROP TABLE patients")


def test_a_service_role_cannot_connect_to_another_services_database(records_database, postgres):
    records, sessions = records_database
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_as(postgres.url, records["login"], sessions["database"])).close()
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_as(postgres.url, sessions["login"], records["database"])).close()


def test_granting_needs_postgresql(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'records.db'}")
    monkeypatch.setenv("CLINIC_DATABASE_SERVICE_ROLE", "records_service")
    assert cli.main(["migrate", "records"]) == 2
    assert "CLINIC_DATABASE_SERVICE_ROLE" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
