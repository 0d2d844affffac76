"""What bookings are made against, part one: the rooms. An admin adds them and changes them.

A room with appointments still to come can neither leave use nor change kind (the 409 lists them,
to be moved or cancelled first). Room names are unique whatever their case ("Infusion 1" and
"infusion 1" are one room to the people booking it).

A room is version 1 when added and one more at each change. Each add and change writes
scheduling.room.changed (the room as it is now, with its version) in its own transaction: sessions
keeps a copy of the rooms from it.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from clinic.db import new_id, violated_constraint
from clinic.errors import Conflict, NotFound
from clinic.events import ROOM_CHANGED
from clinic.unit_of_work import UnitOfWork
from scheduling import domain, payloads
from scheduling.db import appointments, locks, rooms


def add_room(uow: UnitOfWork, name: str, kind: str, active: bool = True) -> dict:
    """A new room: `infusion` (a private room with a recliner) or `exam` (office visits)."""
    with uow:
        room = {"id": new_id(), "name": name.strip(), "kind": kind, "active": active, "created_at": uow.now, "updated_at": uow.now,
                "version": 1}
        uow.audit.concerning(resource_id=room["id"])
        _unless_name_taken(uow.connection, lambda: rooms.insert(uow.connection, room), room["name"])
        uow.add_event(ROOM_CHANGED, payloads.room_changed_payload(room))
        return room


def change_room(uow: UnitOfWork, room_id: str, changes: dict) -> dict:
    """Rename a room, take it out of use or back, or change its kind. Refused (409) while it would
    strand appointments still to come. A change to what the room is already changes nothing."""
    if "name" in changes:
        changes = {**changes, "name": changes["name"].strip()}
    with uow:
        connection = uow.connection
        locks.calendar_change(connection)                                     # lock 1, exclusive
        room = locks.room_row(connection, room_id)                            # lock 4
        if room is None:
            raise NotFound("no room with this id", {"room_id": room_id})
        changes = domain.room_changes(room, changes)
        if not changes:
            return room
        stops_taking = changes.get("active") is False or changes.get("kind", room["kind"]) != room["kind"]
        if stops_taking and room["active"]:
            domain.refuse_stranding("appointments are still booked in this room; move or cancel them first",
                                    appointments.still_to_come(connection, uow.now, room_id=room_id))
        # The row is locked (lock 4): the version read with it is the one to follow.
        changed = {**room, **changes, "updated_at": uow.now, "version": room["version"] + 1}
        _unless_name_taken(connection, lambda: rooms.update(connection, room_id, **changes, updated_at=uow.now, version=changed["version"]),
                           changes.get("name"), except_id=room_id)
        uow.add_event(ROOM_CHANGED, payloads.room_changed_payload(changed))
        return changed


def _unless_name_taken(connection: Connection, write: Callable[[], None], name: str | None, except_id: str | None = None) -> None:
    """Write, or a 409 naming the room that has this name already (in any case). The unique index is
    the rule; the write sits in a savepoint so that the transaction can still say which room it was."""
    try:
        with connection.begin_nested():
            write()
    except IntegrityError as exc:
        existing = rooms.named(connection, name) if name is not None and violated_constraint(exc) is not None else None
        if existing is None or existing["id"] == except_id:
            raise
        raise Conflict(f"a room named {existing['name']} exists already", {"room_id": existing["id"]}) from None
