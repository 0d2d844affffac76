"""Fixtures for records' integration tests: a migrated records database per test module, once on
PostgreSQL and once on SQLite (what `make run` uses), and a test client on it with tokens for any role.

Helpers that are not fixtures (registering a patient, reading the outbox) are in support.py.
"""

from __future__ import annotations

import pytest

from clinic.auth import issue_token
from clinic.db import create_engine
from clinic.migrations import migrate
from records import db
from records.app import create_app

DATABASES = ["postgresql", "sqlite"]


def _migrated(url: str) -> str:
    engine = create_engine(url)
    try:
        migrate(engine, db.MIGRATIONS)
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="module", params=DATABASES)
def records_database(request, tmp_path_factory):
    """The URL of a migrated records database for one test module; every test runs on both kinds."""
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database("records")
        yield _migrated(url)
        postgres.drop_database(url)
    else:
        yield _migrated(f"sqlite:///{tmp_path_factory.mktemp('records') / 'records.db'}")


@pytest.fixture
def records_engine(records_database):
    engine = create_engine(records_database)
    yield engine
    engine.dispose()


def _serving(settings):
    app = create_app(settings)
    client = app.test_client()
    client.settings = settings
    client.application = app

    def as_role(*roles, subject="tester"):
        return {"Authorization": f"Bearer {issue_token(settings, subject, roles)}"}

    client.as_role = as_role
    return client


@pytest.fixture
def client(records_database, settings_for):
    """A test client of the records app on the module's database: `client.as_role("nurse")` gives headers."""
    client = _serving(settings_for("records", records_database))
    yield client
    client.application.extensions["clinic.engine"].dispose()


@pytest.fixture
def postgres_client(module_database, settings_for):
    """A test client on a records database on the session's PostgreSQL only, for tests that stop that server."""
    client = _serving(settings_for("records", _migrated(module_database)))
    yield client
    client.application.extensions["clinic.engine"].dispose()
