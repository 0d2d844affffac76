"""Sessions' HTTP API for vital signs: bedside monitors post readings with their device tokens, nurses
enter them by hand, void those entered in error, and read a session's readings with their NEWS2.

A reading is one set of vital signs taken at one time: its measurement time and any of heart rate,
systolic and diastolic pressure, respiratory rate, SpO2, air or oxygen, temperature (°C) and
consciousness (ACVPU). Each set is scored with NEWS2 as it arrives, a partial set completed from the
latest value of each missing parameter within the scoring window; the answer shows the total and the
points each parameter scored. Every view reading or storing readings is audited.
"""

from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic import audit
from clinic.audit import CREATE, READ, UPDATE, audited, no_patient
from clinic.auth import requires_roles
from clinic.errors import NotFound
from clinic.http_errors import ErrorSchema
from clinic.validation import PLAUSIBLE_MOMENT, DecimalText, JsonBoolean, at_least_one_of, plain_text
from clinic.web import actor, reading, unit_of_work
from sessions.db import monitoring
from sessions.domain.vitals import CONSCIOUSNESS, LOINC, PARAMETERS
from sessions.request_context import rules
from sessions.services import vitals

blp = Blueprint("vitals", __name__, description="Vital signs from bedside monitors and nurses, scored with NEWS2.")

MAX_READINGS = 100
# A temperature in °C as a JSON number or as text: up to three digits, up to two decimal places.
TEMPERATURE_TEXT = r"[0-9]{1,3}(\.[0-9]{1,2})?"


def _loinc(name: str, what: str) -> dict:
    return {"description": f"{what} (LOINC {LOINC[name]})"}


def _count(name: str, what: str):
    # Whole numbers; what a living person can show is the configured bounds' business (422 naming the field).
    return fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=0, max=1000),
                          metadata=_loinc(name, what))


class ReadingIn(Schema):
    measured_at = fields.AwareDateTime(required=True, validate=PLAUSIBLE_MOMENT, metadata={
        "description": "When the device (or nurse) took the reading: ISO 8601 with a UTC offset"})
    heart_rate = _count("heart_rate", "Heart rate, beats per minute")
    systolic = _count("systolic", "Systolic blood pressure, mmHg")
    diastolic = _count("diastolic", "Diastolic blood pressure, mmHg; not scored by NEWS2")
    respiratory_rate = _count("respiratory_rate", "Respiratory rate, breaths per minute")
    spo2 = _count("spo2", "Oxygen saturation, percent; scored on the session's SpO2 scale (1, or 2 for a hypercapnic target)")
    on_oxygen = JsonBoolean(load_default=None, allow_none=True, metadata={
        "description": "true: on supplemental oxygen; false: breathing room air"})
    temperature = DecimalText(rf"^{TEMPERATURE_TEXT}$", load_default=None, allow_none=True, metadata={
        "description": "Body temperature in degrees Celsius (LOINC 8310-5), read to one decimal place (halves up). "
                       "A monitor that measures in °F converts to °C before it posts: (°F - 32) × 5 / 9"})
    consciousness = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(CONSCIOUSNESS), metadata={
        "description": "ACVPU: alert, new_confusion, voice, pain or unresponsive"})

    some_vital_sign = at_least_one_of(*PARAMETERS, message="give at least one vital sign")


class ReadingsIn(Schema):
    readings = fields.List(fields.Nested(ReadingIn), required=True, validate=validate.Length(min=1, max=MAX_READINGS),
                           metadata={"description": f"One to {MAX_READINGS} readings"})


class ReadingVoidIn(Schema):
    reason = fields.String(required=True, validate=plain_text(500), metadata={"description": "Why the reading was entered in error"})


