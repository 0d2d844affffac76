"""A service's worker process: its consumer in the main thread, its outbox relay in another, and
its periodic jobs (a sessions watch for silent monitors, a notifications reminder) in a third.

The consumer and the relay each run their own pika connection; jobs touch only the database (an
event they cause goes out through the outbox). SIGTERM or SIGINT stops them cleanly, and the
process exits 0 within about 20 s whatever the broker and the database do (compose and Kubernetes
allow 30 s before SIGKILL): the consumer takes no new messages and applies and acks those it holds
(what it cannot settle in time goes back to the queue, see clinic.inbox), the relay waits briefly
for the broker's confirms and marks what was confirmed (the rest goes again after the restart), and
a job's transaction commits or rolls back. A second signal changes nothing.

A loop that dies (or ends without being asked to) is logged at once, the others are stopped, and
the process exits with status 1, so that whatever supervises it (make run, compose, Kubernetes)
starts it again rather than leave a consumer running beside a relay that publishes nothing.

With settings.metrics_port set, the worker serves /metrics and /healthz there (clinic.ops) from a
thread of its own, on settings.metrics_host. It is alive while each of its loops is: its thread runs
and it has beaten (its `last_beat`, renewed at least once a second, also while it waits for a server
to come back) within STUCK_AFTER_SECONDS, or for the consumer within stuck_after(settings): a call
on its blocking broker connection may wait longer than that before it fails (a broker that stopped
answering, or that blocks publishers), and a broker that is slow must not get the worker restarted.
"""

from __future__ import annotations

import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from clinic import bus
from clinic.config import ConfigurationError, Settings
from clinic.db import create_engine, utcnow
from clinic.inbox import Consumer, Handler
from clinic.logs import configure_logging
from clinic.ops import OpsServer
from clinic.outbox import Relay
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# A loop that has not beaten for this long is stuck: well above the one-second beat, and above any
# one database wait (settings.database_deadline_seconds) or broker reconnection delay.
STUCK_AFTER_SECONDS = 30.0
# Beyond the longest broker wait, for the beat before it and the work after it.
_BROKER_WAIT_MARGIN_SECONDS = 10.0
# On a stop, how long the relay and the jobs together may take to end once the consumer has ended
# (they were told at the same time); a loop still running then (a frozen database) ends with the process.
_JOIN_SECONDS = 5.0
# On a stop, the least time the jobs are given from the moment the worker was told, if the consumer
# ended sooner: room for the step a job is in when told (the mail sender's: one SMTP send at its
# 10 s timeout, then marking it sent within the database's 5 s deadline), so that an email the
# server took is not left unmarked, to go again. With the consumer's own worst case (about 15 s,
# clinic.inbox) and _JOIN_SECONDS after it, a stop ends within about 20 s.
_JOBS_SECONDS = 18.0


def stuck_after(settings: Settings) -> float:
    """How long the consumer may go without a beat before it is called stuck: STUCK_AFTER_SECONDS, or
    longer when one call on its blocking broker connection may wait longer before it fails
    (clinic.bus.longest_broker_wait: 110 s with the default 30 s heartbeat)."""
    return max(STUCK_AFTER_SECONDS, bus.longest_broker_wait(settings) + _BROKER_WAIT_MARGIN_SECONDS)


class LoopDied(RuntimeError):
    """One of the worker's loops died or ended unasked; the others were stopped (Worker.run)."""


@dataclass(frozen=True)
class Job:
    """Work the worker does every `every`, in a unit of work of its own (one transaction per run).

    A job must be safe when two workers run it at once (two replicas) and when a run is cut short:
    it decides from what the database says, under the database's constraints and locks.

    `longest` is how long one run may take before the worker calls its jobs stuck, when that can be
    more than STUCK_AFTER_SECONDS (a batch of emails to a slow mail server).

    With `sees_stop`, run is called as run(uow, stopping), `stopping` a threading.Event set when the
    worker is told to stop: a long run ends after the step it is in (see _JOBS_SECONDS)."""

    name: str
    every: timedelta
    run: Callable[..., object]
    longest: timedelta | None = None
    sees_stop: bool = False


# The longest wait between two runs of a job that keeps failing (run_once).
JOB_BACKOFF_SECONDS = 10.0


