"""pytest fixtures for tests on a real RabbitMQ and a real PostgreSQL.

  broker            the session's RabbitMQ (see clinic.testing.servers for how it is found)
  postgres          the session's PostgreSQL server
  module_database   a fresh PostgreSQL database for one test module (its URL)
  empty_database    an engine on a new empty database, once on PostgreSQL and once on SQLite (for migrations)
  bus_namespace     a unique exchange/queue namespace for one test, so tests never see each other's messages
  settings_for      Settings for a service on the test broker and a given database

A server that cannot be had fails the test with the reason; nothing is skipped.
"""

from __future__ import annotations

import uuid

import pytest

from clinic.config import load_settings
from clinic.db import create_engine
from clinic.testing.servers import Broker, Database

# What the integration tests ran against, shown at the end of the run.
_started: dict[str, str] = {}


@pytest.fixture(scope="session")
def broker():
    try:
        server = Broker().start()
    except Exception as exc:  # noqa: BLE001 - the reason is shown in the failure
        pytest.fail(f"no RabbitMQ for the integration tests: {exc}", pytrace=False)
    _started["RabbitMQ"] = f"real server from {server.source} ({server.url.split('@')[-1]})"
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres():
    try:
        server = Database().start()
        version = server.version()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"no PostgreSQL for the integration tests: {exc}", pytrace=False)
    _started["PostgreSQL"] = f"{version}, real server from {server.source} ({server.url.split('@')[-1]})"
    yield server
    server.close()


@pytest.fixture(scope="module")
def module_database(postgres):
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, postgres, tmp_path):
    if request.param == "postgresql":
        url = postgres.create_database("migrations")
        engine = create_engine(url)
        yield engine
        engine.dispose()
        postgres.drop_database(url)
    else:
        engine = create_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield engine
        engine.dispose()


@pytest.fixture
def bus_namespace():
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings_for(broker, bus_namespace):
    """settings_for(service, database_url, **changes) -> Settings on the test broker and namespace."""

    def make(service: str, database_url: str, **changes):
        base = load_settings(service, env={})
        defaults = {
            "database_url": database_url,
            # The service's own account: every test publishes with a user_id the broker checks.
            "rabbitmq_url": broker.url_for(service),
            "broker_publishers": broker.settings.broker_publishers,
            "operator_rabbitmq_url": broker.operator_url,
            "bus_namespace": bus_namespace,
            "relay_idle_seconds": 0.02,
            "reconnect_max_seconds": 1.0,
            # The default retry delays (1, 5, 30, 120 s) would outlast any test that waits for a dead letter.
            "retry_delays_seconds": (0.1, 0.2),
        }
        return base.with_changes(**{**defaults, **changes})

    return make


def pytest_terminal_summary(terminalreporter):
    if _started:
        terminalreporter.section("clinic test servers")
        for name, description in _started.items():
            terminalreporter.write_line(f"{name}: {description}")
