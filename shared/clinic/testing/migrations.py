"""Checking a service's migrations: down to a revision, and what the database differs in from its tables.

A service's migrations must build exactly the tables its db module describes, on PostgreSQL and on
SQLite, and go down and up again; schema_differences([]) after migrating says the first.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine


def downgrade(engine: Engine, migrations_dir: Path | str, revision: str) -> None:
    """Take the database down to `revision` with the service's migrations (clinic.migrations.migrate goes up)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def schema_differences(engine: Engine, metadata: sa.MetaData) -> list:
    """What Alembic would change to make the database match `metadata`: [] when they agree (types included)."""
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
