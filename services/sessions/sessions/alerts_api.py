"""Sessions' HTTP API for alerts: the list (the open ones first of all) and acknowledging one.

An alert is raised by a NEWS2 score at an alert level (once per episode, again on a rise), by a
monitor that stopped sending (`monitor_silent`), or again as an escalation when nobody acknowledged
one in time. Acknowledging an alert acknowledges its escalation too (and the other way round).
Alerts concern patients, so every view is audited.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic import audit
from clinic.audit import READ, SEARCH, UPDATE, audited, no_patient
from clinic.errors import NotFound
from clinic.events import ALERT_KINDS, ALERT_LEVELS
from clinic.validation import PLAUSIBLE_MOMENT
from clinic.web import actor, reading, unit_of_work
from sessions.db import monitoring
from sessions.services import alerts

blp = Blueprint("alerts", __name__, url_prefix="/alerts",
                description="Alerts from NEWS2 scores and silent monitors, escalated when nobody acknowledges them.")

ALERT = "alert"


class AlertQuery(Schema):
    open = fields.Boolean(load_default=None, metadata={"description": "true: only alerts nobody acknowledged; false: only acknowledged"})
    session_id = fields.UUID(load_default=None)
    room_id = fields.UUID(load_default=None)
    kind = fields.String(load_default=None, validate=validate.OneOf(ALERT_KINDS))
    level = fields.String(load_default=None, validate=validate.OneOf(ALERT_LEVELS))
    since = fields.AwareDateTime(load_default=None, validate=PLAUSIBLE_MOMENT, metadata={"description": "Raised at or after this moment"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


class ScoredParameterOut(Schema):
    parameter = fields.String()
    points = fields.Integer()


class AlertOut(Schema):
    id = fields.String()
    session_id = fields.String()
    patient_id = fields.String()
    room_id = fields.String()
    room_name = fields.String()
    kind = fields.String(metadata={"description": "news2 or monitor_silent"})
    level = fields.String(metadata={"description": "urgent or emergency"})
    news2_score = fields.Integer(allow_none=True, metadata={"description": "Null for a silent monitor"})
    scored = fields.List(fields.Nested(ScoredParameterOut), metadata={"description": "The parameters that scored, with their points"})
    observed_at = fields.DateTime(allow_none=True, metadata={"description": "When the readings behind a NEWS2 alert were taken"})
    silent_since = fields.DateTime(allow_none=True, metadata={"description": "A silent monitor: since when nothing arrived"})
    raised_at = fields.DateTime()
    reading_id = fields.String(allow_none=True, metadata={"description": "The reading whose score raised it"})
    escalation = fields.Boolean(metadata={"description": "Raised again because nobody acknowledged the alert in time"})
    escalation_of = fields.String(allow_none=True)
    acknowledged_at = fields.DateTime(allow_none=True)
    acknowledged_by = fields.String(allow_none=True)


@blp.route("")
class Alerts(MethodView):
    @audited(SEARCH, ALERT, patient_of=no_patient)
    @blp.arguments(AlertQuery(), location="query")
    @blp.response(200, AlertOut(many=True))
    def get(self, query):
        """Alerts, oldest first: `open=true` for those nobody has acknowledged yet; filter by session,
        room, kind, level and when they were raised."""
        acknowledged = None if query["open"] is None else not query["open"]
        with reading() as connection:
            found = monitoring.listed_alerts(
                connection, acknowledged=acknowledged, session_id=_text(query["session_id"]), room_id=_text(query["room_id"]),
                kind=query["kind"], level=query["level"], since=query["since"], limit=query["limit"], offset=query["offset"])
        audit.concerning(patient_ids=[alert["patient_id"] for alert in found])
        return found


@blp.route("/<uuid:alert_id>")
class AlertById(MethodView):
    @audited(READ, ALERT, resource_arg="alert_id", patient_of=no_patient)
    @blp.response(200, AlertOut)
    @blp.alt_response(404, description="No such alert.")
    def get(self, alert_id):
        """One alert."""
        with reading() as connection:
            found = monitoring.alert(connection, str(alert_id))
        if found is None:
            raise NotFound("no alert with this id", {"alert_id": str(alert_id)})
        audit.concerning(patient_id=found["patient_id"])
        return found


@blp.route("/<uuid:alert_id>/acknowledge")
class Acknowledge(MethodView):
    @audited(UPDATE, ALERT, write=True, resource_arg="alert_id", patient_of=no_patient)
    @blp.response(200, AlertOut)
    @blp.alt_response(404, description="No such alert.")
    @blp.alt_response(409, description="Acknowledged already (details name by whom and when).")
    def post(self, alert_id):
        """A nurse or neurologist acknowledges an alert: they have seen it and are dealing with it. Its
        escalation (or the alert it escalates) is acknowledged with it."""
        return alerts.acknowledge_alert(unit_of_work(), str(alert_id), actor())


def _text(value) -> str | None:
    return str(value) if value is not None else None
