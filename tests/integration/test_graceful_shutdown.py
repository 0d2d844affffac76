"""SIGTERM, as compose and Kubernetes send it before their SIGKILL 30 s later, on the real RabbitMQ and
PostgreSQL: scheduling's worker (its console script) stops mid-stream and loses nothing, doubles
nothing and exits 0 well inside the grace period, also when its batch waits on a lock when the
signal comes (a second signal changes nothing) and when the database does not answer at all; a
relay stopped mid-stream marks only what the broker confirmed; gunicorn answers the request it has
in hand before it exits.

The worker's effect here is scheduling's plan copy, one row per patient, kept from records'
records.treatment_plan.activated. At any moment after a stop, what the worker applied (its inbox)
and what waits in its queue add up to what was published: a message acked before its commit would
be missing, one committed and not acked would be counted twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from clinic.auth import issue_token
from clinic.db import create_engine
from clinic.localservers import free_port, stop_process_group, wait_for_port
from clinic.migrations import migrate
from clinic.outbox import pending_count
from clinic.testing import eventually
from clinic.testing.concurrency import publishing
from clinic.testing.queues import queue_state
from clinic.testing.servers import as_observer
from scheduling.db import MIGRATIONS, tables
from tests.integration.scheduling.support import plan_activated
from tests.support import probe
from tests.support.service_process import ServiceProcess

BIN = Path(sys.executable).parent
# compose's stop_grace_period and Kubernetes' terminationGracePeriodSeconds are 30 s: a stop must
# end well before, with room for the process to exit.
WITHIN_SECONDS = 25
# For the processes of the tests that hold a table lock: a statement waits on it this long at most
# rather than the default 5 s, so that a slow machine's test still holds the lock when the signal comes.
PATIENT_DATABASE = {"CLINIC_DATABASE_DEADLINE_SECONDS": "30"}


@pytest.fixture
def scheduling(postgres, settings_for):
    """(settings, engine) of scheduling on a migrated database of its own."""
    url = postgres.create_database("scheduling")
    engine = create_engine(url)
    migrate(engine, MIGRATIONS)
    yield settings_for("scheduling", url), engine
    engine.dispose()
    postgres.drop_database(url)


class WorkerProcess(ServiceProcess):
    """scheduling-worker as deployed: its own process, on scheduling's broker account, logging to a file."""

    def __init__(self, settings, log_path: Path, env: dict[str, str] | None = None):
        env = dict(os.environ, DATABASE_URL=settings.database_url, RABBITMQ_URL=settings.rabbitmq_url,
                   CLINIC_BUS_NAMESPACE=settings.bus_namespace, CLINIC_RECONNECT_MAX_SECONDS="1", LOG_LEVEL="INFO",
                   **(env or {}))
        super().__init__("scheduling-worker", [str(BIN / "scheduling-worker")], env, log_path)
        self.start()

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds until it exited)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        return self.exited(started)

    def exited(self, since: float) -> tuple[int, float]:
        ended = self.exit_within(WITHIN_SECONDS, since)
        if ended is None:
            pytest.fail(f"the worker did not exit within {WITHIN_SECONDS} s of SIGTERM; its log:\n{self.output()}")
        return ended


@pytest.fixture
def start_worker(tmp_path):
    started: list[WorkerProcess] = []

    def start(settings, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started) + 1}.log", env)
        started.append(worker)
        eventually(lambda: consumers(settings) > 0 or worker.process.poll() is not None, timeout=30,
                   message="the worker to consume its queue")
        assert worker.process.poll() is None, f"the worker ended; its log:\n{worker.output()}"
        return worker

    yield start
    for worker in started:
        worker.kill()


def consumers(settings) -> int:
    return queue_state(as_observer(settings).rabbitmq_url, settings.queue).consumers


def waiting(settings, queue: str | None = None) -> int:
    """Messages ready in the queue (the service's own by default), which must exist."""
    return queue_state(as_observer(settings).rabbitmq_url, queue or settings.queue, must_exist=True).ready


def counts(engine) -> tuple[int, int]:
    """(plan copies, inbox entries)."""
    with engine.connect() as connection:
        copies = connection.execute(sa.select(sa.func.count()).select_from(tables.plan_copies)).scalar_one()
        inbox = connection.execute(sa.select(sa.func.count()).select_from(tables.inbox)).scalar_one()
    return copies, inbox


def waits_on_a_lock(engine, database: str) -> bool:
    """Some session of the database waits for a lock (another's transaction holds it)."""
    with engine.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND wait_event_type = 'Lock'"),
            {"name": database}).scalar_one())


