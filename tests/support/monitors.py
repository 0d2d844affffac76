"""A bedside monitor registered in a sessions app the way an administrator registers one, for the tests
that need a real device token (sessions' own tests insert the row instead: support.registered_monitor)."""

from __future__ import annotations

import uuid

from clinic import events
from clinic.auth import issue_token
from clinic.inbox import APPLIED, apply_once
from sessions.handlers import make_handlers


def registered_monitor(sessions_app, room_id: str | None = None, room_name: str = "Infusion 1") -> dict:
    """The device answered by POST /devices (its id and token), registered for an infusion room that
    sessions learnt of from scheduling's event, applied as its worker applies it."""
    room = {"room_id": room_id or str(uuid.uuid4()), "name": room_name, "kind": "infusion", "active": True, "room_version": 1}
    event = events.parse(events.Event(type=events.ROOM_CHANGED, data=events.serialise_payload(events.ROOM_CHANGED, room, 1),
                                      producer="scheduling", version=1).to_json())
    assert apply_once(sessions_app.extensions["clinic.engine"], sessions_app.extensions["clinic.metadata"], "sessions", event,
                      make_handlers()[events.ROOM_CHANGED]) == APPLIED
    admin = {"Authorization": f"Bearer {issue_token(sessions_app.config['CLINIC_SETTINGS'], 'admin-1', ('admin',))}"}
    # From an address of its own: the registration takes nothing from the allowance of the addresses a test floods.
    response = sessions_app.test_client().post("/devices", headers=admin, json={"room_id": room["room_id"], "name": "Monitor 1"},
                                               environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()
