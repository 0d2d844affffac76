"""The payloads of the events scheduling publishes (scheduling.appointment.*, scheduling.room.changed),
checked against the shared schemas (clinic.events) when the unit of work writes them.

Each is built from the appointment or room as it is after the change, so it carries the new version
(appointment_version, room_version): consumers order what they hear about one of them by it.
"""

from __future__ import annotations

from datetime import datetime


def booked_payload(appointment: dict, room: dict) -> dict:
    return {
        "appointment_id": appointment["id"],
        "patient_id": appointment["patient_id"],
        "kind": appointment["kind"],
        "room_id": room["id"],
        "room_name": room["name"],
        "starts_at": appointment["starts_at"],
        "ends_at": appointment["ends_at"],
        "appointment_version": appointment["version"],
    }


def rescheduled_payload(appointment: dict, room: dict, previous: dict) -> dict:
    return {**booked_payload(appointment, room), "previous_starts_at": previous["starts_at"], "previous_room_id": previous["room_id"]}


def cancelled_payload(appointment: dict) -> dict:
    return {
        "appointment_id": appointment["id"],
        "patient_id": appointment["patient_id"],
        "kind": appointment["kind"],
        "starts_at": appointment["starts_at"],
        "appointment_version": appointment["version"],
    }


def checked_in_payload(appointment: dict, room: dict, plan_id: str | None, checked_in_at: datetime) -> dict:
    return {
        **booked_payload(appointment, room),
        "plan_id": plan_id,
        "checked_in_at": checked_in_at,
    }


def no_show_payload(appointment: dict) -> dict:
    return {"appointment_id": appointment["id"], "patient_id": appointment["patient_id"], "starts_at": appointment["starts_at"],
            "appointment_version": appointment["version"]}


def room_changed_payload(room: dict) -> dict:
    """A room as it is after an admin added or changed it (migration 0007 wrote the same for the rooms before it)."""
    return {"room_id": room["id"], "name": room["name"], "kind": room["kind"], "active": room["active"],
            "room_version": room["version"]}
