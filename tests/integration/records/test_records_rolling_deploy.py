"""A rolling deploy of migration 0004, on PostgreSQL and on SQLite: the records pods older than it keep
registering patients and correcting family names without family_search, and the worker's job makes
each of them findable by family name again."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import sqlalchemy as sa

from clinic.auth import issue_token
from clinic.db import utcnow
from clinic.migrations import migrate
from clinic.testing import eventually
from clinic.testing.concurrency import running
from clinic.worker import Worker
from records import db, worker
from records.app import create_app
from tests.integration.records.support import registered_by_an_older_pod

REGISTERED_BEFORE = "a1b2c3d4-0000-4000-8000-000000000011"
REGISTERED_DURING = "a1b2c3d4-0000-4000-8000-000000000012"


@pytest.fixture
def serving(empty_database, settings_for):
    """A records app (the new pods) on a database the tests migrate themselves: client.search(family_name) -> ids."""
    settings = settings_for("records", empty_database.url.render_as_string(hide_password=False))
    app = create_app(settings)
    client = app.test_client()
    client.settings = settings

    def search(family_name: str) -> set[str]:
        headers = {"Authorization": f"Bearer {issue_token(settings, 'desk', ['front_desk'])}"}
        response = client.get("/patients", query_string={"family_name": family_name}, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return {patient["id"] for patient in response.get_json()}

    client.search = search
    yield client
    app.extensions["clinic.engine"].dispose()


@pytest.fixture
def records_worker(serving, empty_database):
    """start() runs the records worker as deployed (its relay and its jobs) on the test's database."""
    with ExitStack() as started:
        def start() -> Worker:
            return started.enter_context(running(
                Worker(serving.settings, db.metadata, {}, engine=empty_database, jobs=worker.jobs()), "records-worker"))

        yield start


def test_patients_an_older_pod_writes_during_the_deploy_are_found_once_the_job_has_run(empty_database, serving, records_worker):
    migrate(empty_database, db.MIGRATIONS, revision="0003")
    with empty_database.begin() as connection:
        registered_by_an_older_pod(connection, REGISTERED_BEFORE, "123456782", "Reyes")
    migrate(empty_database, db.MIGRATIONS)
    assert serving.search("reyes") == {REGISTERED_BEFORE}, "the migration folds the patients there are"

    # Old pods still running: a registration without family_search, a correction that leaves the old fold.
    with empty_database.begin() as connection:
        registered_by_an_older_pod(connection, REGISTERED_DURING, "123456790", "Straße")
        connection.execute(sa.text(
            "UPDATE patients SET family_name = 'Núñez', search_name = 'ana nunez', identity_key = 'renamed', updated_at = :now "
            "WHERE id = :id"), {"id": REGISTERED_BEFORE, "now": utcnow()})
    assert serving.search("strasse") == set() and serving.search("nunez") == set()
    assert serving.search("reyes") == {REGISTERED_BEFORE}, "the old fold, until the job runs"

    records_worker()

    def folded() -> bool:  # read from the database: asked over HTTP, the waiting would spend the search allowance
        with empty_database.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(db.patients)
                                      .where(db.patients.c.family_search.in_(["strasse", "nunez"]))).scalar() == 2

    eventually(folded, timeout=20, message="the job folded what the older pods wrote")
    assert serving.search("strasse") == {REGISTERED_DURING} and serving.search("nunez") == {REGISTERED_BEFORE}
    assert serving.search("reyes") == set()
