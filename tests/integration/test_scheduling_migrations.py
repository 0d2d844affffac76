"""Scheduling's migrations: they build exactly the tables scheduling.db describes, on PostgreSQL and on
SQLite (what `make run` uses), go down and up again, and carry appointments made before them."""

from __future__ import annotations

import sqlalchemy as sa

from clinic.db import migrate, new_id, utcnow
from clinic.testing.migrations import downgrade, schema_differences
from scheduling import db


def test_the_migrations_build_what_scheduling_db_describes_and_go_down_and_up_again(empty_database):
    migrate(empty_database, db.MIGRATIONS)
    assert schema_differences(empty_database, db.metadata) == []
    downgrade(empty_database, db.MIGRATIONS, "0002")
    assert "booked_by" not in {column["name"] for column in sa.inspect(empty_database).get_columns("appointments")}
    migrate(empty_database, db.MIGRATIONS)
    assert schema_differences(empty_database, db.metadata) == []


def test_appointments_made_before_who_was_recorded_keep_working(empty_database):
    migrate(empty_database, db.MIGRATIONS, revision="0002")
    now = utcnow()
    room, appointment = new_id(), new_id()
    with empty_database.begin() as connection:
        connection.execute(sa.text("INSERT INTO rooms (id, name, kind, active, created_at, updated_at) "
                                   "VALUES (:id, 'Infusion 1', 'infusion', true, :now, :now)"), {"id": room, "now": now})
        connection.execute(sa.text(
            "INSERT INTO appointments (id, patient_id, kind, status, room_id, starts_at, ends_at, room_blocked_until, "
            "patient_busy_until, booked_at, updated_at) VALUES (:id, :patient, 'infusion', 'booked', :room, :now, :end, :end, :end, "
            ":now, :now)"), {"id": appointment, "patient": new_id(), "room": room, "now": now, "end": now.replace(year=now.year + 1)})
    migrate(empty_database, db.MIGRATIONS)
    with empty_database.connect() as connection:
        kept = db.appointment_view(connection, appointment)
    assert kept["status"] == "booked" and kept["room_name"] == "Infusion 1"
    assert (kept["booked_by"], kept["updated_by"]) == (None, None)
