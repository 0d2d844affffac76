"""Sessions' HTTP API for the care given during a session: the medication administration record,
pain scores and visitors.

Nurses and neurologists record and read them. The front desk reads who is visiting (it directs
visitors to the room), nothing else here. Every view reads or changes patient data, so each is
audited (clinic.audit): the use case names the session's patient. Times go in and out as ISO 8601
with a UTC offset.
"""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from clinic import audit
from clinic.audit import CREATE, READ, UPDATE, audited, no_patient
from clinic.events import DOSE_UNITS, DRUG_ROUTES, INFUSION_RATE_FORM
from clinic.validation import DOSE_TEXT, PLAUSIBLE_MOMENT, DecimalText, JsonBoolean, plain_text
from clinic.web import actor, reading, unit_of_work
from sessions.db.care import PAIN_SCORE_LOINC
from sessions.domain.medications import amount
from sessions.request_context import rules
from sessions.services import medications, pain, visitors

blp = Blueprint("care", __name__, url_prefix="/sessions",
                description="The care given during a session: the medication administration record, pain scores, visitors.")


def _adult(value: bool) -> bool:
    if value is not True:
        raise ValidationError("a visitor must be an adult: confirm it")
    return value


class AdministrationIn(Schema):
    session_drug_id = fields.UUID(required=True, metadata={"description": "The plan drug given, as GET /sessions/{id} lists it"})
    dose = DecimalText(DOSE_TEXT, required=True, validate=validate.Range(min=0, min_inclusive=False),
                       metadata={"description": "Not more than the planned dose, in the plan's unit"})
    unit = fields.String(required=True, validate=validate.OneOf(DOSE_UNITS))
    route = fields.String(required=True, validate=validate.OneOf(DRUG_ROUTES))
    rate = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        INFUSION_RATE_FORM, error="not a rate like '125 mL/h' (a number, a space, a unit per h or min)"))
    given_at = fields.AwareDateTime(required=True, validate=PLAUSIBLE_MOMENT,
                                    metadata={"description": "When it was given: not before the session started, not in the future"})


class AdministrationOut(Schema):
    id = fields.String()
    session_id = fields.String()
    session_drug_id = fields.String()
    name = fields.String()
    dose = fields.Function(lambda given: amount(given["dose"]), metadata={"type": "string", "description": "As written: 30, 0.5"})
    unit = fields.String()
    route = fields.String()
    rate = fields.String(allow_none=True)
    given_at = fields.DateTime()
    given_by = fields.String()
    recorded_at = fields.DateTime()
    voided_at = fields.DateTime(allow_none=True)
    voided_by = fields.String(allow_none=True)
    void_reason = fields.String(allow_none=True)


class VoidIn(Schema):
    reason = fields.String(required=True, validate=plain_text(500))


class PainScoreIn(Schema):
    score = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=10),
                           metadata={"description": f"0 (no pain) to 10 (the worst imaginable); LOINC {PAIN_SCORE_LOINC}"})
    measured_at = fields.AwareDateTime(required=True, validate=PLAUSIBLE_MOMENT, metadata={"description": "Not in the future"})


class PainScoreOut(Schema):
    id = fields.String()
    session_id = fields.String()
    score = fields.Integer()
    loinc = fields.Constant(PAIN_SCORE_LOINC, dump_only=True, metadata={"type": "string", "description": "Pain severity 0-10"})
    measured_at = fields.DateTime()
    recorded_by = fields.String()
    recorded_at = fields.DateTime()


class VisitorIn(Schema):
    name = fields.String(required=True, validate=plain_text(200))
    relationship = fields.String(required=True, validate=plain_text(100), metadata={"description": "To the patient: wife, son, friend"})
    adult_confirmed = JsonBoolean(required=True, validate=_adult,
                                  metadata={"description": "Must be true: visitors are adults", "enum": [True]})


class VisitorOut(Schema):
    id = fields.String()
    session_id = fields.String()
    name = fields.String()
    relationship = fields.String()
    adult_confirmed = fields.Boolean()
    arrived_at = fields.DateTime()
    arrived_by = fields.String()
    left_at = fields.DateTime(allow_none=True)
    left_by = fields.String(allow_none=True)


