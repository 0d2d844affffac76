"""Finding a real RabbitMQ and PostgreSQL for tests, in a fixed order:

1. URLs from CLINIC_TEST_RABBITMQ_URL / CLINIC_TEST_POSTGRES_URL;
2. testcontainers, when a Docker engine answers;
3. servers started from the locally installed Debian packages, in a temporary directory.

A server that cannot be had is an error with a message saying what to install or set.
Fault tests stop and start the servers; that needs one of the last two (a server given
by URL is not ours to stop).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg

from clinic.localservers import LocalPostgres, LocalRabbitMQ, ServerNotAvailable

FROM_ENVIRONMENT, FROM_TESTCONTAINERS, FROM_LOCAL_PACKAGES = "environment", "testcontainers", "local packages"


def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


class Broker:
    def __init__(self):
        self.source = None
        self.url = None
        self._local = None
        self._container = None
        self._tmp = None

    def start(self) -> Broker:
        url = os.environ.get("CLINIC_TEST_RABBITMQ_URL")
        if url:
            self.source, self.url = FROM_ENVIRONMENT, url
        elif docker_engine_answers():
            from testcontainers.community.rabbitmq import RabbitMqContainer

            self._container = RabbitMqContainer("rabbitmq:3.13-alpine").start()
            params = self._container.get_connection_params()
            self.source = FROM_TESTCONTAINERS
            self.url = f"amqp://guest:guest@{params.host}:{params.port}/%2F"
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="clinic-test-rabbitmq-"))
            self._local = LocalRabbitMQ(self._tmp)
            self.source = FROM_LOCAL_PACKAGES
            self.url = self._local.start()
        return self

    def stop_broker(self) -> None:
        """Take the broker down (every connection drops) for a fault test."""
        if self._local:
            self._local.stop_app()
        elif self._container:
            self._container.exec(["rabbitmqctl", "stop_app"])
        else:
            raise ServerNotAvailable("this fault test stops the broker: run it with a broker the tests start, not CLINIC_TEST_RABBITMQ_URL")

    def start_broker(self) -> None:
        if self._local:
            self._local.start_app()
        elif self._container:
            self._container.exec(["rabbitmqctl", "start_app"])

    def close(self) -> None:
        if self._local:
            self._local.stop()
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._container:
            self._container.stop()


class Database:
    def __init__(self):
        self.source = None
        self.url = None
        self._local = None
        self._container = None
        self._tmp = None

    def start(self) -> Database:
        url = os.environ.get("CLINIC_TEST_POSTGRES_URL")
        if url:
            self.source, self.url = FROM_ENVIRONMENT, url
        elif docker_engine_answers():
            from testcontainers.community.postgres import PostgresContainer

            self._container = PostgresContainer("postgres:15-alpine", driver=None).start()
            self.source = FROM_TESTCONTAINERS
            self.url = self._container.get_connection_url()
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="clinic-test-postgres-"))
            self._local = LocalPostgres(self._tmp)
            self.source = FROM_LOCAL_PACKAGES
            self.url = self._local.start()
        return self

    def version(self) -> str:
        with psycopg.connect(self.url, autocommit=True) as connection:
            return connection.execute("SHOW server_version").fetchone()[0]

    def create_database(self, prefix: str = "test") -> str:
        """A fresh, empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return _with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop_server(self) -> None:
        """Stop PostgreSQL for a fault test (connections are refused until start_server)."""
        if self._local:
            self._local.stop()
        elif self._container:
            self._container.get_wrapped_container().pause()
        else:
            raise ServerNotAvailable("this fault test stops PostgreSQL: run it with a server the tests start, not CLINIC_TEST_POSTGRES_URL")

    def start_server(self) -> None:
        if self._local:
            self._local.restart()
        elif self._container:
            self._container.get_wrapped_container().unpause()

    def close(self) -> None:
        if self._local:
            self._local.stop()
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._container:
            self._container.stop()


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"
