"""The ward board: every infusion room with the session in it now (the started one, else the patient
waiting there), how long it has run against its plan, its last vital signs with their NEWS2 score,
its open alerts, whether a visitor is with the patient, whether its plan has changed, and whether
the room has a monitor. A fixed number of queries, whatever the number of rooms.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import rows_of
from sessions.db import care as care_record
from sessions.db import monitoring
from sessions.db.tables import rooms
from sessions.domain import care
from sessions.services.sessions import find_open_in_rooms


def board(connection: Connection, now: datetime, today_began: datetime) -> list[dict]:
    """The infusion rooms in use by name (and one out of use while it still has a session), each with its session now.

    A patient waiting since before `today_began` (the start of the clinic's day) is not waiting now:
    that check-in was never started nor cancelled, and today's patient is the one in the room."""
    infusion_rooms = rows_of(connection, sa.select(rooms).where(rooms.c.kind == "infusion").order_by(rooms.c.name, rooms.c.id))
    room_ids = [room["id"] for room in infusion_rooms]
    now_in: dict[str, dict] = {}
    for session in find_open_in_rooms(connection, room_ids):
        if session["status"] == care.WAITING and session["checked_in_at"] < today_began:
            continue
        current = now_in.get(session["room_id"])
        # The started session is the one in the chair; otherwise the patient who checked in first.
        if current is None or (session["status"] == care.STARTED and current["status"] != care.STARTED):
            now_in[session["room_id"]] = session
    session_ids = [session["id"] for session in now_in.values()]
    latest = monitoring.latest_scores(connection, session_ids)
    alerts = monitoring.open_alerts(connection, session_ids)
    with_visitor = care_record.visitors_present(connection, session_ids)
    monitored = monitoring.monitored_rooms(connection, room_ids)
    shown = []
    for room in infusion_rooms:
        session = now_in.get(room["id"])
        if not room["active"] and session is None:
            continue
        shown.append({"room_id": room["id"], "name": room["name"], "active": room["active"], "monitored": room["id"] in monitored,
                      "session": _on_board(session, now, latest, alerts, with_visitor) if session else None})
    return shown


def _on_board(session: dict, now: datetime, latest: dict, alerts: dict, with_visitor: set) -> dict:
    session_id = session["id"]
    started = session["started_at"]
    return {
        "id": session_id, "status": session["status"], "patient_id": session["patient_id"],
        "checked_in_at": session["checked_in_at"], "started_at": started,
        "minutes_elapsed": care.minutes_between(started, now) if started else None,
        "planned_minutes": session["planned_minutes"], "spo2_scale": session["spo2_scale"],
        "last_vitals": latest.get(session_id), "open_alerts": alerts.get(session_id, []),
        "visitor_present": session_id in with_visitor, "plan_changed": session["plan_changed"],
    }


def patients_on(board_rooms: list[dict]) -> list[str]:
    """The patients the board shows, for the audit."""
    return [room["session"]["patient_id"] for room in board_rooms if room["session"]]