class Stream:
    """records' activation of a plan for one new patient after another, published by a thread until
    `count` are (when given) or until stop(); `published` counts those the broker confirmed."""

    def __init__(self, settings, count: int | None = None):
        self.published = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._send, args=(settings, count), name="records-relay", daemon=True)
        self._thread.start()

    def _send(self, settings, count: int | None) -> None:
        with publishing(settings) as publish:
            while not self._stopped.is_set() and (count is None or self.published < count):
                publish(plan_activated(str(uuid.uuid4())))
                self.published += 1

    def join(self) -> int:
        """Wait until publishing ends; how many were published."""
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "publishing did not end"
        return self.published

    def stop(self) -> int:
        """Stop publishing; how many were published."""
        self._stopped.set()
        return self.join()


def assert_all_applied_once(settings, engine, total: int) -> None:
    eventually(lambda: counts(engine) == (total, total), timeout=60, message=f"all {total} events applied")
    eventually(lambda: waiting(settings) == 0, message="the queue empty")
    assert waiting(settings, settings.dead_letter_queue) == 0
    assert counts(engine) == (total, total)


def test_a_worker_stopped_mid_stream_loses_nothing_doubles_nothing_and_exits_0(scheduling, start_worker):
    settings, engine = scheduling
    worker = start_worker(settings)
    stream = Stream(settings)

    eventually(lambda: counts(engine)[1] >= 100, timeout=30, message="the worker to be mid-stream")
    status, seconds = worker.terminate()
    # The stream goes on past the worker's exit, so the stop surely came in the middle of it.
    at_exit = stream.published
    eventually(lambda: stream.published > at_exit, message="more published after the exit")
    total = stream.stop()
    log = worker.output()
    assert status == 0, log
    assert seconds < WITHIN_SECONDS
    assert "SIGTERM received; stopping" in log and "worker scheduling stopped" in log
    assert "Traceback" not in log

    # Stopped: what it applied and what waits for it add up to what was sent.
    applied = counts(engine)
    assert applied[0] == applied[1] < total
    eventually(lambda: applied[1] + waiting(settings) == total,
               message="the events not applied waiting in the queue, and only those")

    again = start_worker(settings)
    assert_all_applied_once(settings, engine, total)
    assert again.terminate()[0] == 0


def test_a_batch_waiting_on_a_lock_when_sigterm_comes_is_committed_and_acked(scheduling, start_worker):
    settings, engine = scheduling
    total = 50
    database = engine.url.database
    worker = start_worker(settings, PATIENT_DATABASE)

    # Another transaction holds the plan copies (as a long write or a migration would): the worker's
    # batch waits inside its transaction, its deliveries in hand and not yet acked.
    locker = engine.connect()
    try:
        transaction = locker.begin()
        locker.execute(sa.text("LOCK TABLE plan_copies IN SHARE MODE"))
        Stream(settings, total).join()
        eventually(lambda: waits_on_a_lock(engine, database), message="the worker's batch to wait on the lock")

        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        eventually(lambda: "SIGTERM received; stopping" in worker.output(), message="the worker to take the signal")
        # A second one, as an impatient operator or a supervisor might send: it changes nothing.
        worker.process.send_signal(signal.SIGTERM)
        eventually(lambda: "SIGTERM received again; already stopping" in worker.output(), message="the second signal")
        assert worker.process.poll() is None, "the worker ended without finishing its batch"
        transaction.commit()   # well inside the database's deadline (the statement waits 30 s at most)
    finally:
        locker.close()
    status, seconds = worker.exited(started)
    log = worker.output()
    assert status == 0 and seconds < WITHIN_SECONDS, log
    assert "worker scheduling stopped" in log and "Traceback" not in log

    # The batch that waited was committed and acked after the signal, and so were the messages the
    # worker held besides (all were published before the signal: it held as many as its prefetch),
    # rather than returned to the queue at the cost of one of their deliveries. Nothing else was taken.
    applied = counts(engine)
    assert applied[0] == applied[1] >= settings.prefetch
    eventually(lambda: applied[1] + waiting(settings) == total, message="what was not applied waiting in the queue")

    start_worker(settings)
    assert_all_applied_once(settings, engine, total)


def test_a_worker_stopped_while_the_database_does_not_answer_exits_in_time_and_loses_nothing(
        scheduling, start_worker, postgres):
    settings, engine = scheduling
    total = 600
    worker = start_worker(settings)
    sending = Stream(settings, total)
    eventually(lambda: counts(engine)[1] >= 50, timeout=30, message="the worker to be mid-stream")

    with postgres.frozen():
        # Its batch waits on a server that never answers until the database's deadline (5 s) ends the
        # wait; then it tries again, with backoff, and the signal comes. The batch goes back unacked.
        eventually(lambda: "consumer: the database unavailable" in worker.output(), timeout=20,
                   message="the worker to find the database not answering")
        status, seconds = worker.terminate()
    log = worker.output()
    assert status == 0 and seconds < WITHIN_SECONDS, log
    assert "worker scheduling stopped" in log

    sending.join()
    applied = counts(engine)
    assert applied[0] == applied[1] < total
    eventually(lambda: applied[1] + waiting(settings) == total, message="what was not applied waiting in the queue")
    start_worker(settings)
    assert_all_applied_once(settings, engine, total)


