"""Sessions keeps a copy of the rooms from scheduling.room.changed: every room added or changed is told,
with a version one more at each change, in the change's own transaction; the rooms that existed before
rooms had versions are told once by the migration that gave them one, and reach the bus through the
relay like any other event. On PostgreSQL and on SQLite (and the real RabbitMQ for the relay)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from clinic import events
from clinic.db import new_id, utcnow
from clinic.events import ROOM_CHANGED
from clinic.migrations import migrate
from clinic.outbox import Relay, outbox_row
from clinic.testing import assert_error, eventually
from clinic.testing.listening import listening
from clinic.unit_of_work import UnitOfWork
from scheduling import SERVICE
from scheduling.db import MIGRATIONS, metadata, rooms, tables
from scheduling.services.rooms import change_room
from tests.integration.scheduling.support import MONDAY, local


def told(clinic) -> list[tuple[str, int, str, str, bool]]:
    """What the outbox says of rooms, oldest first: (room_id, room_version, name, kind, active)."""
    return [(e["data"]["room_id"], e["data"]["room_version"], e["data"]["name"], e["data"]["kind"], e["data"]["active"])
            for e in clinic.events(ROOM_CHANGED)]


def patch(clinic, room: dict, **changes):
    return clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", json=changes)


def test_each_room_added_or_changed_is_told_with_its_next_version(clinic):
    infusion = clinic.room("Infusion 1")
    exam = clinic.room("Exam A", kind="exam")
    assert (infusion["version"], exam["version"]) == (1, 1)
    assert patch(clinic, infusion, name="Infusion One").get_json()["version"] == 2
    assert patch(clinic, infusion, active=False).get_json()["version"] == 3
    assert patch(clinic, infusion, active=True, kind="exam").get_json()["version"] == 4
    assert clinic.call("GET", f"/rooms/{infusion['id']}").get_json()["version"] == 4

    assert told(clinic) == [
        (infusion["id"], 1, "Infusion 1", "infusion", True),
        (exam["id"], 1, "Exam A", "exam", True),
        (infusion["id"], 2, "Infusion One", "infusion", True),
        (infusion["id"], 3, "Infusion One", "infusion", False),
        (infusion["id"], 4, "Infusion One", "exam", True),
    ]
    # Each event passes the shared schema as sessions' worker loads it.
    for body in clinic.events(ROOM_CHANGED):
        events.schema_for(ROOM_CHANGED, 1).load(body["data"])


def test_a_change_to_what_the_room_is_already_or_a_refused_one_tells_nothing(clinic):
    room = clinic.room("Infusion 1")
    clinic.room("Infusion 2")
    clinic.booked(clinic.plan(), local(MONDAY, "09:00"), room_id=room["id"])
    before = told(clinic)

    unchanged = patch(clinic, room, name=" Infusion 1 ", kind="infusion", active=True)
    assert unchanged.status_code == 200 and unchanged.get_json() == room
    assert_error(patch(clinic, room, name="infusion 2"), 409)                 # the name is taken
    assert_error(patch(clinic, room, active=False), 409)                      # the booking would be stranded
    assert_error(patch(clinic, room, kind="exam"), 409)
    assert clinic.call("GET", f"/rooms/{room['id']}").get_json() == room
    assert told(clinic) == before


# --- the rooms from before versions ------------------------------------------------------------


def rooms_from_before_versions(engine) -> list[dict]:
    """A scheduling database as it was before room versions (revision 0006), with two rooms in it."""
    migrate(engine, MIGRATIONS, revision="0006")
    made = [{"id": new_id(), "name": "Infusion 1", "kind": "infusion", "active": True},
            {"id": new_id(), "name": "Exam A", "kind": "exam", "active": False}]
    with engine.begin() as connection:
        for room in made:
            connection.execute(sa.text("INSERT INTO rooms (id, name, kind, active, created_at, updated_at) "
                                       "VALUES (:id, :name, :kind, :active, :now, :now)"), {**room, "now": utcnow()})
    return made


def test_rooms_from_before_versions_are_version_1_and_the_migration_tells_each_once(empty_database):
    made = rooms_from_before_versions(empty_database)
    migrate(empty_database, MIGRATIONS)

    with empty_database.connect() as connection:
        assert [rooms.get(connection, room["id"])["version"] for room in made] == [1, 1]
        rows = [dict(row._mapping) for row in connection.execute(sa.select(tables.outbox).order_by(tables.outbox.c.position))]
    assert len(rows) == 2 and {row["event_type"] for row in rows} == {ROOM_CHANGED}
    announced = [events.parse(row["body"]) for row in rows]
    assert sorted((str(e.data["room_id"]), e.data["name"], e.data["kind"], e.data["active"], e.data["room_version"]) for e in announced) \
        == sorted((room["id"], room["name"], room["kind"], room["active"], 1) for room in made)
    # The row and its envelope are what the outbox writes for any event, so the relay and consumers take them as such.
    written_now = outbox_row(SERVICE, ROOM_CHANGED, {**json.loads(rows[0]["body"])["data"]})
    for row, event in zip(rows, announced, strict=True):
        assert (row["event_id"], row["published_at"], row["attempts"]) == (event.id, None, 0)
        assert set(json.loads(row["body"])) == set(json.loads(written_now["body"]))
        assert (event.producer, event.version) == (SERVICE, 1)


def test_a_new_database_has_no_rooms_to_tell(empty_database):
    migrate(empty_database, MIGRATIONS)
    with empty_database.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(tables.outbox)).scalar_one() == 0


def test_the_rooms_from_before_versions_reach_the_bus_before_their_next_change(empty_database, settings_for):
    made = rooms_from_before_versions(empty_database)
    migrate(empty_database, MIGRATIONS)
    settings = settings_for(SERVICE, empty_database.url.render_as_string(hide_password=False))
    infusion = made[0]
    with listening(settings, ROOM_CHANGED) as received:
        change_room(UnitOfWork(empty_database, metadata, SERVICE), infusion["id"], {"name": "Infusion One"})
        relay = Relay(settings, empty_database, tables.outbox)
        assert relay.publish_pending() == 3

        def all_three():
            bodies = [events.parse(body) for _, body in received()]
            assert len(bodies) == 3, f"{len(bodies)} of 3 on the bus"
            return bodies

        on_the_bus = eventually(all_three, message="the rooms on the bus")
    by_room = [(str(e.data["room_id"]), e.data["room_version"], e.data["name"]) for e in on_the_bus]
    assert sorted(by_room[:2]) == sorted((room["id"], 1, room["name"]) for room in made)
    assert by_room[2] == (infusion["id"], 2, "Infusion One")
    assert relay.publish_pending() == 0
