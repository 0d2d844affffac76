"""Sessions' HTTP API for bedside monitors: admins register them for infusion rooms, list them, revoke
them and move them between rooms.

A device's token is in the answer to its registration and nowhere else, ever: sessions keeps only
its SHA-256. The token does one thing, `POST /vitals` for the device's room. A device is not moved
out of a room while a session is started there (409); it may be moved into one, and readings it
measured before it arrived are then refused.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic.audit import CREATE, UPDATE, audited, no_patient
from clinic.auth import requires_roles
from clinic.errors import NotFound
from clinic.validation import plain_text
from clinic.web import actor, reading, unit_of_work
from sessions.db import monitoring
from sessions.services import devices

blp = Blueprint("devices", __name__, url_prefix="/devices",
                description="Bedside monitors: registered for an infusion room, each with its own token for posting vital signs.")

DEVICE = "device"


class DeviceIn(Schema):
    room_id = fields.UUID(required=True, metadata={"description": "An infusion room in use, as scheduling announced it"})
    name = fields.String(required=True, validate=plain_text(100), metadata={"description": "What staff call the monitor"})


class DeviceMoveIn(Schema):
    room_id = fields.UUID(required=True, metadata={"description": "The infusion room the device goes to"})


class DeviceQuery(Schema):
    room_id = fields.UUID(load_default=None)
    active = fields.Boolean(load_default=None, metadata={"description": "true: not revoked; false: revoked"})


class DeviceOut(Schema):
    id = fields.String()
    name = fields.String()
    room_id = fields.String()
    room_name = fields.String(allow_none=True)
    active = fields.Boolean(metadata={"description": "false once revoked: its token is refused"})
    registered_at = fields.DateTime()
    registered_by = fields.String()
    assigned_at = fields.DateTime(metadata={"description": "When it came to its room (registered or moved)"})
    revoked_at = fields.DateTime(allow_none=True)
    revoked_by = fields.String(allow_none=True)
    updated_at = fields.DateTime()
    updated_by = fields.String()
    version = fields.Integer(metadata={"description": "1 when registered, one more at each change"})


class RegisteredDeviceOut(DeviceOut):
    token = fields.String(metadata={"description": "The device's token, shown this once: `Authorization: Bearer <token>` "
                                                   "on POST /vitals. Sessions keeps only its hash."})


@blp.route("")
class Devices(MethodView):
    @audited(CREATE, DEVICE, write=True, patient_of=no_patient)
    @blp.arguments(DeviceIn())
    @blp.response(201, RegisteredDeviceOut)
    @blp.alt_response(422, description="The room is unknown to sessions, not an infusion room, or not in use.")
    def post(self, data):
        """Register a bedside monitor for an infusion room. The answer holds its token, shown this once."""
        return devices.register_device(unit_of_work(), str(data["room_id"]), data["name"], actor())

    @requires_roles()
    @blp.arguments(DeviceQuery(), location="query")
    @blp.response(200, DeviceOut(many=True))
    def get(self, query):
        """The devices, by room and name; filter by room and whether active."""
        room_id = str(query["room_id"]) if query["room_id"] is not None else None
        with reading() as connection:
            return [devices.shown(device) for device in monitoring.listed_devices(connection, room_id, query["active"])]


@blp.route("/<uuid:device_id>")
class DeviceById(MethodView):
    @requires_roles()
    @blp.response(200, DeviceOut)
    @blp.alt_response(404, description="No such device.")
    def get(self, device_id):
        """One device."""
        with reading() as connection:
            device = monitoring.device(connection, str(device_id))
        if device is None:
            raise NotFound("no device with this id", {"device_id": str(device_id)})
        return devices.shown(device)


@blp.route("/<uuid:device_id>/revoke")
class Revoke(MethodView):
    @audited(UPDATE, DEVICE, write=True, resource_arg="device_id", patient_of=no_patient)
    @blp.response(200, DeviceOut)
    @blp.alt_response(404, description="No such device.")
    @blp.alt_response(409, description="Revoked already.")
    def post(self, device_id):
        """Revoke a device (lost, broken, retired): its token is refused (401) from now on."""
        return devices.revoke_device(unit_of_work(), str(device_id), actor())


@blp.route("/<uuid:device_id>/move")
class Move(MethodView):
    @audited(UPDATE, DEVICE, write=True, resource_arg="device_id", patient_of=no_patient)
    @blp.arguments(DeviceMoveIn())
    @blp.response(200, DeviceOut)
    @blp.alt_response(404, description="No such device.")
    @blp.alt_response(409, description="Revoked, or a session is started in the device's room (details.session_id names it).")
    @blp.alt_response(422, description="The device is in that room already, or the room is unknown, not an infusion room, "
                                       "or not in use.")
    def post(self, data, device_id):
        """Move a device to another infusion room. Not while a session is started in the room it is in:
        that patient would lose their monitor. Into a room with a started session it may go; readings it
        measured before it arrived there are refused."""
        return devices.move_device(unit_of_work(), str(device_id), str(data["room_id"]), actor())
