"""The scheduling test modules' fixtures: a migrated database (each module runs once on PostgreSQL and
once on SQLite, as `make run` uses), and the clinic app on it (support.Clinic)."""

from __future__ import annotations

import pytest

from scheduling.app import create_app
from scheduling.domain import SchedulingRules
from tests.integration.scheduling.support import MONDAY, NY, OFFICE_HOURS, Clinic, Clock, empty_tables, local, migrated_database


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def scheduling_database(request, tmp_path_factory):
    """A migrated scheduling database: each test module runs once on PostgreSQL and once on SQLite."""
    return migrated_database(request, tmp_path_factory, request.param)


def open_clinic(database_url: str, settings_for, **settings_changes) -> Clinic:
    """An empty clinic open Monday to Friday 08:00-18:00 New York time; the clock at Monday 06:00."""
    settings = settings_for("scheduling", database_url, clinic_timezone="America/New_York", **settings_changes)
    clock = Clock(local(MONDAY, "06:00"))
    clinic = Clinic(create_app(settings, rules=SchedulingRules(timezone=NY), clock=clock), clock, settings)
    empty_tables(clinic.engine)
    response = clinic.call("PUT", "/office-hours", role="admin", json=OFFICE_HOURS)
    assert response.status_code == 200, response.get_data(as_text=True)
    return clinic


@pytest.fixture
def clinic(scheduling_database, settings_for):
    """An empty clinic open Monday to Friday 08:00-18:00 New York time; the clock at Monday 06:00."""
    clinic = open_clinic(scheduling_database, settings_for)
    yield clinic
    clinic.engine.dispose()


@pytest.fixture
def racing_clinic(scheduling_database, settings_for):
    """The clinic for tests that send many requests at once: 50 at once queue for the connection pool's
    15 connections, so they are given time to get one."""
    clinic = open_clinic(scheduling_database, settings_for, database_timeout_seconds=30)
    yield clinic
    clinic.engine.dispose()
