"""Fixtures for the unit tests of records' use cases: each test gets records' own migrations on a
SQLite file of its own, and units of work over it, with no HTTP and no broker in sight."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from clinic import audit, events
from clinic.auth import Principal
from clinic.db import create_engine, rows_of
from clinic.migrations import migrate
from clinic.unit_of_work import UnitOfWork
from records import SERVICE, db
from records.services import patients
from tests.unit.records.examples import ANA, NOW


@pytest.fixture(scope="session")
def migrated_file(tmp_path_factory):
    """One migrated database, copied for each test: migrating costs more than copying."""
    path = tmp_path_factory.mktemp("records") / "migrated.db"
    engine = create_engine(f"sqlite:///{path}")
    migrate(engine, db.MIGRATIONS)
    engine.dispose()  # the last connection closing folds the write-ahead log into the file
    return path


@pytest.fixture
def engine(migrated_file, tmp_path):
    path = tmp_path / "records.db"
    shutil.copy(migrated_file, path)
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture
def uow(engine):
    """uow(subject=..., roles=...) -> a UnitOfWork as a request by that person would get, its clock at NOW.
    Its audit entry is `.access`."""

    def make(subject: str = "tester", roles: tuple[str, ...] = ("neurologist",), action: str = audit.UPDATE) -> UnitOfWork:
        access = audit.Access(Principal(subject, roles), action, "test", None)
        return UnitOfWork(engine, db.metadata, SERVICE, clock=lambda: NOW, access=access)

    return make


@pytest.fixture
def patient(uow):
    """Ana Reyes, registered."""
    return patients.register_patient(uow(roles=("front_desk",), action=audit.CREATE), dict(ANA))


@pytest.fixture
def published(engine):
    """published(event_type=None) -> the payloads in the outbox, oldest first, each checked against its schema."""

    def read(event_type: str | None = None) -> list[dict]:
        query = sa.select(db.outbox.c.body).order_by(db.outbox.c.position)
        if event_type is not None:
            query = query.where(db.outbox.c.event_type == event_type)
        with engine.connect() as connection:
            return [events.parse(body).data for body in connection.execute(query).scalars()]

    return read


@pytest.fixture
def audit_trail(engine):
    """audit_trail() -> every audit row, oldest first."""

    def read() -> list[dict]:
        with engine.connect() as connection:
            return rows_of(connection, sa.select(db.audit_log).order_by(db.audit_log.c.id))

    return read


@pytest.fixture
def stored(engine):
    """stored(table, id) -> the row as it is in the database now."""

    def read(table: sa.Table, row_id: str) -> dict:
        with engine.connect() as connection:
            return dict(connection.execute(sa.select(table).where(table.c.id == row_id)).mappings().one())

    return read
