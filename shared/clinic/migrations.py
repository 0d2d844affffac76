"""A service's database schema: its Alembic migrations, applied from code or `clinic migrate SERVICE`,
the outbox and inbox every service's first migration creates, and what the service's login role may do
with the tables (grant_service_role)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
import tenacity

from clinic.db import create_engine, without_deadline

log = logging.getLogger("clinic.migrations")

# Tables the service's login role may only read and add to (the PHI access audit), or only read
# (Alembic's revision, which only migrations move).
APPEND_ONLY_TABLES = ("audit_log",)
READ_ONLY_TABLES = ("alembic_version",)


def migrate(engine_or_url, migrations_dir: Path | str, revision: str = "head") -> None:
    """Bring a service's database to a revision with its Alembic migrations.

    Migrations are exempt from the engine's deadline and statement timeout (clinic.db.without_deadline):
    one may legitimately run for minutes."""
    from alembic import command
    from alembic.config import Config

    made_here = isinstance(engine_or_url, str)
    engine = create_engine(engine_or_url, deadline_seconds=None) if made_here else engine_or_url
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    try:
        with without_deadline(engine) as connection, connection.begin():
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if made_here:
            engine.dispose()


def run_migrations(metadata: sa.MetaData) -> None:
    """The body of every service's migrations/env.py: online migrations on the given connection."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        url = context.config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("run migrations with `clinic migrate SERVICE` or give sqlalchemy.url")
        engine = create_engine(url, deadline_seconds=None)
        try:
            with engine.begin() as connection:
                _configure_and_run(context, connection, metadata)
        finally:
            engine.dispose()
        return
    _configure_and_run(context, connection, metadata)


def _configure_and_run(context, connection, metadata) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def create_messaging_tables(op) -> None:
    """For a service's first migration: the outbox and inbox, written once for all services.

    It spells the columns out rather than reusing messaging_tables(): a migration must keep creating
    what it created on the day it was written, whatever the current table definitions become.
    """
    op.create_table(
        "outbox",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "position"])
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )



def grant_service_role(engine, role: str) -> None:
    """Give the service's login role (web and worker) what the service needs in its database, and no
    more, run by the database's owner after the migrations: CONNECT (taken from PUBLIC); USAGE on the
    public schema (CREATE taken from PUBLIC); SELECT, INSERT, UPDATE, DELETE on the service's tables,
    but only SELECT, INSERT on audit_log and only SELECT on alembic_version; USAGE, SELECT on sequences.

    Each table's grants are revoked first and given again, so that running it twice, or after a
    migration, leaves exactly this (a privilege granted by hand is taken back). PostgreSQL only."""
    from psycopg import sql

    with engine.connect() as connection, connection.begin():
        cursor = connection.connection.driver_connection.cursor()
        who = sql.Identifier(role)
        database = sql.Identifier(connection.execute(sa.text("SELECT current_database()")).scalar_one())
        cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        cursor.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, who))
        cursor.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        cursor.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(who))
        cursor.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(who))
        tables = connection.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        for table in tables:
            if table in READ_ONLY_TABLES:
                allowed = "SELECT"
            elif table in APPEND_ONLY_TABLES:
                allowed = "SELECT, INSERT"
            else:
                allowed = "SELECT, INSERT, UPDATE, DELETE"
            name = sql.Identifier("public", table)
            cursor.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(name, who))
            cursor.execute(sql.SQL("GRANT " + allowed + " ON TABLE {} TO {}").format(name, who))
        cursor.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(who))
        cursor.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(who))


def wait_for(what: str, check: Callable[[], object], seconds: float, every: float = 2.0,
             passing: Callable[[BaseException], bool] = lambda exc: True) -> None:
    """Call `check` until it stops raising, at most `seconds`: the migration container may start before
    its database or broker answers (podman-compose does not wait for their health checks). Only errors
    `passing` calls passing are waited out (not a wrong password: that is raised at once). One log line
    per failed attempt, naming `what` (never a password) and the error's kind; the last error is raised."""
    def say(state: tenacity.RetryCallState) -> None:
        left = seconds - state.seconds_since_start
        log.warning("%s does not answer yet (attempt %d, %s); %s", what, state.attempt_number,
                    type(state.outcome.exception()).__name__,
                    f"trying again for {left:.0f} s more" if left > 0 else "giving up")

    tenacity.Retrying(stop=tenacity.stop_after_delay(seconds), wait=tenacity.wait_fixed(every),
                      retry=tenacity.retry_if_exception(passing), after=say, reraise=True)(check)


def where(url: str) -> str:
    """host:port/path of a database or broker URL, for a log line: no user name, no password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or '-'}{parts.path}"
