"""Finding a real RabbitMQ and PostgreSQL for tests, in a fixed order:

1. URLs from CLINIC_TEST_RABBITMQ_URL / CLINIC_TEST_POSTGRES_URL;
2. testcontainers, when a Docker engine answers;
3. servers started from the locally installed Debian packages, in a temporary directory.

A server that cannot be had is an error with a message saying what to install or set.
Fault tests stop and start the servers, or freeze them (every process stopped with SIGSTOP, or
the container paused: connections stay open and nothing answers); that needs one of the last two
(a server given by URL is not ours to stop).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


class _Server:
    """One server for the test session, from the first source that can give it."""

    name: str
    url_variable: str
    local_server: type

    def __init__(self):
        self.source = None
        self.url = None
        self._local = None
        self._container = None
        self._tmp = None

    def start(self):
        url = os.environ.get(self.url_variable)
        if url:
            self.source, self.url = FROM_ENVIRONMENT, url
        elif docker_engine_answers():
            self._container = self._start_container()
            self.source, self.url = FROM_TESTCONTAINERS, self._container_url()
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix=f"clinic-test-{self.name}-"))
            self._local = self.local_server(self._tmp)
            self.source, self.url = FROM_LOCAL_PACKAGES, self._local.start()
        return self

    def _require_control(self, what: str) -> None:
        if not (self._local or self._container):
            raise ServerNotAvailable(f"this fault test stops {what}: run it with a server the tests start, not {self.url_variable}")

    def close(self) -> None:
        if self._local:
            self._local.stop()
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._container:
            self._container.stop()


class Broker(_Server):
    name, url_variable, local_server = "rabbitmq", "CLINIC_TEST_RABBITMQ_URL", LocalRabbitMQ

    def _start_container(self):
        from testcontainers.community.rabbitmq import RabbitMqContainer

        return RabbitMqContainer("rabbitmq:3.13-alpine").start()

    def _container_url(self) -> str:
        params = self._container.get_connection_params()
        return f"amqp://guest:guest@{params.host}:{params.port}/%2F"

    def stop_broker(self) -> None:
        """Take the broker down (every connection drops) for a fault test."""
        self._require_control("the broker")
        if self._local:
            self._local.stop_app()
        else:
            self._container.exec(["rabbitmqctl", "stop_app"])

    def start_broker(self) -> None:
        if self._local:
            self._local.start_app()
        elif self._container:
            self._container.exec(["rabbitmqctl", "start_app"])


class Database(_Server):
    name, url_variable, local_server = "postgres", "CLINIC_TEST_POSTGRES_URL", LocalPostgres

    def _start_container(self):
        from testcontainers.community.postgres import PostgresContainer

        return PostgresContainer("postgres:15-alpine", driver=None).start()

    def _container_url(self) -> str:
        return self._container.get_connection_url()

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
        self._require_control("PostgreSQL")
        if self._local:
            self._local.stop()
        else:
            self._container.get_wrapped_container().pause()

    def start_server(self) -> None:
        if self._local:
            self._local.restart()
        elif self._container:
            self._container.get_wrapped_container().unpause()

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """PostgreSQL frozen for the block, thawed after it whatever happens: every process of the
        cluster stopped (SIGSTOP), or its container paused. Its kernel still accepts connections and
        acknowledges packets, so clients see a server that holds every connection open and never
        answers, as with a hung disk or a host swapping."""
        self._require_control("PostgreSQL (it freezes the server's processes)")
        stopped = self._freeze()
        try:
            yield
        finally:
            self._thaw(stopped)

    def _freeze(self) -> list[int]:
        if self._container:
            self._container.get_wrapped_container().pause()
            return []
        postmaster = int((self._local.data / "postmaster.pid").read_text().split()[0])
        # The postmaster first, so that it forks no new backend while its children are being stopped.
        os.kill(postmaster, signal.SIGSTOP)
        stopped = [postmaster]
        for pid in _children(postmaster):
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass  # a backend that was ending
        return stopped

    def _thaw(self, stopped: list[int]) -> None:
        if self._container:
            self._container.get_wrapped_container().unpause()
            return
        for pid in reversed(stopped):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (a PostgreSQL cluster's backends and helpers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name, in parentheses, may hold spaces: the fields after it are split.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"