class VitalsQuery(Schema):
    since = fields.AwareDateTime(load_default=None, validate=PLAUSIBLE_MOMENT,
                                 metadata={"description": "Only readings measured after this moment"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class News2Out(Schema):
    total = fields.Integer()
    points = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "The points each scored parameter gave (diastolic pressure is not scored)"})
    complete = fields.Boolean(metadata={"description": "All seven NEWS2 parameters were there (with those filled in)"})
    filled_in = fields.List(fields.String(), metadata={
        "description": "Parameters this set lacked, taken from the latest earlier reading within the scoring window"})


class ReadingAlertOut(Schema):
    id = fields.String()
    level = fields.String()


class ReadingOut(Schema):
    id = fields.String()
    session_id = fields.String()
    source = fields.String(metadata={"description": "monitor or nurse"})
    device_id = fields.String(allow_none=True)
    entered_by = fields.String(allow_none=True, metadata={"description": "The nurse who entered it by hand"})
    measured_at = fields.DateTime()
    received_at = fields.DateTime()
    heart_rate = fields.Integer(allow_none=True, metadata=_loinc("heart_rate", "Heart rate, beats per minute"))
    systolic = fields.Integer(allow_none=True, metadata=_loinc("systolic", "Systolic blood pressure, mmHg"))
    diastolic = fields.Integer(allow_none=True, metadata=_loinc("diastolic", "Diastolic blood pressure, mmHg"))
    respiratory_rate = fields.Integer(allow_none=True, metadata=_loinc("respiratory_rate", "Respiratory rate, breaths per minute"))
    spo2 = fields.Integer(allow_none=True, metadata=_loinc("spo2", "Oxygen saturation, percent"))
    on_oxygen = fields.Boolean(allow_none=True)
    temperature = fields.Decimal(as_string=True, allow_none=True, metadata=_loinc("temperature", "Body temperature, °C"))
    consciousness = fields.String(allow_none=True)
    news2 = fields.Nested(News2Out, allow_none=True, metadata={"description": "Null when nothing in or before the set could be scored"})
    alert_level = fields.String(allow_none=True, metadata={"description": "The alert level the score reached: urgent, emergency or null"})
    alert = fields.Nested(ReadingAlertOut, allow_none=True, metadata={
        "description": "The alert this reading raised (once per episode, again on a rise), if any"})
    voided_at = fields.DateTime(allow_none=True)
    voided_by = fields.String(allow_none=True)
    void_reason = fields.String(allow_none=True)


class PostedReadingOut(Schema):
    """What a post says of each reading: where it is kept, its score and any alert it raised. Not the
    values again: the poster has them, and a monitor posts often (GET /sessions/{id}/vitals shows them)."""

    id = fields.String()
    device_id = fields.String(allow_none=True)
    entered_by = fields.String(allow_none=True)
    measured_at = fields.DateTime()
    news2 = fields.Nested(News2Out, allow_none=True, metadata={"description": "Null when nothing in or before the set could be scored"})
    alert_level = fields.String(allow_none=True, metadata={"description": "The alert level the score reached: urgent, emergency or null"})
    alert = fields.Nested(ReadingAlertOut, allow_none=True, metadata={
        "description": "The alert this reading raised (once per episode, again on a rise), if any"})
    already_stored = fields.Boolean(metadata={
        "description": "The reading was stored by an earlier post (a batch sent again); answered as it was stored"})


class ReadingsPostedOut(Schema):
    session_id = fields.String()
    readings = fields.List(fields.Nested(PostedReadingOut), metadata={"description": "In the order they were posted"})


def shown(row: dict) -> dict:
    """A readings row (with the alert it raised) as the API shows it."""
    news2 = None
    if row["news2_total"] is not None:
        news2 = {"total": row["news2_total"], "points": row["news2_points"] or {}, "complete": bool(row["news2_complete"]),
                 "filled_in": row["news2_filled_in"] or []}
    alert = {"id": row["alert_id"], "level": row["alert_raised_level"]} if row.get("alert_id") else None
    return {**row, "source": "monitor" if row["device_id"] else "nurse", "news2": news2, "alert": alert}


def posted(answer: dict) -> dict:
    return {"session_id": answer["session_id"], "readings": [shown(row) for row in answer["readings"]]}