class _Jobs:
    """The worker's periodic jobs, run one after the other in one thread until stopped."""

    def __init__(self, settings: Settings, engine, metadata: sa.MetaData, jobs: Sequence[Job], clock: Callable[[], datetime]):
        self.settings, self.engine, self.metadata, self.jobs, self.clock = settings, engine, metadata, list(jobs), clock
        self._stopped = threading.Event()
        # time.monotonic() when the loop last showed it was alive: between runs, at least once a second.
        self.last_beat = time.monotonic()
        # The job being run, if any (its run may take longer than a beat).
        self.running: Job | None = None
        # Failed runs in a row, by job name (none once a run succeeds).
        self.failures: dict[str, int] = {}

    def run(self) -> None:
        due = {job.name: 0.0 for job in self.jobs}
        while not self._stopped.is_set():
            self.last_beat = time.monotonic()
            for job in self.jobs:
                if self._stopped.is_set():
                    return
                if time.monotonic() >= due[job.name]:
                    due[job.name] = time.monotonic() + self.run_once(job)
            self._stopped.wait(min(1.0, max(0.05, min(due.values()) - time.monotonic())))

    def run_once(self, job: Job) -> float:
        """Run the job once; the seconds until its next run: its interval, or, after failed runs in a row
        (a database away), twice as long each time up to JOB_BACKOFF_SECONDS, so that a job due every
        fraction of a second does not fill the log while it cannot work."""
        self.running = job
        every = job.every.total_seconds()
        try:
            uow = UnitOfWork(self.engine, self.metadata, self.settings.service, clock=self.clock)
            if job.sees_stop:
                job.run(uow, self._stopped)
            else:
                job.run(uow)
            self.failures.pop(job.name, None)
            return every
        except Exception as exc:  # noqa: BLE001 - a failed run is retried after a delay
            failures = self.failures[job.name] = self.failures.get(job.name, 0) + 1
            delay = max(every, min(JOB_BACKOFF_SECONDS, every * 2 ** failures))
            # The class only: an exception's text may carry a row's values.
            log.error("job %s failed (%s, %d in a row); it runs again in %.1fs", job.name, type(exc).__name__, failures, delay)
            return delay
        finally:
            self.running = None
            self.last_beat = time.monotonic()

    def silent_for(self) -> tuple[float, float]:
        """(seconds since the loop last beat, how long it may be silent): longer while a job with a
        `longest` of its own runs."""
        job = self.running
        allowed = max(STUCK_AFTER_SECONDS, job.longest.total_seconds()) if job is not None and job.longest else STUCK_AFTER_SECONDS
        return time.monotonic() - self.last_beat, allowed

    def stop(self) -> None:
        self._stopped.set()


