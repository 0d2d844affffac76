"""Scheduling's migrations: they build exactly the tables scheduling.db describes, on PostgreSQL and on
SQLite (what `make run` uses), go down and up again, and carry appointments made before them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from clinic.db import create_engine, migrate, new_id, utcnow
from scheduling import db


def _downgrade(engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _differences(engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), db.metadata)


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database(request, postgres, tmp_path):
    if request.param == "postgresql":
        url = postgres.create_database("scheduling_migrations")
        engine = create_engine(url)
        yield engine
        engine.dispose()
        postgres.drop_database(url)
    else:
        engine = create_engine(f"sqlite:///{tmp_path / 'scheduling.db'}")
        yield engine
        engine.dispose()


def test_the_migrations_build_what_scheduling_db_describes_and_go_down_and_up_again(empty_database):
    migrate(empty_database, db.MIGRATIONS)
    assert _differences(empty_database) == []
    _downgrade(empty_database, "0002")
    assert "booked_by" not in {column["name"] for column in sa.inspect(empty_database).get_columns("appointments")}
    migrate(empty_database, db.MIGRATIONS)
    assert _differences(empty_database) == []


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
