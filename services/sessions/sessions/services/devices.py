"""Bedside monitors: an admin registers one for an infusion room, revokes it, or moves it to another room.

A device's token is shown once, when it is registered, and kept only as its SHA-256
(clinic.auth.hash_device_token); it can do one thing, post readings for its room (services.vitals).
A device can only be registered for, or moved to, a room sessions knows from scheduling.room.changed
that is an infusion room in use.

A device is not moved out of a room while a session is started there: that session would lose its
monitor without a word (no silent-monitor alert is raised for a room without a device). It may be
moved into a room with a started session (a spare for a broken monitor); readings it measured
before it arrived there are refused, so nothing it measured in its old room lands in the new one.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from clinic.auth import hash_device_token, new_device_token
from clinic.db import new_id
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.events import ROOM_KINDS
from clinic.unit_of_work import UnitOfWork
from sessions.db import monitoring

INFUSION = ROOM_KINDS[0]


def shown(device: dict) -> dict:
    """A device as the API shows it: active unless revoked, never its token's hash."""
    return {**{key: value for key, value in device.items() if key != "token_hash"}, "active": device["revoked_at"] is None}


def _infusion_room(connection: Connection, room_id: str) -> dict:
    room = monitoring.room(connection, room_id)
    if room is None:
        raise RuleViolation("no such room is known to sessions", {"room_id": ["no room with this id"]})
    if room["kind"] != INFUSION:
        raise RuleViolation(f"{room['name']} is not an infusion room", {"room_id": [f"a {room['kind']} room"]})
    if not room["active"]:
        raise RuleViolation(f"{room['name']} is not in use", {"room_id": ["a room taken out of use"]})
    return room


def register_device(uow: UnitOfWork, room_id: str, name: str, by: str) -> dict:
    """A new monitor for an infusion room in use: the device, with its token (shown this once)."""
    token = new_device_token()
    with uow:
        connection = uow.connection
        room = _infusion_room(connection, room_id)
        device = {"id": new_id(), "name": name.strip(), "room_id": room_id, "token_hash": hash_device_token(token),
                  "registered_at": uow.now, "registered_by": by, "assigned_at": uow.now, "revoked_at": None, "revoked_by": None,
                  "updated_at": uow.now, "updated_by": by, "version": 1}
        uow.audit.concerning(resource_id=device["id"])
        monitoring.insert_device(connection, device)
        return {**shown(device), "room_name": room["name"], "token": token}


def _locked_device(connection: Connection, device_id: str) -> dict:
    device = monitoring.device(connection, device_id, lock=True)
    if device is None:
        raise NotFound("no device with this id", {"device_id": device_id})
    if device["revoked_at"] is not None:
        raise Conflict("this device is revoked", {"device_id": device_id, "revoked_at": device["revoked_at"].isoformat()})
    return device


def revoke_device(uow: UnitOfWork, device_id: str, by: str) -> dict:
    """Revoke a device (lost, broken, retired): its token is refused from now on. 409 when revoked already."""
    with uow:
        connection = uow.connection
        device = _locked_device(connection, device_id)
        changes = {"revoked_at": uow.now, "revoked_by": by, "updated_at": uow.now, "updated_by": by}
        monitoring.update_device(connection, device_id, **changes)
        return shown({**device, **changes, "version": device["version"] + 1})


def move_device(uow: UnitOfWork, device_id: str, room_id: str, by: str) -> dict:
    """Move a device to another infusion room in use. 409 when it is revoked or a session is started in
    the room it is in (the 409 names the session); 422 for the room it is in already or a room it
    cannot go to."""
    with uow:
        connection = uow.connection
        device = _locked_device(connection, device_id)
        if device["room_id"] == room_id:
            raise RuleViolation("the device is in this room already", {"room_id": ["the device's room already"]})
        started = monitoring.started_session_in(connection, device["room_id"])
        if started is not None:
            raise Conflict(f"a session is started in {device['room_name']}; move the device when it has ended",
                           {"session_id": started["id"], "room_id": device["room_id"]})
        room = _infusion_room(connection, room_id)
        changes = {"room_id": room_id, "assigned_at": uow.now, "updated_at": uow.now, "updated_by": by}
        monitoring.update_device(connection, device_id, **changes)
        return shown({**device, **changes, "room_name": room["name"], "version": device["version"] + 1})
