"""The sessions worker's watch: both jobs wired, each running in its own unit of work on sessions' own
database (an empty ward raises nothing)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from clinic.db import create_engine
from clinic.migrations import migrate
from clinic.unit_of_work import UnitOfWork
from sessions import SERVICE, db
from sessions.domain.rules import SessionRules
from sessions.worker import jobs


def test_the_watch_looks_for_silent_monitors_and_unacknowledged_alerts_on_an_empty_ward(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'sessions.db'}")
    migrate(engine, db.MIGRATIONS)
    watch = jobs(SessionRules(), timedelta(seconds=30))
    assert [job.name for job in watch] == ["silent monitors", "unacknowledged alerts"]
    for job in watch:
        assert job.every == timedelta(seconds=30)
        job.run(UnitOfWork(engine, db.metadata, SERVICE, clock=lambda: datetime(2030, 1, 7, 14, tzinfo=timezone.utc)))
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(db.metadata.tables["alerts"])).scalar_one() == 0
    engine.dispose()
