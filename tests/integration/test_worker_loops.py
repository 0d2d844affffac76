"""A worker is whole or it is not running: when one of its loops (consumer, relay, jobs) dies, the
worker stops the others and its process exits with status 1, so that its supervisor (make run,
compose, Kubernetes) starts it again. A normal stop is no death. Its metrics port listens on
CLINIC_METRICS_HOST."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from clinic.localservers import free_port
from clinic.testing import eventually
from clinic.testing.concurrency import running
from clinic.worker import Job, LoopDied, Worker
from tests.support import probe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_worker(probe_databases, settings_for):
    """probe_worker(**changes) -> a probe Worker (consumer, relay and a jobs loop), not started."""
    _, engine, (_, url) = probe_databases

    def make(**changes) -> Worker:
        settings = settings_for("probe", url, **changes)
        return Worker(settings, probe.metadata, probe.HANDLERS, engine=engine,
                      jobs=[Job("now and then", timedelta(hours=1), lambda uow: None)])

    return make


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list]:
    """worker.run() in a thread; the list receives what it raised, or None once it returned."""
    outcome: list = []

    def run():
        try:
            worker.run()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def deaths_logged(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.CRITICAL]


def test_a_relay_that_dies_stops_the_whole_worker_which_says_so(probe_worker, caplog):
    port = free_port()
    worker = probe_worker(metrics_port=port, metrics_host="127.0.0.1")

    def broken_relay():
        raise RuntimeError("the relay broke")

    worker.relay.run = broken_relay
    thread, outcome = run_in_thread(worker)
    thread.join(timeout=20)
    assert not thread.is_alive(), "the worker kept running without its relay"
    [raised] = outcome
    assert isinstance(raised, LoopDied) and "relay" in str(raised)
    assert worker.stuck() == {"relay": "not running"}
    with pytest.raises(OSError):   # its metrics port too: nothing of it is left running
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert deaths_logged(caplog) == ["worker probe: the relay died; stopping the worker, to be started again"]


def test_a_consumer_that_dies_is_the_only_loop_said_to_have_died(probe_worker, caplog):
    worker = probe_worker()

    def broken_consumer():
        raise RuntimeError("the consumer broke")

    worker.consumer.run = broken_consumer
    thread, outcome = run_in_thread(worker)
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert isinstance(outcome[0], LoopDied)
    # The relay and the jobs loop ended because the worker stopped: no death of theirs.
    assert deaths_logged(caplog) == ["worker probe: the consumer died; stopping the worker, to be started again"]


def test_a_worker_stopped_as_asked_logs_no_death_and_returns(probe_worker, caplog):
    worker = probe_worker()
    thread, outcome = run_in_thread(worker)
    assert worker.consumer.ready.wait(15)
    worker.stop()
    thread.join(timeout=20)
    assert outcome == [None]
    assert deaths_logged(caplog) == []


def test_a_worker_process_whose_relay_dies_exits_with_status_1(probe_databases, settings_for):
    _, _, (_, url) = probe_databases
    settings = settings_for("probe", url)
    script = (
        "from clinic import outbox\n"
        "def broken(self):\n"
        "    raise RuntimeError('the relay broke')\n"
        "outbox.Relay.run = broken\n"
        "from tests.support import probe_worker\n"
        "probe_worker.main()\n"
    )
    env = dict(os.environ, DATABASE_URL=url, RABBITMQ_URL=settings.rabbitmq_url, CLINIC_BUS_NAMESPACE=settings.bus_namespace,
               PYTHONPATH=str(ROOT))
    finished = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1, finished.stderr[-2000:]
    assert "the relay died; stopping the worker" in finished.stderr
    assert "worker probe stopped" in finished.stderr


def test_the_metrics_port_listens_on_the_configured_host(probe_worker):
    port = free_port()
    worker = probe_worker(metrics_port=port, metrics_host="127.0.0.1")
    with running(worker):
        eventually(lambda: worker.ops is not None, message="the metrics port")
        assert worker.ops.address == ("127.0.0.1", port)
