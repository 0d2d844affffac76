"""Sessions' HTTP API for the session itself: reading sessions, starting one, setting its SpO2 scale,
discharging the patient to an escort, aborting.

Sessions are opened by the worker when scheduling reports an infusion's check-in; nobody creates one
over HTTP. Times go in and out as ISO 8601 with a UTC offset; dates in queries are the clinic's local
dates. Every view reads or changes patient data, so each is audited (clinic.audit).
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic import audit
from clinic.audit import READ, SEARCH, UPDATE, audited, no_patient
from clinic.auth import NEUROLOGIST
from clinic.events import ABORT_REASONS
from clinic.validation import PLAUSIBLE_DAY, JsonBoolean, plain_text
from clinic.web import actor, current_principal, reading, settings, unit_of_work
from sessions.domain import care
from sessions.domain.medications import amount
from sessions.services import discharge, sessions

blp = Blueprint("sessions", __name__, url_prefix="/sessions",
                description="Infusion sessions from check-in to discharge: start, SpO2 scale, discharge to an escort, abort.")


class SessionQuery(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(care.STATUSES))
    room_id = fields.UUID(load_default=None)
    date = fields.Date(load_default=None, validate=PLAUSIBLE_DAY,
                       metadata={"description": "A local date of the clinic: sessions checked in that day"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class SessionDrugOut(Schema):
    id = fields.String(metadata={"description": "The id a nurse names when recording that this drug was given"})
    name = fields.String()
    dose = fields.Function(lambda drug: amount(drug["dose"]), metadata={"type": "string", "description": "As written: 30, 0.5"})
    unit = fields.String()
    route = fields.String()
    purpose = fields.String()
    rate = fields.String(allow_none=True)
    max_per_24h = fields.Function(lambda drug: amount(drug["max_per_24h"]) if drug["max_per_24h"] is not None else None,
                                  metadata={"type": "string", "nullable": True,
                                            "description": "The most of this drug in 24 hours, in its unit, across sessions"})


class EscortOut(Schema):
    name = fields.String()
    relationship = fields.String()
    phone = fields.String()
    adult_present = fields.Boolean()


class InstructionsOut(Schema):
    rest_today = fields.Boolean()
    call_if_problems = fields.Boolean()
    return_visit = fields.Boolean()


class SessionOut(Schema):
    id = fields.String()
    appointment_id = fields.String()
    patient_id = fields.String()
    room_id = fields.String()
    room_name = fields.String()
    plan_id = fields.String(allow_none=True, metadata={"description": "The treatment plan active at check-in"})
    plan_changed = fields.Boolean(metadata={
        "description": "The plan the session began under has since been retired or replaced; the session keeps its drugs"})
    status = fields.String(metadata={"description": "waiting, started, completed, aborted or cancelled"})
    spo2_scale = fields.Integer(metadata={"description": "NEWS2 SpO2 scale: 1, or 2 for the hypercapnic target range (88-92 %)"})
    planned_minutes = fields.Integer(metadata={"description": "The plan's infusion time (else the appointment's), never below 120"})
    checked_in_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    started_by = fields.String(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    ended_by = fields.String(allow_none=True)
    escort = fields.Nested(EscortOut, allow_none=True, metadata={"description": "On a completed session: the escort the patient left with"})
    instructions_given = fields.Nested(InstructionsOut, allow_none=True, metadata={
        "description": "On a completed session: the post-infusion instructions confirmed as given"})
    early_discharge_reason = fields.String(allow_none=True)
    abort_reason = fields.String(allow_none=True)
    abort_note = fields.String(allow_none=True)
    version = fields.Integer(metadata={"description": "1 when opened, one more at each change"})


class SessionWithDrugsOut(SessionOut):
    drugs = fields.List(fields.Nested(SessionDrugOut), metadata={
        "description": "The plan's drugs as copied at check-in (empty until the plan's copy has arrived)"})


class SessionChangeIn(Schema):
    spo2_scale = fields.Integer(required=True, strict=True, validate=validate.OneOf(care.SPO2_SCALES), metadata={
        "description": "1: NEWS2 SpO2 scale 1; 2: the hypercapnic target range (88-92 %)"})


class EscortIn(Schema):
    name = fields.String(required=True, validate=plain_text(200))
    relationship = fields.String(required=True, validate=plain_text(100))
    phone = fields.String(required=True, validate=plain_text(50))
    # A confirmation left out is one not given: listed with the other unmet conditions, not refused alone.
    adult_present = JsonBoolean(load_default=False, metadata={"description": "The escort is an adult and is here now (false if left out)"})


class InstructionsIn(Schema):
    # Each left out is not confirmed (false): listed with the other unmet conditions, not refused alone.
    rest_today = JsonBoolean(load_default=False, metadata={"description": "Told to rest for the remainder of the day"})
    call_if_problems = JsonBoolean(load_default=False, metadata={"description": "Told to call the clinic at any time if problems occur"})
    return_visit = JsonBoolean(load_default=False, metadata={"description": "Told of the return office visit"})


class DischargeIn(Schema):
    escort = fields.Nested(EscortIn, load_default=None, allow_none=True)
    instructions = fields.Nested(InstructionsIn, load_default=None, allow_none=True)
    early_discharge_reason = fields.String(load_default=None, allow_none=True, validate=plain_text(500), metadata={
        "description": "A neurologist's reason for discharging before the planned minutes have run"})


class AbortIn(Schema):
    reason = fields.String(required=True, validate=validate.OneOf(ABORT_REASONS))
    note = fields.String(load_default=None, allow_none=True, validate=plain_text(1000, multiline=True), metadata={
        "description": "Free text, kept in sessions only (the event carries the reason code alone)"})


def _session_id(path_args: dict) -> str:
    return str(path_args["session_id"])


@blp.route("")
class Sessions(MethodView):
    @audited(SEARCH, "session", patient_of=no_patient)
    @blp.arguments(SessionQuery(), location="query")
    @blp.response(200, SessionOut(many=True))
    def get(self, query):
        """Sessions, the latest check-in first, filtered by status, room and the local date of check-in; paged."""
        span = sessions.local_day(query["date"], settings().timezone) if query["date"] else (None, None)
        with reading() as connection:
            found = sessions.find(connection, status=query["status"], room_id=str(query["room_id"]) if query["room_id"] else None,
                                  checked_in_from=span[0], checked_in_before=span[1], limit=query["limit"], offset=query["offset"])
        audit.concerning(patient_ids=[session["patient_id"] for session in found])
        return found


@blp.route("/<uuid:session_id>")
class SessionById(MethodView):
    @audited(READ, "session", resource_arg="session_id", patient_of=no_patient)
    @blp.response(200, SessionWithDrugsOut)
    def get(self, session_id):
        """One session, with its plan's drugs (each with the id a nurse names when giving it) and
        whether the plan has changed since check-in."""
        with reading() as connection:
            session = sessions.shown(connection, str(session_id))
        audit.concerning(patient_id=session["patient_id"])
        return session

    @audited(UPDATE, "session", write=True, resource_arg="session_id", patient_of=no_patient)
    @blp.arguments(SessionChangeIn())
    @blp.response(200, SessionWithDrugsOut)
    @blp.alt_response(409, description="The session has ended.")
    def patch(self, data, session_id):
        """Set the SpO2 scale the session's readings are scored on (neurologist): 2 for a patient whose
        target is the hypercapnic range (88-92 %), 1 otherwise. Readings scored from then on use it."""
        return sessions.set_spo2_scale(unit_of_work(), str(session_id), data["spo2_scale"], actor())


@blp.route("/<uuid:session_id>/start")
class Start(MethodView):
    @audited(UPDATE, "session", write=True, resource_arg="session_id", patient_of=no_patient)
    @blp.response(200, SessionWithDrugsOut)
    @blp.alt_response(409, description="Not waiting (started already, or ended); or the room has a started session "
                                       "(details.session_id names it).")
    def post(self, session_id):
        """Start the infusion (emits sessions.session.started). A room has one started session at a time."""
        return sessions.start_session(unit_of_work(), str(session_id), actor())


@blp.route("/<uuid:session_id>/discharge")
class Discharge(MethodView):
    @audited(UPDATE, "session", write=True, resource_arg="session_id", patient_of=no_patient)
    @blp.arguments(DischargeIn())
    @blp.response(200, SessionWithDrugsOut)
    @blp.alt_response(409, description="The session is not started (waiting, or ended already).")
    @blp.alt_response(422, description="Conditions unmet: details.unmet lists every one ({condition, message}).")
    def post(self, data, session_id):
        """Discharge the patient to an adult escort; the session completes (emits sessions.session.completed).

        Refused with every unmet condition listed in details.unmet: no escort named, or the escort not
        confirmed as an adult present (`escort`); the three post-infusion instructions not all
        confirmed (`instructions`: rest for the remainder of the day, call the clinic at any time if
        problems occur, the return office visit); an alert not acknowledged (`open_alerts`); the last
        NEWS2 score at an alert level (`last_news2`); the infusion shorter than its planned minutes,
        never less than 120 (`planned_minutes`): only a neurologist may discharge early, giving
        early_discharge_reason.
        """
        escort = data["escort"]
        instructions = data["instructions"] or {}
        request = care.Discharge(
            escort=care.Escort(escort["name"], escort["relationship"], escort["phone"], escort["adult_present"]) if escort else None,
            instructions=instructions, early_reason=data["early_discharge_reason"],
            by_neurologist=current_principal().has_any((NEUROLOGIST,)))
        return discharge.discharge(unit_of_work(), str(session_id), request, actor())


@blp.route("/<uuid:session_id>/abort")
class Abort(MethodView):
    @audited(UPDATE, "session", write=True, resource_arg="session_id", patient_of=no_patient)
    @blp.arguments(AbortIn())
    @blp.response(200, SessionWithDrugsOut)
    @blp.alt_response(409, description="The session has ended already (completed, aborted or cancelled).")
    def post(self, data, session_id):
        """End the session without a discharge, with a reason code (emits sessions.session.aborted with
        the code only; the note stays here). A waiting session may be aborted too: the patient goes home
        without the infusion, and scheduling frees the room."""
        return discharge.abort(unit_of_work(), str(session_id), data["reason"], data["note"], actor())
