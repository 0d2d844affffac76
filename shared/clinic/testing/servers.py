"""Finding a real RabbitMQ and PostgreSQL for tests, in a fixed order:

1. URLs from CLINIC_TEST_RABBITMQ_URL / CLINIC_TEST_POSTGRES_URL;
2. testcontainers, when a Docker engine answers;
3. servers started from the locally installed Debian packages, in a temporary directory.

A server that cannot be had is an error with a message saying what to install or set.
Fault tests stop and start the servers, or freeze them (every process stopped with SIGSTOP, or
the container paused: connections stay open and nothing answers); that needs one of the last two
(a server given by URL is not ours to stop).

The broker gets the clinic's accounts once per session (clinic.broker_accounts): one per service,
the operations account, and `clinic-tests` for the test-only services (the probe), so that every
integration test publishes with a user_id the broker checks. A local broker loads them at boot; a
container imports them with rabbitmqctl; a broker given by URL through its management API
(CLINIC_TEST_RABBITMQ_MANAGEMENT_URL, else port 15672 of the same host with the URL's credentials).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import Request, urlopen

import psycopg

from clinic import broker_accounts, bus
from clinic.config import OPERATOR_ACCOUNT, SERVICES, load_settings
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
            self._local = self._make_local(self._tmp)
            self.source, self.url = FROM_LOCAL_PACKAGES, self._local.start()
        self._started()
        return self

    def _make_local(self, directory: Path):
        return self.local_server(directory)

    def _started(self) -> None:
        """Called once the server answers."""

    def _require_control(self, what: str) -> None:
        if not (self._local or self._container):
            raise ServerNotAvailable(f"this fault test stops {what}: run it with a server the tests start, not {self.url_variable}")

    def close(self) -> None:
        if self._local:
            self._local.stop()
            shutil.rmtree(self._tmp, ignore_errors=True)
        if self._container:
            self._container.stop()


# The account of every service the tests make up (the probe, its producer): it publishes the probe's events.
TESTS_ACCOUNT = "clinic-tests"
TEST_PREFIXES = ("probe",)


def _test_settings():
    base = load_settings("tests", env={})
    return base.with_changes(broker_publishers=(*base.broker_publishers, *((p, TESTS_ACCOUNT) for p in TEST_PREFIXES)))


_TEST_SETTINGS = _test_settings()
# A broker of the test session's own: the passwords guard nothing (and guest stays, for tests that
# publish by hand what no service would).
_TEST_PASSWORDS = {account: f"{account}-test-password"
                   for account in (*broker_accounts.all_accounts(_TEST_SETTINGS, SERVICES), TESTS_ACCOUNT)}


def as_publisher_of(settings, event_type: str):
    """`settings` on the test broker's account that owns the event type's prefix, so that a test can
    publish another service's event as that service's relay would (the consumer checks who published)."""
    owner = dict(settings.broker_publishers).get(event_type.partition(".")[0])
    if owner not in _TEST_PASSWORDS:
        return settings
    return settings.with_changes(rabbitmq_url=broker_accounts.url_for_account(settings.rabbitmq_url, owner,
                                                                                _TEST_PASSWORDS[owner]))


def as_observer(settings):
    """`settings` on the test broker's clinic-tests account, which may bind a queue of its own to any
    event (a service's account may declare only its own queues)."""
    if bus.broker_user(settings) not in _TEST_PASSWORDS:
        return settings
    return settings.with_changes(rabbitmq_url=broker_accounts.url_for_account(settings.rabbitmq_url, TESTS_ACCOUNT,
                                                                                _TEST_PASSWORDS[TESTS_ACCOUNT]))


class Broker(_Server):
    name, url_variable, local_server = "rabbitmq", "CLINIC_TEST_RABBITMQ_URL", LocalRabbitMQ

    settings = _TEST_SETTINGS
    passwords = _TEST_PASSWORDS

    def definitions(self) -> dict:
        """Every account, with the permissions clinic.broker_accounts gives them; clinic-tests may do
        anything but publish as another account."""
        definitions = broker_accounts.broker_definitions(self.settings, self.passwords, SERVICES,
                                                         development_guest=True)
        definitions["users"].append(broker_accounts.user(TESTS_ACCOUNT, self.passwords[TESTS_ACCOUNT], ""))
        definitions["permissions"].append({"user": TESTS_ACCOUNT, "vhost": "/", "configure": ".*", "write": ".*",
                                           "read": ".*"})
        return definitions

    def url_for(self, service: str) -> str:
        """The broker URL of the account a service connects as (clinic-tests for a made-up service)."""
        account = broker_accounts.account_of(self.settings, service) if service in SERVICES else TESTS_ACCOUNT
        return broker_accounts.url_for_account(self.url, account, self.passwords[account])

    @property
    def operator_url(self) -> str:
        return broker_accounts.url_for_account(self.url, OPERATOR_ACCOUNT, self.passwords[OPERATOR_ACCOUNT])

    def _make_local(self, directory: Path):
        return self.local_server(directory, definitions=self.definitions())

    def _started(self) -> None:
        if self._container:
            self._import_into_container(self.definitions())
        elif not self._local:
            self._import_through_management(self.definitions())

    def restrict_topics(self, settings) -> None:
        """Topic permissions on `settings`' events exchange (a test's namespace), as deploy sets them on
        clinic.events: each service's account publishes its own prefix only."""
        self.import_definitions({"topic_permissions": broker_accounts.topic_permissions(self.settings, settings.exchange)})

    def import_definitions(self, definitions: dict) -> None:
        if self._local:
            self._local.import_definitions(definitions)
        elif self._container:
            self._import_into_container(definitions)
        else:
            self._import_through_management(definitions)

    def _import_into_container(self, definitions: dict) -> None:
        text = json.dumps(definitions).replace("'", "'\\''")
        code, output = self._container.exec(
            ["sh", "-c", f"printf '%s' '{text}' > /tmp/clinic-definitions.json && "
                         "rabbitmqctl import_definitions /tmp/clinic-definitions.json"])
        if code != 0:
            raise ServerNotAvailable(f"the test broker's container did not take the clinic's accounts: {output!r}")

    def _import_through_management(self, definitions: dict) -> None:
        parts = urlsplit(self.url)
        address = os.environ.get("CLINIC_TEST_RABBITMQ_MANAGEMENT_URL") or f"http://{parts.hostname}:15672"
        credentials = base64.b64encode(f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()).decode()
        request = Request(f"{address.rstrip('/')}/api/definitions", data=json.dumps(definitions).encode(), method="POST",
                          headers={"content-type": "application/json", "authorization": f"Basic {credentials}"})
        try:
            with urlopen(request, timeout=30):
                pass
        except OSError as exc:
            raise ServerNotAvailable(
                f"the broker at CLINIC_TEST_RABBITMQ_URL needs the clinic's accounts, created through its management API "
                f"at {address} (set CLINIC_TEST_RABBITMQ_MANAGEMENT_URL, with an administrator in the URL): {exc}") from exc

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
