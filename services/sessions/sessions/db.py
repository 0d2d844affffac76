"""Sessions' tables and queries."""

from pathlib import Path

import sqlalchemy as sa

from clinic.audit import audit_table
from clinic.db import messaging_tables

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit_table(metadata)
