"""The worker's periodic jobs: each run in a unit of work of its own, a failed run retried at the next
interval, the thread stopped when the worker stops."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from clinic.config import load_settings
from clinic.db import create_engine, messaging_tables
from clinic.testing import eventually
from clinic.worker import Job, _Jobs

MOMENT = datetime(2030, 1, 7, 14, tzinfo=timezone.utc)


def _jobs(tmp_path, *jobs: Job) -> _Jobs:
    metadata = sa.MetaData()
    messaging_tables(metadata)
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    metadata.create_all(engine)
    return _Jobs(load_settings("sessions", env={}), engine, metadata, jobs, clock=lambda: MOMENT)


def test_a_job_runs_in_a_unit_of_work_with_the_worker_clock_and_again_after_its_interval(tmp_path):
    seen = []
    ran_twice = threading.Event()

    def job(uow):
        with uow:
            seen.append((uow.now, uow.connection.execute(sa.text("SELECT 1")).scalar_one()))
        if len(seen) >= 2:
            ran_twice.set()

    runner = _jobs(tmp_path, Job("tick", timedelta(milliseconds=50), job))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert ran_twice.wait(5), "the job did not run a second time"
    finally:
        runner.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert seen[0] == (MOMENT, 1)


def test_a_failed_run_is_logged_by_its_class_only_and_the_next_job_still_runs(tmp_path, caplog):
    ran = []

    def failing(uow):
        raise ValueError("patient Ana Reyes")

    runner = _jobs(tmp_path, Job("failing", timedelta(seconds=60), failing), Job("next", timedelta(seconds=60), ran.append))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        eventually(lambda: ran, timeout=5, message="the job after a failing one")
    finally:
        runner.stop()
        thread.join(5)
    assert "ValueError" in caplog.text and "Ana" not in caplog.text