def test_a_relay_stopped_mid_stream_marks_only_what_was_confirmed_and_the_rest_goes_after_the_restart(
        probe_databases, start_consumer, probe_process):
    """The relay's side, with the probe (whose effect is not idempotent: a copy applied twice would
    be two rows): every row it marked published before it stopped had reached the consumer, and
    after its restart every event is applied once."""
    producer, consumer, (producer_url, consumer_url) = probe_databases
    total = 10000
    start_consumer(consumer, consumer_url)
    probe.write_events(producer, total)
    # A few rows in flight at a time, so that the stream outlasts the wait below.
    relay = probe_process(producer_url, PROBE_RELAY_ONLY="1", LOG_LEVEL="INFO", CLINIC_RELAY_WINDOW="4",
                          CLINIC_RELAY_BATCH_SIZE="2")
    eventually(lambda: probe.applied_counts(consumer)[0] >= 500, timeout=30, message="the relay to be mid-stream")

    started = time.monotonic()
    relay.send_signal(signal.SIGTERM)
    status = relay.wait(timeout=WITHIN_SECONDS)
    seconds = time.monotonic() - started
    log = relay.stderr.read().decode(errors="replace")
    assert status == 0 and seconds < WITHIN_SECONDS, log[-2000:]
    assert "SIGTERM received; stopping" in log and "worker probe stopped" in log

    left = pending_count(producer, probe.outbox)
    assert 0 < left < total, "the stream had ended before the stop"
    eventually(lambda: probe.applied_counts(consumer)[1] >= total - left,
               message="every row marked published applied by the consumer")

    probe_process(producer_url, PROBE_RELAY_ONLY="1")
    eventually(lambda: pending_count(producer, probe.outbox) == 0, timeout=60, message="the rest published")
    eventually(lambda: probe.applied_counts(consumer) == (total, total), timeout=60, message=f"all {total} applied once")


def test_gunicorn_answers_the_request_in_hand_when_it_is_told_to_stop(scheduling, tmp_path):
    """A request that waits on a lock (a list of rooms while another transaction holds the table) is
    in hand when the master gets SIGTERM: it is answered, and the master exits 0."""
    settings, engine = scheduling
    port = free_port()
    env = dict(os.environ, DATABASE_URL=settings.database_url, RABBITMQ_URL=settings.rabbitmq_url,
               CLINIC_BUS_NAMESPACE=settings.bus_namespace, **PATIENT_DATABASE)
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        master = subprocess.Popen([str(BIN / "gunicorn"), "-c", "python:clinic.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
                                   "--workers", "2", "scheduling.app:create_app()"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    answers: list = []
    try:
        wait_for_port(port, 30, master, "gunicorn")
        headers = {"Authorization": f"Bearer {issue_token(settings, 'desk-1', ['front_desk'])}"}
        locker = engine.connect()
        try:
            transaction = locker.begin()
            locker.execute(sa.text("LOCK TABLE rooms IN ACCESS EXCLUSIVE MODE"))

            def ask():
                try:
                    answers.append(requests.get(f"http://127.0.0.1:{port}/rooms", headers=headers, timeout=30))
                except requests.RequestException as exc:
                    answers.append(exc)
            asking = threading.Thread(target=ask, daemon=True)
            asking.start()
            eventually(lambda: waits_on_a_lock(engine, engine.url.database), message="the request to wait on the lock")

            master.send_signal(signal.SIGTERM)
            eventually(lambda: "Handling signal: term" in log_path.read_text(), message="the master to take the signal")
            started = time.monotonic()
            transaction.commit()
        finally:
            locker.close()
        asking.join(timeout=30)
        status = master.wait(timeout=WITHIN_SECONDS)
        seconds = time.monotonic() - started
    finally:
        stop_process_group(master)
    assert len(answers) == 1 and isinstance(answers[0], requests.Response), f"no answer: {answers}"
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json() == []
    assert status == 0, log_path.read_text()
    assert seconds < WITHIN_SECONDS
    # What it allows a request that is slower than this one: less than the 30 s before the SIGKILL.
    from clinic import gunicorn_conf
    assert gunicorn_conf.graceful_timeout < WITHIN_SECONDS
