"""Scheduling's payloads (appointments, rooms) held against the shared schemas, and its handlers against the events it consumes."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from clinic import events
from scheduling import payloads

STARTS = datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc)
ROOM = {"id": str(uuid.uuid4()), "name": "Infusion 1", "kind": "infusion", "active": True}
APPOINTMENT = {"id": str(uuid.uuid4()), "patient_id": str(uuid.uuid4()), "kind": "infusion", "room_id": ROOM["id"],
               "starts_at": STARTS, "ends_at": STARTS + timedelta(minutes=150), "status": "booked",
               "room_blocked_until": STARTS + timedelta(minutes=165), "patient_busy_until": STARTS + timedelta(minutes=150),
               "plan_id": str(uuid.uuid4()), "cancel_reason": None, "version": 3}
PREVIOUS = {**APPOINTMENT, "starts_at": STARTS - timedelta(days=1), "room_id": str(uuid.uuid4())}

PAYLOADS = {
    "scheduling.appointment.booked": (payloads.booked_payload(APPOINTMENT, ROOM),
                                      {"appointment_id", "patient_id", "kind", "room_id", "room_name", "starts_at", "ends_at",
                                       "appointment_version"}),
    "scheduling.appointment.rescheduled": (payloads.rescheduled_payload(APPOINTMENT, ROOM, PREVIOUS),
                                           {"appointment_id", "patient_id", "kind", "room_id", "room_name", "starts_at", "ends_at",
                                            "previous_starts_at", "previous_room_id", "appointment_version"}),
    "scheduling.appointment.cancelled": (payloads.cancelled_payload(APPOINTMENT),
                                         {"appointment_id", "patient_id", "kind", "starts_at", "appointment_version"}),
    "scheduling.appointment.checked_in": (payloads.checked_in_payload(APPOINTMENT, ROOM, APPOINTMENT["plan_id"], STARTS),
                                          {"appointment_id", "patient_id", "kind", "room_id", "room_name", "plan_id", "starts_at",
                                           "ends_at", "checked_in_at", "appointment_version"}),
    "scheduling.appointment.no_show": (payloads.no_show_payload(APPOINTMENT), {"appointment_id", "patient_id", "starts_at",
                                                                               "appointment_version"}),
}


@pytest.mark.parametrize("event_type", sorted(PAYLOADS))
def test_each_scheduling_payload_matches_its_schema_and_carries_ids_and_times_only(event_type):
    payload, expected_fields = PAYLOADS[event_type]
    serialised = events.serialise_payload(event_type, payload)
    assert set(serialised) == expected_fields
    loaded = events.schema_for(event_type, 1).load(serialised)
    assert str(loaded["appointment_id"]) == APPOINTMENT["id"] and loaded["appointment_version"] == 3


def test_a_follow_up_check_in_carries_no_plan():
    payload = payloads.checked_in_payload({**APPOINTMENT, "kind": "follow_up"}, ROOM, None, STARTS)
    assert events.serialise_payload("scheduling.appointment.checked_in", payload)["plan_id"] is None


def test_a_room_change_carries_the_room_as_it_is_now_with_its_version():
    payload = payloads.room_changed_payload({**ROOM, "version": 4, "created_at": STARTS, "updated_at": STARTS})
    serialised = events.serialise_payload(events.ROOM_CHANGED, payload)
    assert serialised == {"room_id": ROOM["id"], "name": "Infusion 1", "kind": "infusion", "active": True, "room_version": 4}
    assert events.schema_for(events.ROOM_CHANGED, 1).load(serialised)["room_version"] == 4
