"""Bedside monitors: registered by admins for infusion rooms in use, their token shown once and kept
only hashed, revoked, moved between rooms (never out of a room with a started session). On
PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from clinic.auth import hash_device_token
from clinic.testing import assert_error
from sessions.db import monitoring
from tests.integration.sessions.support import room, started_session
from tests.integration.sessions.support_monitoring import monitor, post_vitals, posted, reading

NOBODY = "00000000-0000-4000-8000-000000000000"


def test_an_admin_registers_a_monitor_whose_token_is_shown_once_and_kept_only_hashed(ward):
    room_id = room(ward, name="Infusion 3")
    response = ward.call("POST", "/devices", role="admin", subject="admin-ola", json={"room_id": room_id, "name": "Monitor 3A"})
    assert response.status_code == 201, response.get_data(as_text=True)
    device = response.get_json()
    assert device["token"].startswith("dev_") and len(device["token"]) > 40
    assert (device["room_id"], device["room_name"], device["name"], device["active"], device["registered_by"]) == \
        (room_id, "Infusion 3", "Monitor 3A", True, "admin-ola")
    [row] = ward.rows(monitoring.devices, id=device["id"])
    assert row["token_hash"] == hash_device_token(device["token"])
    with ward.engine.connect() as connection:
        dumped = str(connection.execute(sa.select(monitoring.devices)).all())
    assert device["token"] not in dumped
    listed = ward.call("GET", "/devices", role="admin").get_json()
    assert [item["id"] for item in listed] == [device["id"]] and "token" not in listed[0] and "token_hash" not in listed[0]
    assert "token" not in ward.call("GET", f"/devices/{device['id']}", role="admin").get_json()
    assert_error(ward.call("GET", f"/devices/{NOBODY}", role="admin"), 404)
    [audit] = ward.audit_trail(subject="admin-ola")
    assert (audit["action"], audit["resource"], audit["resource_id"], audit["patient_id"]) == ("create", "device", device["id"], None)


def test_only_admins_look_after_devices(ward):
    room_id = room(ward)
    device, _ = monitor(ward, room_id)
    for role in ("nurse", "neurologist", "front_desk"):
        assert_error(ward.call("POST", "/devices", role=role, json={"room_id": room_id, "name": "M"}), 403)
        assert_error(ward.call("GET", "/devices", role=role), 403)
        assert_error(ward.call("POST", f"/devices/{device['id']}/revoke", role=role), 403)
        assert_error(ward.call("POST", f"/devices/{device['id']}/move", role=role, json={"room_id": room(ward)}), 403)
    assert len(ward.rows(monitoring.devices)) == 1


def test_a_monitor_goes_only_to_a_known_infusion_room_in_use(ward):
    for room_id in (NOBODY, room(ward, kind="exam"), room(ward, active=False)):
        error = assert_error(ward.call("POST", "/devices", role="admin", json={"room_id": room_id, "name": "Monitor"}), 422)
        assert "room_id" in error["details"]
    assert_error(ward.call("POST", "/devices", role="admin", json={"room_id": room(ward), "name": " "}), 422)
    assert_error(ward.call("POST", "/devices", role="admin", json={"room_id": "not-a-room", "name": "Monitor"}), 422)
    assert ward.rows(monitoring.devices) == []


def test_a_revoked_device_is_refused_and_stays_revoked(ward):
    room_id = room(ward)
    device, token = monitor(ward, room_id)
    kept, kept_token = monitor(ward, room_id, name="The other one")
    started_session(ward, room_id=room_id)
    revoked = ward.call("POST", f"/devices/{device['id']}/revoke", role="admin")
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    assert (revoked.get_json()["active"], revoked.get_json()["version"]) == (False, 2)
    assert_error(ward.call("POST", f"/devices/{device['id']}/revoke", role="admin"), 409)
    assert_error(ward.call("POST", f"/devices/{device['id']}/move", role="admin", json={"room_id": room(ward)}), 409)
    assert_error(ward.call("POST", f"/devices/{NOBODY}/revoke", role="admin"), 404)
    ward.clock.advance(minutes=1)
    assert_error(post_vitals(ward, token, reading(ward.clock())), 401)
    assert posted(ward, kept_token, reading(ward.clock()))["readings"][0]["device_id"] == kept["id"]
    assert [d["id"] for d in ward.call("GET", "/devices", role="admin", query_string={"active": "false"}).get_json()] == [device["id"]]
    assert [d["id"] for d in ward.call("GET", "/devices", role="admin", query_string={"active": "true"}).get_json()] == [kept["id"]]
    with ward.engine.connect() as connection:
        assert monitoring.monitored_rooms(connection, [room_id]) == {room_id}


def test_a_device_is_not_moved_out_of_a_room_with_a_started_session(ward):
    first_room, second_room = room(ward), room(ward)
    device, token = monitor(ward, first_room)
    session = started_session(ward, room_id=first_room)
    error = assert_error(ward.call("POST", f"/devices/{device['id']}/move", role="admin", json={"room_id": second_room}), 409)
    assert error["details"]["session_id"] == session["id"]
    assert_error(ward.call("POST", f"/devices/{device['id']}/move", role="admin", json={"room_id": first_room}), 422)
    assert_error(ward.call("POST", f"/devices/{NOBODY}/move", role="admin", json={"room_id": second_room}), 404)
    assert ward.rows(monitoring.devices, id=device["id"])[0]["room_id"] == first_room


def test_a_device_moved_into_a_room_posts_there_but_nothing_it_measured_before_it_arrived(ward):
    first_room, second_room = room(ward), room(ward, name="Infusion 9")
    device, token = monitor(ward, first_room)
    there = started_session(ward, room_id=second_room)
    ward.clock.advance(minutes=10)
    moved = ward.call("POST", f"/devices/{device['id']}/move", role="admin", json={"room_id": second_room})
    assert moved.status_code == 200, moved.get_data(as_text=True)
    assert (moved.get_json()["room_id"], moved.get_json()["room_name"], moved.get_json()["version"]) == (second_room, "Infusion 9", 2)
    error = assert_error(post_vitals(ward, token, reading(ward.clock() - timedelta(minutes=1))), 422)
    assert "came to its room" in error["details"]["readings"]["0"]["measured_at"][0]
    ward.clock.advance(minutes=1)
    assert posted(ward, token, reading(ward.clock()))["session_id"] == there["id"]
    with ward.engine.connect() as connection:
        assert monitoring.monitored_rooms(connection, [first_room, second_room]) == {second_room}
