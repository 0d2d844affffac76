"""Scheduling's HTTP API for closures: local dates the clinic is closed (a holiday, a training day).

Admins add and lift them (audited: who changed what); every staff role reads them. A day with
booked appointments cannot be closed (409, listing them).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic.audit import CREATE, DELETE, audited, no_patient
from clinic.auth import requires_roles
from clinic.validation import PLAUSIBLE_DAY, plain_text
from clinic.web import reading, unit_of_work
from scheduling.db.calendar import list_closures
from scheduling.request_context import rules
from scheduling.services.calendar import close_day, reopen_day

blp = Blueprint("closures", __name__, url_prefix="/closures", description="Dates the clinic is closed.")



class ClosureIn(Schema):
    date = fields.Date(required=True, validate=PLAUSIBLE_DAY, metadata={"description": "A local date of the clinic"})
    reason = fields.String(required=True, validate=plain_text(200))


class ClosureQuery(Schema):
    from_ = fields.Date(load_default=None, data_key="from", validate=PLAUSIBLE_DAY)
    to = fields.Date(load_default=None, validate=PLAUSIBLE_DAY)


class ClosureOut(Schema):
    date = fields.Date(attribute="day")
    reason = fields.String()
    created_at = fields.DateTime()


@blp.route("")
class Closures(MethodView):
    @requires_roles()
    @blp.arguments(ClosureQuery(), location="query")
    @blp.response(200, ClosureOut(many=True))
    def get(self, query):
        """Closed dates, in order, optionally between two local dates (inclusive)."""
        with reading() as connection:
            return list_closures(connection, query["from_"], query["to"])

    @audited(CREATE, "closure", write=True, patient_of=no_patient)
    @blp.arguments(ClosureIn())
    @blp.response(201, ClosureOut)
    @blp.alt_response(409, description="The date is closed already, or appointments are booked on it (listed).")
    def post(self, data):
        """Close the clinic on a date (a holiday, training day). Refused while appointments are booked on it."""
        return close_day(unit_of_work(), rules().timezone, data["date"], data["reason"])


@blp.route("/<date:day>")
class ClosureByDate(MethodView):
    @audited(DELETE, "closure", write=True, patient_of=no_patient)
    @blp.response(204)
    @blp.alt_response(404, description="The clinic is not closed on this date.")
    @blp.alt_response(422, description="The path does not hold a date (YYYY-MM-DD).")
    def delete(self, day):
        """Open the clinic again on a closed date (its weekly office hours apply)."""
        reopen_day(unit_of_work(), day)