@blp.route("/<uuid:session_id>/medications")
class Medications(MethodView):
    @audited(CREATE, "medication", write=True, patient_of=no_patient)
    @blp.arguments(AdministrationIn())
    @blp.response(201, AdministrationOut)
    @blp.alt_response(404, description="No such session.")
    @blp.alt_response(409, description="The session is not started (details.status).")
    @blp.alt_response(422, description="Refused, each reason by what is at fault: session_drug_id (not on the session's plan), "
                                       "route, unit, dose (more than planned), total_24h (past the plan's maximum), given_at.")
    def post(self, data, session_id):
        """Record a drug of the session's plan as given, by the caller.

        The drug is named by the id GET /sessions/{id} lists for it. Its route and unit must be the
        plan's, the dose no more than the planned dose, and the time not in the future nor before the
        session started. Where the plan sets a maximum per 24 hours, no 24 hours may hold more of the
        drug (same name whatever its case, same unit) given to the patient, in this session or an
        earlier one, voided administrations left out; a dose recorded late counts against the later
        ones too. Two administrations at once past the maximum: one is refused.
        """
        given = {**data, "session_drug_id": str(data["session_drug_id"])}
        return medications.give(unit_of_work(), rules(), str(session_id), given, actor())

    @audited(READ, "medication", patient_of=no_patient)
    @blp.response(200, AdministrationOut(many=True))
    @blp.alt_response(404, description="No such session.")
    def get(self, session_id):
        """The session's medication administration record, in the order given.

        Voided administrations are included, marked with when, by whom and why."""
        with reading() as connection:
            patient_id, found = medications.record_of(connection, str(session_id))
        audit.concerning(patient_id=patient_id)
        return found


@blp.route("/<uuid:session_id>/medications/<uuid:medication_id>/void")
class VoidMedication(MethodView):
    @audited(UPDATE, "medication", write=True, resource_arg="medication_id", patient_of=no_patient)
    @blp.arguments(VoidIn())
    @blp.response(200, AdministrationOut)
    @blp.alt_response(404, description="No such session, or no such administration in it.")
    @blp.alt_response(409, description="Voided already.")
    def post(self, data, session_id, medication_id):
        """Void an administration recorded in error, with the reason.

        It stays in the record, marked, and counts in no 24-hour total from then on. An administration of
        an ended session may be voided too: the record in sessions is corrected (what
        sessions.session.completed carried is not)."""
        return medications.void(unit_of_work(), str(session_id), str(medication_id), data["reason"], actor())


@blp.route("/<uuid:session_id>/pain-scores")
class PainScores(MethodView):
    @audited(CREATE, "pain_score", write=True, patient_of=no_patient)
    @blp.arguments(PainScoreIn())
    @blp.response(201, PainScoreOut)
    @blp.alt_response(404, description="No such session.")
    @blp.alt_response(409, description="The session has ended (details.status).")
    @blp.alt_response(422, description="Timed in the future.")
    def post(self, data, session_id):
        """Record the patient's pain, 0 to 10 (LOINC 72514-3), with the time it was measured.

        On a waiting session (the pain the patient came with) or a started one. The session reports
        the last score at or before the start as the pain before, the last one after it as the pain after.
        """
        return pain.record(unit_of_work(), rules(), str(session_id), data["score"], data["measured_at"], actor())

    @audited(READ, "pain_score", patient_of=no_patient)
    @blp.response(200, PainScoreOut(many=True))
    @blp.alt_response(404, description="No such session.")
    def get(self, session_id):
        """The session's pain scores, in the order measured."""
        with reading() as connection:
            patient_id, found = pain.scores_of(connection, str(session_id))
        audit.concerning(patient_id=patient_id)
        return found


@blp.route("/<uuid:session_id>/visitors")
class Visitors(MethodView):
    @audited(CREATE, "visitor", write=True, patient_of=no_patient)
    @blp.arguments(VisitorIn())
    @blp.response(201, VisitorOut)
    @blp.alt_response(404, description="No such session.")
    @blp.alt_response(409, description="A visitor is there already (details name them: visitor_id, name), or the session has ended.")
    def post(self, data, session_id):
        """An adult visitor comes to sit with the patient, while the session waits or runs.

        One visitor at a time: while one is there, another is refused (409, naming who is there)
        until the first leaves. The visitor's name stays in sessions: it is in no event and no log.
        """
        return visitors.arrive(unit_of_work(), str(session_id), data["name"], data["relationship"], actor())

    @audited(READ, "visitor", patient_of=no_patient)
    @blp.response(200, VisitorOut(many=True))
    @blp.alt_response(404, description="No such session.")
    def get(self, session_id):
        """The session's visitors, in the order they came; the one present has no left_at."""
        with reading() as connection:
            patient_id, found = visitors.visitors_of(connection, str(session_id))
        audit.concerning(patient_id=patient_id)
        return found


@blp.route("/<uuid:session_id>/visitors/<uuid:visitor_id>/leave")
class VisitorLeaves(MethodView):
    @audited(UPDATE, "visitor", write=True, resource_arg="visitor_id", patient_of=no_patient)
    @blp.response(200, VisitorOut)
    @blp.alt_response(404, description="No such session, or no such visitor in it.")
    @blp.alt_response(409, description="The visitor left already.")
    def post(self, session_id, visitor_id):
        """The visitor has gone; another may come."""
        return visitors.leave(unit_of_work(), str(session_id), str(visitor_id), actor())