class Worker:
    def __init__(self, settings: Settings, metadata: sa.MetaData, handlers: dict[str, Handler], engine=None,
                 clock: Callable[[], datetime] = utcnow, jobs: Sequence[Job] = (), ops_host: str | None = None):
        """`clock` gives each event's and each job's unit of work its time: the real one, but in tests.
        `ops_host` is the address the metrics port listens on (settings.metrics_host unless given)."""
        self.settings = settings
        self.engine = engine or create_engine(settings.database_url, settings.database_timeout_seconds,
                                              deadline_seconds=settings.database_deadline_seconds)
        self.relay = Relay(settings, self.engine, metadata.tables["outbox"])
        self.consumer = Consumer(settings, self.engine, metadata, handlers, clock) if handlers else None
        self.jobs = _Jobs(settings, self.engine, metadata, jobs, clock) if jobs else None
        self.ops_host = settings.metrics_host if ops_host is None else ops_host
        self.ops: OpsServer | None = None
        self._stopped = threading.Event()
        self._told_at: float | None = None   # time.monotonic() of the first stop()
        # The loops run() started, those of them that have ended (returned or raised), and those that
        # ended while the worker was meant to run.
        self._started: set[str] = set()
        self._ended: set[str] = set()
        self._died: list[str] = []

    def run(self) -> None:
        """Run the loops until stop(). Raises LoopDied, once every loop has stopped, when one of them
        died or ended unasked."""
        service = self.settings.service
        threads = [self._start_loop("relay", self.relay.run)]
        if self.jobs is not None:
            threads.append(self._start_loop("jobs", self.jobs.run))
        try:
            if self.settings.metrics_port > 0:
                self.ops = OpsServer(self.settings.metrics_port, self.stuck, self.ops_host, name=f"{service}-ops").start()
                log.info("worker %s: /metrics and /healthz on %s:%s", service, self.ops_host, self.ops.port)
            log.info("worker %s started", service)
            if self.consumer is not None:
                self._started.add("consumer")
                self._watched("consumer", self.consumer.run)
            else:
                # Until stop(), which a loop that dies calls too.
                self._stopped.wait()
        finally:
            # First: the loops' normal end from here on is no death.
            self._stopped.set()
            self.relay.stop()
            if self.jobs is not None:
                self.jobs.stop()
            told_at = self._told_at if self._told_at is not None else time.monotonic()
            deadline = max(time.monotonic() + _JOIN_SECONDS, told_at + _JOBS_SECONDS)
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            for thread in threads:
                if thread.is_alive():
                    log.warning("worker %s: the %s did not end in time; leaving it", service, thread.name)
            if self.ops is not None:
                self.ops.stop()
            log.info("worker %s stopped", service)
        if self._died:
            raise LoopDied(f"worker {service}: the {' and the '.join(self._died)} died")

    def _start_loop(self, name: str, loop: Callable[[], None]) -> threading.Thread:
        self._started.add(name)
        thread = threading.Thread(target=self._watched, args=(name, loop), name=f"{self.settings.service}-{name}", daemon=True)
        thread.start()
        return thread

    def _watched(self, name: str, loop: Callable[[], None]) -> None:
        """Run one of the worker's loops; if it raises, or ends while the worker is meant to run, say so
        at once and stop the worker (run() then raises LoopDied)."""
        try:
            loop()
        except BaseException:
            self._ended.add(name)
            self._died.append(name)
            # The formatter keeps a database error's text (which may quote a row) out of the traceback;
            # a thread's uncaught exception would be printed whole, so it stops here.
            log.critical("worker %s: the %s died; stopping the worker, to be started again", self.settings.service, name,
                         exc_info=True)
            self.stop()
            return
        self._ended.add(name)
        if not self._stopped.is_set():
            self._died.append(name)
            log.critical("worker %s: the %s ended while the worker runs; stopping the worker, to be started again",
                         self.settings.service, name)
            self.stop()

    def stuck(self) -> dict[str, str]:
        """What of the worker is dead or stuck, {loop: why}; empty while every loop runs and beats.
        Read from what the loops record (their end, their last beat), never from the database or the broker."""
        if self._died:
            # Stopping because of it: still not alive.
            return {name: "not running" for name in self._died}
        if self._stopped.is_set():
            return {}
        stuck = {}
        for name, loop in (("consumer", self.consumer), ("relay", self.relay), ("jobs", self.jobs)):
            if loop is None or name not in self._started:
                continue
            if name in self._ended:
                stuck[name] = "not running"
                continue
            if name == "jobs":
                silent, allowed = loop.silent_for()
            else:
                allowed = stuck_after(self.settings) if name == "consumer" else STUCK_AFTER_SECONDS
                silent = time.monotonic() - loop.last_beat
            if silent > allowed:
                stuck[name] = f"no sign of life for {silent:.0f} s"
        return stuck

    def stop(self, *_args) -> None:
        if self._told_at is None:
            self._told_at = time.monotonic()
        self._stopped.set()
        self.relay.stop()
        if self.jobs is not None:
            self.jobs.stop()
        if self.consumer is not None:
            self.consumer.stop()


def stop_on_signals(worker: Worker) -> None:
    """SIGTERM (compose, Kubernetes) and SIGINT (Ctrl-C) stop the worker; a second one changes nothing."""
    received: list[str] = []

    def on_signal(signum, _frame) -> None:
        # Only noting it here: the handler runs in the main thread between two steps of the consumer's
        # broker connection, and waking that connection (Consumer.stop) takes a lock the interrupted
        # step may hold. A thread of its own stops the worker.
        received.append(signal.Signals(signum).name)
        threading.Thread(target=_stop, args=(worker, received[-1], len(received)), name="stopping", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _stop(worker: Worker, name: str, count: int) -> None:
    if count == 1:
        log.info("worker %s: %s received; stopping: no new messages, finishing those in hand", worker.settings.service, name)
    else:
        log.info("worker %s: %s received again; already stopping", worker.settings.service, name)
    worker.stop()


def entry_point(main: Callable[[], None]) -> Callable[[], None]:
    """A worker's console script (`<service>-worker`): settings it refuses (ConfigurationError, production's
    refusals among them) end it with one line naming the setting and status 1, as gunicorn's master
    does for the web, rather than a traceback an operator must read to the end."""
    @functools.wraps(main)
    def run() -> None:
        try:
            main()
        except ConfigurationError as exc:
            print(f"refusing to start: {exc}", file=sys.stderr)
            sys.exit(1)
    return run


def run_worker(settings: Settings, metadata: sa.MetaData, handlers: dict[str, Handler], jobs: Sequence[Job] = ()) -> None:
    """Entry point body for every service's worker: `metadata` holds the service's tables, outbox and inbox among them."""
    configure_logging(settings)
    settings.check_safe_to_run()
    worker = Worker(settings, metadata, handlers, jobs=jobs)
    stop_on_signals(worker)
    try:
        worker.run()
    except LoopDied:
        # Logged already, with its traceback. A status other than 0 gets the worker started again.
        sys.exit(1)
