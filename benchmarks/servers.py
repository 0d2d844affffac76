"""The servers a benchmark measures against, and fresh databases on them.

A server comes from CLINIC_BENCH_RABBITMQ_URL / CLINIC_BENCH_POSTGRES_URL when set; otherwise it is
started from the local Debian packages in a temporary directory. Whatever is started or created is
stopped or dropped by the ExitStack it was given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

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


def start_rabbitmq(stack: ExitStack, directory: Path) -> tuple[str, str]:
    """(AMQP URL, where it came from)."""
    url = os.environ.get("CLINIC_BENCH_RABBITMQ_URL")
    if url:
        return url, f"RabbitMQ from CLINIC_BENCH_RABBITMQ_URL ({without_credentials(url)})"
    rabbit = LocalRabbitMQ(directory / "rabbitmq")
    stack.callback(rabbit.stop)
    return rabbit.start(), f"RabbitMQ started from local packages (127.0.0.1:{rabbit.port}, {directory})"


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
