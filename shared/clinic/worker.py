"""A service's worker process: its consumer in the main thread, its outbox relay in another, and
its periodic jobs (a sessions watch for silent monitors, a notifications reminder) in a third.

The consumer and the relay each run their own pika connection; jobs touch only the database (an
event they cause goes out through the outbox). SIGTERM or SIGINT stops both cleanly: the
message being handled is finished (or returned to the queue), the relay's batch
is committed or rolled back.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from clinic.config import Settings
from clinic.db import create_engine, utcnow
from clinic.inbox import Consumer, Handler
from clinic.logs import configure_logging
from clinic.outbox import Relay
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """Work the worker does every `every`, in a unit of work of its own (one transaction per run).

    A job must be safe when two workers run it at once (two replicas) and when a run is cut short:
    it decides from what the database says, under the database's constraints and locks."""

    name: str
    every: timedelta
    run: Callable[[UnitOfWork], object]


class _Jobs:
    """The worker's periodic jobs, run one after the other in one thread until stopped."""

    def __init__(self, settings: Settings, engine, metadata: sa.MetaData, jobs: Sequence[Job], clock: Callable[[], datetime]):
        self.settings, self.engine, self.metadata, self.jobs, self.clock = settings, engine, metadata, list(jobs), clock
        self._stopped = threading.Event()

    def run(self) -> None:
        due = {job.name: 0.0 for job in self.jobs}
        while not self._stopped.is_set():
            for job in self.jobs:
                if self._stopped.is_set():
                    return
                if time.monotonic() >= due[job.name]:
                    self.run_once(job)
                    due[job.name] = time.monotonic() + job.every.total_seconds()
            self._stopped.wait(max(0.05, min(due.values()) - time.monotonic()))

    def run_once(self, job: Job) -> None:
        try:
            job.run(UnitOfWork(self.engine, self.metadata, self.settings.service, clock=self.clock))
        except Exception as exc:  # noqa: BLE001 - a failed run is retried at the next interval
            # The class only: an exception's text may carry a row's values.
            log.error("job %s failed (%s); it runs again in %ss", job.name, type(exc).__name__, job.every.total_seconds())

    def stop(self) -> None:
        self._stopped.set()


class Worker:
    def __init__(self, settings: Settings, metadata: sa.MetaData, handlers: dict[str, Handler], engine=None,
                 clock: Callable[[], datetime] = utcnow, jobs: Sequence[Job] = ()):
        """`clock` gives each event's and each job's unit of work its time: the real one, but in tests."""
        self.settings = settings
        self.engine = engine or create_engine(settings.database_url, settings.database_timeout_seconds)
        self.relay = Relay(settings, self.engine, metadata.tables["outbox"])
        self.consumer = Consumer(settings, self.engine, metadata, handlers, clock) if handlers else None
        self.jobs = _Jobs(settings, self.engine, metadata, jobs, clock) if jobs else None
        self._stopped = threading.Event()

    def run(self) -> None:
        relay_thread = threading.Thread(target=self.relay.run, name=f"{self.settings.service}-relay", daemon=True)
        relay_thread.start()
        jobs_thread = None
        if self.jobs is not None:
            jobs_thread = threading.Thread(target=self.jobs.run, name=f"{self.settings.service}-jobs", daemon=True)
            jobs_thread.start()
        log.info("worker %s started", self.settings.service)
        if self.consumer is not None:
            self.consumer.run()
        else:
            self._stopped.wait()
        self.relay.stop()
        if self.jobs is not None:
            self.jobs.stop()
            jobs_thread.join(timeout=10)
        relay_thread.join(timeout=10)
        log.info("worker %s stopped", self.settings.service)

    def stop(self, *_args) -> None:
        self._stopped.set()
        self.relay.stop()
        if self.jobs is not None:
            self.jobs.stop()
        if self.consumer is not None:
            self.consumer.stop()


def run_worker(settings: Settings, metadata: sa.MetaData, handlers: dict[str, Handler], jobs: Sequence[Job] = ()) -> None:
    """Entry point body for every service's worker: `metadata` holds the service's tables, outbox and inbox among them."""
    configure_logging(settings)
    settings.check_safe_to_run()
    worker = Worker(settings, metadata, handlers, jobs=jobs)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
