"""Scheduling' tables and queries."""

from pathlib import Path

import sqlalchemy as sa

from clinic.db import messaging_tables

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
