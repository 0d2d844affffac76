"""Scheduling's migrations: they build exactly the tables scheduling.db.tables describes, on PostgreSQL and
on SQLite (what `make run` uses), go down and up again, and carry appointments and plan copies made before them.
(The rooms made before room versions, and how sessions hears of them: test_room_changes.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from clinic.db import new_id, utcnow
from clinic.migrations import migrate
from clinic.testing.migrations import downgrade, schema_differences
from scheduling.db import MIGRATIONS, appointments, metadata, plan_copies
from scheduling.domain import copy_after_activation


# SQLite cannot reflect the index on lower(name), so Alembic leaves it out of the comparison there (and
# says so); PostgreSQL compares it, and the HTTP tests hold names unique whatever their case on both.
@pytest.mark.filterwarnings("ignore:.*expression-based index uq_rooms_name_any_case")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_the_migrations_build_what_scheduling_db_describes_and_go_down_and_up_again(empty_database):
    migrate(empty_database, MIGRATIONS)
    assert schema_differences(empty_database, metadata) == []
    downgrade(empty_database, MIGRATIONS, "0002")
    assert "version" not in {column["name"] for column in sa.inspect(empty_database).get_columns("rooms")}
    assert "booked_by" not in {column["name"] for column in sa.inspect(empty_database).get_columns("appointments")}
    assert "audit_log" not in sa.inspect(empty_database).get_table_names()
    migrate(empty_database, MIGRATIONS)
    assert schema_differences(empty_database, metadata) == []


def test_appointments_made_before_who_was_recorded_keep_working(empty_database):
    migrate(empty_database, MIGRATIONS, revision="0002")
    now = utcnow()
    room, appointment = new_id(), new_id()
    with empty_database.begin() as connection:
        connection.execute(sa.text("INSERT INTO rooms (id, name, kind, active, created_at, updated_at) "
                                   "VALUES (:id, 'Infusion 1', 'infusion', true, :now, :now)"), {"id": room, "now": now})
        connection.execute(sa.text(
            "INSERT INTO appointments (id, patient_id, kind, status, room_id, starts_at, ends_at, room_blocked_until, "
            "patient_busy_until, booked_at, updated_at) VALUES (:id, :patient, 'infusion', 'booked', :room, :now, :end, :end, :end, "
            ":now, :now)"), {"id": appointment, "patient": new_id(), "room": room, "now": now, "end": now.replace(year=now.year + 1)})
    migrate(empty_database, MIGRATIONS)
    with empty_database.connect() as connection:
        kept = appointments.shown(connection, appointment)
    assert kept["status"] == "booked" and kept["room_name"] == "Infusion 1"
    assert (kept["booked_by"], kept["updated_by"]) == (None, None)
    assert kept["version"] == 1


def test_plan_copies_made_before_versions_take_unversioned_events_until_a_versioned_one(empty_database):
    migrate(empty_database, MIGRATIONS, revision="0004")
    patient = new_id()
    with empty_database.begin() as connection:
        connection.execute(sa.text("INSERT INTO plan_copies (patient_id, plan_id, infusion_minutes, changed_at) "
                                   "VALUES (:patient, :plan, 150, :now)"), {"patient": patient, "plan": new_id(), "now": utcnow()})
    migrate(empty_database, MIGRATIONS)
    with empty_database.begin() as connection:
        assert plan_copies.get(connection, patient).version == 0
        # An event still queued from before versions is applied as it arrives, as copies were kept then...
        assert plan_copies.keep(connection, copy_after_activation(patient, new_id(), 180, None), utcnow())
        newer = copy_after_activation(patient, new_id(), 180, 1)
        assert plan_copies.keep(connection, newer, utcnow())
        assert plan_copies.get(connection, patient) == newer
        # ...but never over a versioned copy.
        assert not plan_copies.keep(connection, copy_after_activation(patient, new_id(), 120, None), utcnow())
        assert plan_copies.get(connection, patient) == newer


def test_rooms_whose_names_differ_only_in_case_stop_the_migration_naming_them(empty_database):
    migrate(empty_database, MIGRATIONS, revision="0005")
    with empty_database.begin() as connection:
        for name in ("Infusion 1", "infusion 1", "Exam A"):
            connection.execute(sa.text("INSERT INTO rooms (id, name, kind, active, created_at, updated_at) "
                                       "VALUES (:id, :name, 'infusion', true, :now, :now)"),
                               {"id": new_id(), "name": name, "now": utcnow()})
    with pytest.raises(RuntimeError, match="differ only in case.*infusion 1"):
        migrate(empty_database, MIGRATIONS)


def test_going_down_puts_appointments_in_progress_back_to_checked_in_which_they_were_before(empty_database):
    migrate(empty_database, MIGRATIONS)
    now, room, appointment = utcnow(), new_id(), new_id()
    with empty_database.begin() as connection:
        connection.execute(sa.text("INSERT INTO rooms (id, name, kind, active, created_at, updated_at) "
                                   "VALUES (:id, 'Infusion 1', 'infusion', true, :now, :now)"), {"id": room, "now": now})
        connection.execute(sa.text(
            "INSERT INTO appointments (id, patient_id, kind, status, room_id, starts_at, ends_at, room_blocked_until, "
            "patient_busy_until, booked_at, updated_at, started_at) VALUES (:id, :patient, 'infusion', 'in_progress', :room, :now, "
            ":end, :end, :end, :now, :now, :now)"), {"id": appointment, "patient": new_id(), "room": room, "now": now,
                                                     "end": now.replace(year=now.year + 1)})
    downgrade(empty_database, MIGRATIONS, "0006")
    with empty_database.connect() as connection:
        assert connection.execute(sa.text("SELECT status FROM appointments")).scalar_one() == "checked_in"
    migrate(empty_database, MIGRATIONS)
    with empty_database.connect() as connection:
        assert appointments.shown(connection, appointment)["status"] == "checked_in"
