"""The day board: for each room, the day's appointments in order, for the staff apps (audited: it shows patients)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic import audit
from clinic.audit import READ, audited, no_patient
from clinic.validation import PLAUSIBLE_DAY
from clinic.web import clinic_today, reading
from scheduling.appointments_api import AppointmentOut, shown
from scheduling.db import appointments, rooms
from scheduling.local_time import local_day_bounds
from scheduling.request_context import rules

blp = Blueprint("board", __name__, url_prefix="/board", description="The day at a glance, room by room.")

# A day in one clinic holds a few dozen appointments; this bounds a pathological one.
MOST_ON_A_DAY = 2000


class BoardQuery(Schema):
    date = fields.Date(load_default=None, validate=PLAUSIBLE_DAY,
                       metadata={"description": "A local date of the clinic; today when left out"})


class BoardRoom(Schema):
    room_id = fields.String()
    name = fields.String()
    kind = fields.String()
    active = fields.Boolean()
    appointments = fields.List(fields.Nested(AppointmentOut))


class BoardOut(Schema):
    date = fields.Date()
    timezone = fields.String()
    rooms = fields.List(fields.Nested(BoardRoom))


@blp.route("")
class Board(MethodView):
    @audited(READ, "board", patient_of=no_patient)
    @blp.arguments(BoardQuery(), location="query")
    @blp.response(200, BoardOut)
    def get(self, query):
        """The day's appointments room by room, each room with its appointments in start order and their status.

        Every room in use is shown, by name, and any room out of use that still has appointments that
        day. Statuses: booked, checked_in, in_progress (the infusion session has started), completed,
        cancelled, no_show.
        """
        tz = rules().timezone
        day = query["date"] or clinic_today()
        starts_from, starts_before = local_day_bounds(day, tz)
        with reading() as connection:
            all_rooms = rooms.listed(connection)
            found = appointments.find(connection, starts_from=starts_from, starts_before=starts_before, limit=MOST_ON_A_DAY)
        audit.concerning(patient_ids=[appointment["patient_id"] for appointment in found])
        by_room: dict[str, list[dict]] = {}
        for appointment in found:
            by_room.setdefault(appointment["room_id"], []).append(shown(appointment))
        board = [{"room_id": room["id"], "name": room["name"], "kind": room["kind"], "active": room["active"],
                  "appointments": by_room.get(room["id"], [])}
                 for room in all_rooms if room["active"] or room["id"] in by_room]
        return {"date": day, "timezone": tz.key, "rooms": board}
