"""The servers a benchmark measures against, and fresh databases on them.

A server comes from CLINIC_BENCH_RABBITMQ_URL / CLINIC_BENCH_POSTGRES_URL when set; otherwise it is
started from the local Debian packages in a temporary directory. Whatever is started or created is
stopped or dropped by the ExitStack it was given.

The broker has the clinic's accounts (clinic.broker_accounts), so that every consumer and relay a
benchmark runs connects as its service's own account and every event carries a user_id the broker
checked, as in production. A local broker loads them at boot with passwords made for the run, and
topic permissions on the run's own events exchange (each account publishes its own prefix only);
guest stays, an administrator, for the benchmark's own setup and the raw ceilings. A broker given by
CLINIC_BENCH_RABBITMQ_URL (an administrator's URL) must already have the accounts, made from `clinic
broker-definitions`; their passwords are read from CLINIC_BROKER_PASSWORD_<ACCOUNT> as that command
reads them. It has topic permissions on clinic.events only, not on a run's exchange.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from clinic import broker_accounts
from clinic.config import SERVICES, Settings, load_settings, read_broker_passwords
from clinic.localservers import LocalPostgres, LocalRabbitMQ


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}{parts.path if parts.scheme.startswith('postgres') else ''}"


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def scratch_directory(stack: ExitStack, prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    return directory


@dataclass(frozen=True)
class Broker:
    """A broker with the clinic's accounts. `url`: an administrator's (guest on a local broker), for
    the benchmark's own setup, its checks and the raw ceilings; url_for(service): that service's own."""

    url: str
    source: str
    passwords: dict[str, str]

    def url_for(self, service: str) -> str:
        account = broker_accounts.account_of(load_settings(service, env={}), service)
        return broker_accounts.url_for_account(self.url, account, self.passwords[account])

    def settings_for(self, service: str, **changes) -> Settings:
        """The service's default settings on its own broker account, changed by `changes`."""
        return load_settings(service, env={}).with_changes(rabbitmq_url=self.url_for(service), **changes)


def start_rabbitmq(stack: ExitStack, directory: Path, bus_namespace: str) -> Broker:
    """The broker, with an account for every service; topic permissions on `bus_namespace`'s events
    exchange when the broker is started here."""
    settings = load_settings("bench", env={}).with_changes(bus_namespace=bus_namespace)
    accounts = broker_accounts.all_accounts(settings, SERVICES)
    url = os.environ.get("CLINIC_BENCH_RABBITMQ_URL")
    if url:
        return Broker(url, f"RabbitMQ from CLINIC_BENCH_RABBITMQ_URL ({without_credentials(url)}; the accounts "
                           f"it has, no topic permissions on {settings.exchange})",
                      read_broker_passwords(os.environ, accounts))
    passwords = {account: secrets.token_urlsafe(18) for account in accounts}
    definitions = broker_accounts.broker_definitions(settings, passwords, SERVICES, development_guest=True)
    rabbit = LocalRabbitMQ(directory / "rabbitmq", definitions=definitions)
    stack.callback(rabbit.stop)
    return Broker(rabbit.start(), f"RabbitMQ started from local packages (127.0.0.1:{rabbit.port}, {directory}), "
                                  "an account per service", passwords)


def start_postgres(stack: ExitStack, directory: Path) -> tuple[str, str]:
    """(server URL, where it came from)."""
    url = os.environ.get("CLINIC_BENCH_POSTGRES_URL")
    if url:
        url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        return url, f"PostgreSQL from CLINIC_BENCH_POSTGRES_URL ({without_credentials(url)})"
    postgres = LocalPostgres(directory / "postgres")
    stack.callback(postgres.stop)
    return postgres.start(), f"PostgreSQL started from local packages (127.0.0.1:{postgres.port}, {directory})"


def describe_postgres(url: str) -> str:
    """The server's version and durability settings, as every benchmark prints them first."""
    with psycopg.connect(url) as connection:
        version = connection.execute("SHOW server_version").fetchone()[0]
        durability = ", ".join(f"{name}={connection.execute(f'SHOW {name}').fetchone()[0]}" for name in ("fsync", "synchronous_commit"))
    return f"PostgreSQL {version} ({durability})"


def fresh_database(stack: ExitStack, server_url: str, prefix: str = "bench") -> str:
    """A new empty database on the server, dropped when the stack closes; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    return with_database(server_url, name)
