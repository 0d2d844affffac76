"""What the monitoring tests share (devices, vitals, alerts): a registered monitor and its token, readings
as a monitor posts them, sets of vital signs with known NEWS2 scores, and the worker's jobs run as the
worker runs them (a unit of work of their own, on the ward's clock)."""

from __future__ import annotations

from datetime import datetime

from clinic import events
from clinic.unit_of_work import UnitOfWork
from sessions import SERVICE
from sessions.db import metadata
from sessions.domain.rules import SessionRules
from sessions.services import alerts as alert_jobs
from tests.integration.sessions.support import Ward, room

# A full set that scores 0: the common case.
STEADY = {"heart_rate": 72, "systolic": 124, "diastolic": 78, "respiratory_rate": 16, "spo2": 97, "on_oxygen": False,
          "temperature": "36.8", "consciousness": "alert"}
# Total 5 with no single 3 (pulse 115: 2, respiration 22: 2, temperature 38.5: 1): urgent.
URGENT = {**STEADY, "heart_rate": 115, "respiratory_rate": 22, "temperature": "38.5"}
# Total 8 (pulse 135: 3, respiration 26: 3, systolic 95: 2): an emergency.
EMERGENCY = {**STEADY, "heart_rate": 135, "respiratory_rate": 26, "systolic": 95}


def reading(at: datetime, values: dict | None = None, **changes) -> dict:
    """A reading as a monitor posts it: its time and a set of vital signs (STEADY unless given)."""
    return {"measured_at": at.isoformat(), **(STEADY if values is None else values), **changes}


def monitor(ward: Ward, room_id: str | None = None, name: str = "Bedside monitor") -> tuple[dict, str]:
    """An admin registers a monitor for the room (a new infusion room unless given): (device, token)."""
    room_id = room_id or room(ward)
    response = ward.call("POST", "/devices", role="admin", json={"room_id": room_id, "name": name})
    assert response.status_code == 201, response.get_data(as_text=True)
    device = response.get_json()
    return device, device["token"]


def post_vitals(ward: Ward, token: str, *readings: dict):
    """POST /vitals as the monitor with this token."""
    return ward.client.post("/vitals", json={"readings": list(readings)}, headers={"Authorization": f"Bearer {token}"})


def posted(ward: Ward, token: str, *readings: dict) -> dict:
    response = post_vitals(ward, token, *readings)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def by_hand(ward: Ward, session_id: str, *readings: dict, role: str = "nurse"):
    """POST /sessions/{id}/vitals as a nurse (or another role)."""
    return ward.call("POST", f"/sessions/{session_id}/vitals", role=role, subject="nurse-ines", json={"readings": list(readings)})


def alert_events(ward: Ward) -> list[dict]:
    """The sessions.vitals.alert_raised events in the outbox, oldest first."""
    return ward.events(events.VITALS_ALERT_RAISED)


def run_job(ward: Ward, job, rules: SessionRules | None = None):
    """Run one of the worker's jobs once, as the worker does: a unit of work of its own, no audit."""
    return job(UnitOfWork(ward.engine, metadata, SERVICE, clock=ward.clock), rules or SessionRules())


def watch_monitors(ward: Ward, rules: SessionRules | None = None) -> list[dict]:
    return run_job(ward, alert_jobs.watch_monitors, rules)


def escalate(ward: Ward, rules: SessionRules | None = None) -> list[dict]:
    return run_job(ward, alert_jobs.escalate_unacknowledged, rules)
