"""The worker's periodic jobs: each run in a unit of work of its own, a failed run retried after its
interval (waiting twice as long each time while it keeps failing), the thread stopped when the worker stops."""

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


def test_a_job_that_keeps_failing_waits_twice_as_long_each_time_up_to_a_limit_and_its_interval_once_it_works(tmp_path):
    # A job due every 0.2 s (the mail sender) must not log five failures a second while the database is away.
    from clinic.worker import JOB_BACKOFF_SECONDS

    works = False

    def job(uow):
        if not works:
            raise ConnectionError("the database is away")

    runner = _jobs(tmp_path, Job("send", timedelta(seconds=0.2), job))
    sending = runner.jobs[0]
    assert [runner.run_once(sending) for _ in range(8)] == [0.4, 0.8, 1.6, 3.2, 6.4, JOB_BACKOFF_SECONDS,
                                                           JOB_BACKOFF_SECONDS, JOB_BACKOFF_SECONDS]
    works = True
    assert runner.run_once(sending) == 0.2
    works = False
    assert runner.run_once(sending) == 0.4, "the count starts again after a run that worked"
    hourly = Job("hourly", timedelta(hours=1), job)
    assert runner.run_once(hourly) == 3600, "a job that runs seldom is never run sooner for failing"
