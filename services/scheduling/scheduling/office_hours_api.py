"""Scheduling's HTTP API for the weekly office hours, in the clinic's local time.

Admins replace them (audited: who changed them); every staff role reads them. New hours that would
leave booked appointments outside them are refused with a 409 listing those appointments.
"""

from __future__ import annotations

import re
from datetime import time

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from clinic.audit import UPDATE, audited, no_patient
from clinic.auth import requires_roles
from clinic.validation import at_least_one_of
from clinic.web import reading, unit_of_work
from scheduling.db.calendar import weekly_template
from scheduling.local_time import WEEKDAYS, OpenInterval
from scheduling.request_context import rules
from scheduling.services.calendar import replace_office_hours

blp = Blueprint("office_hours", __name__, url_prefix="/office-hours", description="The weekly office hours, in local time.")



CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class ClockTime(fields.Field):
    """A wall-clock time as "HH:MM" (24-hour)."""

    _pattern = re.compile(CLOCK_TIME)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not self._pattern.match(value):
            raise ValidationError('a time of day as "HH:MM", 24-hour')
        return time.fromisoformat(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.strftime("%H:%M")


class OpenIntervalSchema(Schema):
    opens = ClockTime(required=True, metadata={"type": "string", "pattern": CLOCK_TIME})
    closes = ClockTime(required=True, metadata={"type": "string", "pattern": CLOCK_TIME})


def _day(**options):
    return fields.List(fields.Nested(OpenIntervalSchema), validate=validate.Length(max=6),
                       metadata={"description": "Open intervals that day, local time; empty or left out: closed"}, **options)


class WeekIn(Schema.from_dict({name: _day() for name in WEEKDAYS}, name="WeekInBase")):
    # An empty body would otherwise read as "closed every day": a week is given day by day.
    names_a_day = at_least_one_of(*WEEKDAYS, message="give the week: at least one weekday (an empty list closes that day)")


class WeekOut(Schema.from_dict({name: _day(load_default=list) for name in WEEKDAYS}, name="WeekOutBase")):
    timezone = fields.String(metadata={"description": "The clinic's time zone (CLINIC_TIMEZONE); all hours are local time there"})


def _week(template: list[OpenInterval]) -> dict:
    week = {name: [] for name in WEEKDAYS}
    for interval in template:
        week[WEEKDAYS[interval.weekday]].append({"opens": interval.opens, "closes": interval.closes})
    return {**week, "timezone": rules().timezone.key}


@blp.route("")
class OfficeHours(MethodView):
    @requires_roles()
    @blp.response(200, WeekOut)
    def get(self):
        """The weekly office hours, per weekday a list of open intervals in the clinic's local time (empty: closed)."""
        with reading() as connection:
            return _week(weekly_template(connection))

    @audited(UPDATE, "office_hours", write=True, patient_of=no_patient)
    @blp.arguments(WeekIn())
    @blp.response(200, WeekOut)
    @blp.alt_response(409, description="Booked appointments would fall outside the new hours; details list them.")
    def put(self, data):
        """Replace the weekly office hours. A weekday left out or empty is closed; a body naming no weekday is refused (422).

        Hours are local wall-clock times, so 08:00 stays 08:00 across daylight-saving changes.
        Refused (409, listing them) when appointments still to come would fall outside the new hours.
        """
        template = [OpenInterval(weekday, interval["opens"], interval["closes"])
                    for weekday, name in enumerate(WEEKDAYS) for interval in data.get(name, [])]
        return _week(replace_office_hours(unit_of_work(), rules().timezone, template))
