"""Fixtures for the bus tests: a producer and a consumer database on the real PostgreSQL, the probe service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pika
import pytest

from clinic import bus
from clinic.db import create_engine
from clinic.inbox import Consumer
from clinic.outbox import Relay
from clinic.testing.queues import declared_state
from clinic.testing.servers import TESTS_ACCOUNT
from tests.support import probe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_databases(postgres):
    """(producer engine, consumer engine): each side owns its database, as services do."""
    urls = [postgres.create_database("producer"), postgres.create_database("consumer")]
    engines = [create_engine(url) for url in urls]
    for engine in engines:
        probe.metadata.create_all(engine)
    yield engines[0], engines[1], urls
    for engine, url in zip(engines, urls, strict=True):
        engine.dispose()
        postgres.drop_database(url)


class Running:
    """Threads running relays and consumers for one test, stopped at its end."""

    def __init__(self):
        self.items = []

    def start(self, runner, name):
        thread = threading.Thread(target=runner.run, name=name, daemon=True)
        thread.start()
        self.items.append((runner, thread))
        return runner

    def stop(self):
        for runner, _ in self.items:
            runner.stop()
        for _, thread in self.items:
            thread.join(timeout=15)


@pytest.fixture
def running():
    threads = Running()
    yield threads
    threads.stop()


@pytest.fixture
def start_consumer(running, settings_for):
    def start(engine, url, handlers=None, **changes):
        consumer = Consumer(settings_for("probe", url, **changes), engine, probe.metadata, handlers or probe.HANDLERS)
        running.start(consumer, "consumer")
        assert consumer.ready.wait(15), "the consumer did not connect to the broker"
        return consumer
    return start


@pytest.fixture
def start_relay(running, settings_for):
    def start(engine, url):
        return running.start(Relay(settings_for("producer", url), engine, probe.outbox), "relay")
    return start


@pytest.fixture
def broker_channel(broker):
    """A channel on the probe's account (clinic-tests): what it publishes by hand says user_id=PROBE_ACCOUNT."""
    connection = pika.BlockingConnection(pika.URLParameters(broker.url_for("probe")))
    yield connection.channel()
    if connection.is_open:
        connection.close()


# The account the probe's events are published by in the tests.
PROBE_ACCOUNT = TESTS_ACCOUNT


def queue_depth(channel, queue: str) -> int:
    """Messages ready in a queue that must exist (a missing one closes the channel)."""
    return declared_state(channel, queue).ready


@pytest.fixture
def probe_process(settings_for):
    """Start the probe worker as its own process: probe_process(database_url, **env) -> Popen."""
    processes = []

    def start(database_url: str, **extra_env):
        settings = settings_for("probe", database_url)
        env = dict(os.environ, DATABASE_URL=database_url, RABBITMQ_URL=settings.rabbitmq_url,
                   CLINIC_BUS_NAMESPACE=settings.bus_namespace, CLINIC_RELAY_IDLE_SECONDS="0.02",
                   CLINIC_RECONNECT_MAX_SECONDS="1", PYTHONPATH=str(ROOT),
                   CLINIC_BROKER_PUBLISHERS=",".join(f"{prefix}={account}" for prefix, account in settings.broker_publishers),
                   **extra_env)
        process = subprocess.Popen([sys.executable, "-m", "tests.support.probe_worker"], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


__all__ = ["bus", "queue_depth"]


@pytest.fixture
def inbox_outcomes(monkeypatch):
    """The outcome (applied, duplicate, failed) of every delivery consumers handle in this test, in order."""
    from clinic import inbox

    outcomes = []
    original = inbox.apply_once

    def observed(*args, **kwargs):
        outcome = original(*args, **kwargs)
        outcomes.append(outcome)
        return outcome

    monkeypatch.setattr(inbox, "apply_once", observed)
    return outcomes


@pytest.fixture
def gunicorn(tmp_path):
    """scheduling under gunicorn with the shared configuration (clinic.gunicorn_conf), on SQLite: its port."""
    from clinic.localservers import free_port, stop_process_group, wait_for_port
    from clinic.testing.service_apps import sqlite_service_app

    sqlite_service_app("scheduling", tmp_path).extensions["clinic.engine"].dispose()  # migrates the database
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'scheduling.db'}", "CLINIC_VAR_DIR": str(tmp_path),
           "LOG_LEVEL": "WARNING"}
    with open(tmp_path / "gunicorn.log", "wb") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "python:clinic.gunicorn_conf",
                                    "--bind", f"127.0.0.1:{port}", "--workers", "1", "scheduling.app:create_app()"],
                                   env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, 30, process, f"gunicorn (log: {tmp_path / 'gunicorn.log'})")
            yield port
        finally:
            stop_process_group(process)
