"""Sessions' migrations: they build exactly the tables sessions.db describes, on PostgreSQL and on
SQLite, go down and up again, and the database itself keeps a room to one started session."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clinic.db import new_id, utcnow
from clinic.migrations import migrate
from clinic.testing.migrations import downgrade, schema_differences
from sessions.db import MIGRATIONS, metadata

LIFECYCLE_TABLES = {"rooms", "plans", "sessions", "session_drugs"}


def test_the_migrations_build_what_sessions_db_describes_and_go_down_and_up_again(empty_database):
    migrate(empty_database, MIGRATIONS)
    assert schema_differences(empty_database, metadata) == []
    downgrade(empty_database, MIGRATIONS, "0002")
    assert not LIFECYCLE_TABLES & set(sa.inspect(empty_database).get_table_names())
    assert "audit_log" in sa.inspect(empty_database).get_table_names()
    migrate(empty_database, MIGRATIONS)
    assert schema_differences(empty_database, metadata) == []


def _session(connection, room_id: str, status: str) -> None:
    now = utcnow()
    connection.execute(sa.text(
        "INSERT INTO sessions (id, appointment_id, patient_id, room_id, room_name, planned_minutes, status, "
        "appointment_starts_at, appointment_ends_at, checked_in_at, created_at, updated_at) "
        "VALUES (:id, :appointment, :patient, :room, 'Infusion 1', 150, :status, :now, :now, :now, :now, :now)"),
        {"id": new_id(), "appointment": new_id(), "patient": new_id(), "room": room_id, "status": status, "now": now})


def test_the_database_refuses_a_second_started_session_in_a_room_whoever_writes_it(empty_database):
    migrate(empty_database, MIGRATIONS)
    room_id = new_id()
    with empty_database.begin() as connection:
        _session(connection, room_id, "started")
        for status in ("waiting", "waiting", "completed", "aborted"):
            _session(connection, room_id, status)     # only started sessions are held to one per room
        _session(connection, new_id(), "started")
    with pytest.raises(sa.exc.IntegrityError), empty_database.begin() as connection:
        _session(connection, room_id, "started")
    with pytest.raises(sa.exc.IntegrityError), empty_database.begin() as connection:
        _session(connection, room_id, "finished")   # not a status
