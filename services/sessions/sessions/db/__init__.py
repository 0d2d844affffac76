"""Sessions' tables and queries.

    tables       rooms and plans (copies), sessions, the plan's drugs per session, medications,
                 pain scores, visitors (migration 0003)
    monitoring   devices, readings, alerts, alert episodes (migration 0004)
    care         medications and the patients' medication ledgers, pain scores, visitors (migration 0005)

The migrations are the schema of record; tests/integration/sessions/test_migrations.py holds these
Table objects equal to them.
"""

from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

from sessions.db import care, monitoring  # noqa: E402,F401  (their tables join the metadata)
from sessions.db.tables import audit_log, inbox, metadata, outbox  # noqa: E402

__all__ = ["MIGRATIONS", "metadata", "outbox", "inbox", "audit_log"]
