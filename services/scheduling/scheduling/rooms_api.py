"""Scheduling's HTTP API for rooms: infusion rooms (a recliner each) and exam rooms.

Admins add and change them (audited: who changed what); every staff role reads them. A room with
appointments still to come can neither leave use nor change kind (409, listing them).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic.audit import CREATE, UPDATE, audited, no_patient
from clinic.auth import requires_roles
from clinic.errors import NotFound
from clinic.validation import JsonBoolean, at_least_one_of, plain_text
from clinic.web import reading, unit_of_work
from scheduling import domain
from scheduling.db import rooms
from scheduling.services.rooms import add_room, change_room

blp = Blueprint("rooms", __name__, url_prefix="/rooms", description="Infusion rooms (a recliner each) and exam rooms.")



class RoomIn(Schema):
    name = fields.String(required=True, validate=plain_text(100),
                         metadata={"description": "Unique whatever its case: 'Infusion 1' and 'infusion 1' are one name"})
    kind = fields.String(required=True, validate=validate.OneOf(domain.ROOM_KINDS))
    active = JsonBoolean(load_default=True)


class RoomPatch(Schema):
    name = fields.String(validate=plain_text(100))
    kind = fields.String(validate=validate.OneOf(domain.ROOM_KINDS))
    active = JsonBoolean()

    something_to_change = at_least_one_of("name", "kind", "active")


class RoomQuery(Schema):
    kind = fields.String(load_default=None, validate=validate.OneOf(domain.ROOM_KINDS))
    active = fields.Boolean(load_default=None)


class RoomOut(Schema):
    id = fields.String()
    name = fields.String()
    kind = fields.String()
    active = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    version = fields.Integer(metadata={
        "description": "1 when added, one more at each change; scheduling.room.changed carries it as room_version"})


@blp.route("")
class Rooms(MethodView):
    @audited(CREATE, "room", write=True, patient_of=no_patient)
    @blp.arguments(RoomIn())
    @blp.response(201, RoomOut)
    @blp.alt_response(409, description="A room with this name exists (in any case); details.room_id names it.")
    def post(self, data):
        """Add a room: `infusion` (a private room with a recliner) or `exam` (office visits).

        The room is version 1; scheduling.room.changed tells sessions about it.
        """
        return add_room(unit_of_work(), data["name"], data["kind"], data["active"])

    @requires_roles()
    @blp.arguments(RoomQuery(), location="query")
    @blp.response(200, RoomOut(many=True))
    def get(self, query):
        """The rooms, by name; filter by kind and whether in use."""
        with reading() as connection:
            return rooms.listed(connection, kind=query["kind"], active=query["active"])


@blp.route("/<uuid:room_id>")
class RoomById(MethodView):
    @requires_roles()
    @blp.response(200, RoomOut)
    def get(self, room_id):
        """One room."""
        with reading() as connection:
            room = rooms.get(connection, str(room_id))
        if room is None:
            raise NotFound("no room with this id", {"room_id": str(room_id)})
        return room

    @audited(UPDATE, "room", write=True, resource_arg="room_id", patient_of=no_patient)
    @blp.arguments(RoomPatch())
    @blp.response(200, RoomOut)
    @blp.alt_response(409, description="The name is taken, or appointments are booked in a room leaving use or changing kind.")
    def patch(self, changes, room_id):
        """Rename a room, take it out of use (`active: false`) or back, or change its kind.

        A room with appointments still to come can be neither taken out of use nor change kind:
        move or cancel those first (the 409 lists them). A body with nothing to change is refused (422).
        Each change is the room's next version and is told to sessions (scheduling.room.changed); a
        body that gives the room what it has already changes nothing.
        """
        return change_room(unit_of_work(), str(room_id), changes)
