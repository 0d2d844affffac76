"""Records' HTTP API: the encounter history, one encounter per completed infusion session."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic.audit import READ, audited
from clinic.events import AlertSummary, DrugGiven
from clinic.web import reading, settings
from records.services import encounters

blp = Blueprint("encounters", __name__, url_prefix="/patients", description="The encounter history.")


class EncounterOut(Schema):
    id = fields.String()
    session_id = fields.String()
    appointment_id = fields.String()
    date = fields.Date(metadata={"description": "The day of the infusion, in the clinic's time zone"})
    room_id = fields.String()
    room_name = fields.String()
    started_at = fields.DateTime()
    ended_at = fields.DateTime()
    drugs_given = fields.List(fields.Nested(DrugGiven))
    pain_before = fields.Integer(allow_none=True)
    pain_after = fields.Integer(allow_none=True)
    highest_news2 = fields.Integer(allow_none=True)
    alerts = fields.List(fields.Nested(AlertSummary))


@blp.route("/<uuid:patient_id>/encounters")
class Encounters(MethodView):
    @audited(READ, "encounter")
    @blp.response(200, EncounterOut(many=True))
    def get(self, patient_id):
        """A patient's infusion encounters, newest first, each with what happened in it.

        Room, times, drugs given with doses, pain before and after, the highest NEWS2 score and the alerts raised.
        """
        with reading() as connection:
            found = encounters.patient_encounters(connection, patient_id)
        zone = settings().timezone
        # Stored as the event's JSON; loaded again so times and doses are dumped as the types they are.
        return [{**encounter, "date": encounter["started_at"].astimezone(zone).date(),
                 "drugs_given": DrugGiven(many=True).load(encounter["drugs_given"]),
                 "alerts": AlertSummary(many=True).load(encounter["alerts"])} for encounter in found]
