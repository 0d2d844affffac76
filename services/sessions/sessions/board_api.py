"""The ward board over HTTP: every infusion room with its session now (audited: it shows patients)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic import audit
from clinic.audit import READ, audited, no_patient
from clinic.web import clinic_today, now, reading, settings
from sessions.services import board
from sessions.services.sessions import local_day

blp = Blueprint("board", __name__, url_prefix="/board", description="The infusion rooms now: who is in each, how they are doing.")


class LastVitalsOut(Schema):
    reading_id = fields.String()
    measured_at = fields.DateTime(metadata={"description": "When the readings were taken"})
    news2_total = fields.Integer(attribute="total", metadata={"description": "The NEWS2 total"})
    points = fields.Dict(keys=fields.String(), values=fields.Integer(),
                         metadata={"description": "The NEWS2 points each parameter scored"})
    level = fields.String(allow_none=True, metadata={"description": "urgent or emergency when the score is at an alert level"})


class OpenAlertOut(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "news2 or monitor_silent"})
    level = fields.String()
    news2_score = fields.Integer(allow_none=True)
    escalation = fields.Boolean()
    observed_at = fields.DateTime(allow_none=True)
    raised_at = fields.DateTime()


class BoardSessionOut(Schema):
    id = fields.String()
    status = fields.String(metadata={"description": "started, or waiting when nobody's infusion has started in the room"})
    patient_id = fields.String()
    checked_in_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    minutes_elapsed = fields.Integer(allow_none=True, metadata={"description": "Since the start; null while waiting"})
    planned_minutes = fields.Integer()
    spo2_scale = fields.Integer()
    last_vitals = fields.Nested(LastVitalsOut, allow_none=True)
    open_alerts = fields.List(fields.Nested(OpenAlertOut), metadata={"description": "Alerts nobody has acknowledged"})
    visitor_present = fields.Boolean()
    plan_changed = fields.Boolean(metadata={"description": "The plan the session began under has since been retired or replaced"})


class BoardRoomOut(Schema):
    room_id = fields.String()
    name = fields.String()
    active = fields.Boolean()
    monitored = fields.Boolean(metadata={"description": "The room has a registered bedside monitor"})
    session = fields.Nested(BoardSessionOut, allow_none=True)


class BoardOut(Schema):
    rooms = fields.List(fields.Nested(BoardRoomOut))


@blp.route("")
class Board(MethodView):
    @audited(READ, "board", patient_of=no_patient)
    @blp.response(200, BoardOut)
    def get(self):
        """Every infusion room in use, by name, with the session in it now: the started one, else the
        patient waiting there. For each: the patient, minutes elapsed and planned, the last vital
        signs with their NEWS2 total, the points each parameter scored and when they were taken, the
        open alerts, whether a visitor is present, whether the plan has changed, and whether the room
        has a monitor. A room out of use is shown while it still has a session."""
        with reading() as connection:
            rooms = board.board(connection, now(), local_day(clinic_today(), settings().timezone)[0])
        audit.concerning(patient_ids=board.patients_on(rooms))
        return {"rooms": rooms}
