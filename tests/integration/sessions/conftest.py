"""The sessions test modules' fixtures: a migrated sessions database (each module runs once on
PostgreSQL and once on SQLite), and the ward app on it (support.Ward)."""

from __future__ import annotations

import pytest

from tests.integration.sessions.support import migrated_database, open_ward


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def sessions_database(request, tmp_path_factory):
    """A migrated sessions database: each test module runs once on PostgreSQL and once on SQLite."""
    return migrated_database(request, tmp_path_factory, request.param)


@pytest.fixture
def ward(sessions_database, settings_for):
    """An empty ward in New York; the clock at Monday 09:00."""
    ward = open_ward(sessions_database, settings_for)
    yield ward
    ward.engine.dispose()


@pytest.fixture
def racing_ward(sessions_database, settings_for):
    """The ward for tests that send many requests at once: they queue for the connection pool's
    connections, so they are given time to get one."""
    ward = open_ward(sessions_database, settings_for, database_timeout_seconds=30)
    yield ward
    ward.engine.dispose()
