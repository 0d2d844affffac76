"""Scheduling's audit (clinic.audit): who read or changed which patient's appointments, and who changed
rooms, office hours and closures; written in the change's own transaction, refusals recorded too."""

from __future__ import annotations

import uuid

from clinic.testing import assert_error
from tests.integration.scheduling.support import MONDAY, local


def entries(rows: list[dict]) -> list[tuple]:
    return [(row["subject"], row["action"], row["resource"], row["resource_id"], row["patient_id"], row["outcome"]) for row in rows]


def test_admin_changes_to_rooms_office_hours_and_closures_record_who_made_them(clinic):
    room = clinic.call("POST", "/rooms", role="admin", subject="admin-eve", json={"name": "Infusion 1", "kind": "infusion"}).get_json()
    clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", subject="admin-eve", json={"active": False})
    clinic.call("PUT", "/office-hours", role="admin", subject="admin-max", json={"monday": [{"opens": "09:00", "closes": "17:00"}]})
    clinic.call("POST", "/closures", role="admin", subject="admin-max", json={"date": "2030-01-09", "reason": "training"})
    assert clinic.call("DELETE", "/closures/2030-01-09", role="admin", subject="admin-max").status_code == 204
    assert entries(clinic.audit_trail(subject="admin-eve")) == [
        ("admin-eve", "create", "room", room["id"], None, "allowed"),
        ("admin-eve", "update", "room", room["id"], None, "allowed"),
    ]
    assert entries(clinic.audit_trail(subject="admin-max")) == [
        ("admin-max", "update", "office_hours", None, None, "allowed"),
        ("admin-max", "create", "closure", "2030-01-09", None, "allowed"),
        ("admin-max", "delete", "closure", "2030-01-09", None, "allowed"),
    ]


def test_a_refused_admin_change_is_recorded_as_failed_and_changes_nothing(clinic):
    room = clinic.room("Infusion 1")
    clinic.booked(clinic.plan(), local(MONDAY, "09:00"), room_id=room["id"])
    assert_error(clinic.call("PATCH", f"/rooms/{room['id']}", role="admin", subject="admin-eve", json={"active": False}), 409)
    assert_error(clinic.call("DELETE", "/closures/someday", role="admin", subject="admin-eve"), 422)
    assert_error(clinic.call("PATCH", f"/rooms/{room['id']}", role="nurse", subject="nurse-ada", json={"active": False}), 403)
    # A path that names no date never reaches the view (the shared edge answers 422), like a bad token.
    assert [(row["action"], row["resource"], row["outcome"], row["error_code"]) for row in clinic.audit_trail(subject="admin-eve")] == [
        ("update", "room", "failed", "conflict")]
    assert [(row["outcome"], row["error_code"]) for row in clinic.audit_trail(subject="nurse-ada")] == [("denied", "forbidden")]
    assert clinic.call("GET", f"/rooms/{room['id']}").get_json()["active"] is True


def test_booking_changing_and_reading_an_appointment_name_its_patient(clinic):
    room = clinic.room("Infusion 1")
    patient, other = clinic.plan(), clinic.plan()
    booked = clinic.call("POST", "/appointments", subject="desk-ana",
                         json={"patient_id": patient, "kind": "infusion", "starts_at": local(MONDAY, "09:00").isoformat()}).get_json()
    refused = clinic.call("POST", "/appointments", subject="desk-ana", json={"patient_id": other, "kind": "infusion",
                                                                             "starts_at": local(MONDAY, "10:00").isoformat()})
    assert_error(refused, 409)
    clinic.call("POST", f"/appointments/{booked['id']}/cancel", subject="desk-ana", json={"reason": "unwell"})
    unknown = str(uuid.uuid4())
    assert_error(clinic.call("POST", f"/appointments/{unknown}/cancel", subject="desk-ana", json={"reason": "x"}), 404)
    assert entries(clinic.audit_trail(subject="desk-ana")) == [
        ("desk-ana", "create", "appointment", booked["id"], patient, "allowed"),
        ("desk-ana", "create", "appointment", None, other, "failed"),
        ("desk-ana", "update", "appointment", booked["id"], patient, "allowed"),
        ("desk-ana", "update", "appointment", unknown, None, "failed"),
    ]

    clinic.booked(other, local(MONDAY, "13:00"), room_id=room["id"])
    clinic.call("GET", "/appointments?date=2030-01-07", role="nurse", subject="nurse-ada")
    clinic.call("GET", f"/appointments/{booked['id']}", role="nurse", subject="nurse-ada")
    clinic.call("GET", "/board?date=2030-01-07", role="nurse", subject="nurse-ada")
    clinic.call("GET", "/availability", role="nurse", subject="nurse-ada", query_string={
        "patient_id": other, "kind": "follow_up", "from": local(MONDAY, "08:00").isoformat(), "to": local(MONDAY, "12:00").isoformat()})
    read = [(row["action"], row["resource"], row["patient_id"]) for row in clinic.audit_trail(subject="nurse-ada")]
    assert read == [("search", "appointment", patient), ("search", "appointment", other), ("read", "appointment", patient),
                    ("read", "board", patient), ("read", "board", other), ("search", "availability", other)]