@blp.route("/vitals")
class MonitorReadings(MethodView):
    @requires_roles()
    @blp.arguments(ReadingsIn())
    @blp.response(201, ReadingsPostedOut)
    @blp.alt_response(401, description="No device token, or one that is unknown or revoked.")
    @blp.alt_response(403, description="A staff token: staff enter readings on POST /sessions/{id}/vitals.")
    @blp.alt_response(409, description="No session is started in the monitor's room (nothing stored), or a reading's time was "
                                       "stored before with other values (details.readings names it).")
    @blp.alt_response(422, description="details.readings names each reading at fault by its index: a value no living person can "
                                       "show, a time in the future or before the session started.")
    @blp.alt_response(429, schema=ErrorSchema, description="This monitor posts more often than CLINIC_RATE_LIMIT_PER_DEVICE allows; "
                                                           "Retry-After says when to post again.")
    def post(self, data):
        """A bedside monitor posts one to 100 readings, with its device token (`Authorization: Bearer dev_...`).

        They go to the session started in the monitor's room. Temperatures are in °C: a monitor that
        measures in °F converts first. A batch sent again after a timeout (same times, same values) stores
        nothing twice and is answered as before; in a partly repeated batch only the new readings are
        stored, and `already_stored` marks the others. Nothing is stored when any reading is refused.
        """
        return posted(vitals.record_from_device(unit_of_work(access=vitals.device_access()), rules(), g.device_token_hash,
                                                data["readings"]))


@blp.route("/sessions/<uuid:session_id>/vitals")
class SessionReadings(MethodView):
    @audited(CREATE, vitals.VITALS, write=True, resource_arg="session_id", patient_of=no_patient)
    @blp.arguments(ReadingsIn())
    @blp.response(201, ReadingsPostedOut)
    @blp.alt_response(404, description="No such session.")
    @blp.alt_response(409, description="The session has ended (completed, aborted or cancelled).")
    @blp.alt_response(422, description="details.readings names each reading at fault by its index: a value no living person can "
                                       "show, a time in the future or before the patient checked in.")
    def post(self, data, session_id):
        """A nurse enters readings by hand: on a started session, or on a waiting one (baseline readings
        before the start). Scored with NEWS2 as a monitor's are; temperatures in °C."""
        return posted(vitals.record_by_hand(unit_of_work(), rules(), str(session_id), data["readings"], actor()))

    @audited(READ, vitals.VITALS, resource_arg="session_id", patient_of=no_patient)
    @blp.arguments(VitalsQuery(), location="query")
    @blp.response(200, ReadingOut(many=True))
    @blp.alt_response(404, description="No such session.")
    def get(self, query, session_id):
        """A session's readings, oldest first (newest last), voided ones too, one page at a time: each
        with its NEWS2 total and the points each parameter scored."""
        with reading() as connection:
            session = monitoring.session_of(connection, str(session_id))
            if session is None:
                raise NotFound("no session with this id", {"session_id": str(session_id)})
            rows = monitoring.readings_of_session(connection, str(session_id), query["since"], query["limit"], query["offset"])
        audit.concerning(patient_id=session["patient_id"])
        return [shown(row) for row in rows]


@blp.route("/sessions/<uuid:session_id>/vitals/<uuid:reading_id>/void")
class VoidReading(MethodView):
    @audited(UPDATE, vitals.VITALS, write=True, resource_arg="reading_id", patient_of=no_patient)
    @blp.arguments(ReadingVoidIn())
    @blp.response(200, ReadingOut)
    @blp.alt_response(404, description="No such session, or no such reading in it.")
    @blp.alt_response(409, description="The reading is voided already, or the session has ended.")
    def post(self, data, session_id, reading_id):
        """Void a reading entered in error, with the reason: it stays in the history, marked voided, and is
        left out of NEWS2 scores and alerts from now on."""
        return shown(vitals.void_reading(unit_of_work(), rules(), str(session_id), str(reading_id), data["reason"], actor()))

