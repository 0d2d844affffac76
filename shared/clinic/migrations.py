"""A service's database schema: its Alembic migrations, applied from code or `clinic migrate SERVICE`,
and the outbox and inbox every service's first migration creates."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from clinic.db import create_engine, without_deadline


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

