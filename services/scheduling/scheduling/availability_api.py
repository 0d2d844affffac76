"""Scheduling's HTTP API for free slots: where and when a patient could be booked (audited: it is about a patient)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic import audit
from clinic.audit import SEARCH, audited, no_patient
from clinic.validation import PLAUSIBLE_MOMENT
from clinic.web import now, reading
from scheduling import domain
from scheduling.appointments_api import id_or_none, shown, utc
from scheduling.request_context import rules
from scheduling.services.availability import find_availability

blp = Blueprint("availability", __name__, url_prefix="/availability", description="Free slots to book.")


class SlotQuery(Schema):
    patient_id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(domain.APPOINTMENT_KINDS))
    from_ = fields.AwareDateTime(required=True, data_key="from", validate=PLAUSIBLE_MOMENT)
    to = fields.AwareDateTime(required=True, validate=PLAUSIBLE_MOMENT)
    room_id = fields.UUID(load_default=None)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class SlotOut(Schema):
    room_id = fields.String()
    room_name = fields.String()
    starts_at = fields.DateTime()
    ends_at = fields.DateTime()
    starts_at_local = fields.String()
    ends_at_local = fields.String()


@blp.route("")
class Availability(MethodView):
    @audited(SEARCH, "availability", patient_of=no_patient)
    @blp.arguments(SlotQuery(), location="query")
    @blp.response(200, SlotOut(many=True))
    def get(self, query):
        """Free slots for a patient, earliest first: rooms and times where both the room and the patient are free.

        Each slot has the right length and room kind for the appointment, lies inside office hours,
        starts on the clinic's booking grid; at most `limit` of them.
        """
        patient_id = str(query["patient_id"])
        audit.concerning(patient_id=patient_id)
        with reading() as connection:
            slots = find_availability(connection, rules(), now(), patient_id, query["kind"], utc(query["from_"]), utc(query["to"]),
                                      id_or_none(query["room_id"]), query["limit"])
        return [shown(slot) for slot in slots]
