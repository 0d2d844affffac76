"""Records' HTTP API: individualised treatment plans, from draft to active to retired (records.services.plans)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from clinic.audit import ACTIVATE, CREATE, READ, RETIRE, UPDATE, audited
from clinic.events import MINIMUM_INFUSION_MINUTES, Drug
from clinic.validation import DOSE_TEXT, DecimalText, plain_text, stated_as
from clinic.web import actor, reading, unit_of_work
from records import domain
from records.services import plans
from records.validators import Change

blp = Blueprint("treatment_plans", __name__, description="Individualised treatment plans: draft, active, retired.")

MINUTES = validate.Range(min=MINIMUM_INFUSION_MINUTES, max=domain.MAXIMUM_INFUSION_MINUTES)
MOST_DRUGS = 30
POSITIVE = validate.Range(min=0, min_inclusive=False)


class DrugIn(Drug):
    """A drug as a neurologist writes it: the shared event schema, plus what makes one drug coherent."""

    name = fields.String(required=True, validate=plain_text(200))
    dose = DecimalText(DOSE_TEXT, required=True, validate=POSITIVE)
    max_per_24h = DecimalText(DOSE_TEXT, load_default=None, allow_none=True, validate=POSITIVE)

    @validates_schema
    @stated_as(anyOf=[{"properties": {"route": {"enum": list(domain.ROUTES_WITH_RATE)}}},
                      {"properties": {"rate": {"nullable": True, "enum": [None]}}}, {"not": {"required": ["rate"]}}])
    def coherent(self, data, **_):
        problem = domain.drug_problem(data)
        if problem:
            raise ValidationError(problem[1], problem[0])


def _no_duplicate_drugs(data: dict) -> None:
    # A schema-level check, so it only runs once every drug is whole (field validators see half-loaded lists).
    duplicate = domain.duplicate_drug(data.get("drugs") or [])
    if duplicate:
        raise ValidationError(f"{duplicate} is listed twice for the same route; its limits would be ambiguous", "drugs")


class PlanIn(Schema):
    infusion_minutes = fields.Integer(required=True, strict=True, validate=MINUTES,
                                      metadata={"description": "Planned infusion length; at least 120"})
    drugs = fields.List(fields.Nested(DrugIn), load_default=list, validate=validate.Length(max=MOST_DRUGS))
    notes = fields.String(load_default=None, allow_none=True, validate=plain_text(5000, min_length=0, multiline=True))

    @validates_schema
    def each_drug_once(self, data, **_):
        _no_duplicate_drugs(data)


class PlanPatch(Change):
    infusion_minutes = fields.Integer(strict=True, validate=MINUTES)
    drugs = fields.List(fields.Nested(DrugIn), validate=validate.Length(max=MOST_DRUGS))
    notes = fields.String(allow_none=True, validate=plain_text(5000, min_length=0, multiline=True))

    @validates_schema
    def each_drug_once(self, data, **_):
        _no_duplicate_drugs(data)


class PlanOut(Schema):
    id = fields.String()
    patient_id = fields.String()
    status = fields.String(metadata={"description": "draft, active or retired"})
    infusion_minutes = fields.Integer()
    drugs = fields.List(fields.Nested(Drug))
    notes = fields.String(allow_none=True)
    created_by = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    activated_by = fields.String(allow_none=True)
    activated_at = fields.DateTime(allow_none=True)
    retired_by = fields.String(allow_none=True)
    retired_at = fields.DateTime(allow_none=True)
    replaced_by_plan_id = fields.String(allow_none=True)


def _plan_owner(path_args: dict) -> str | None:
    """The patient a plan is about, for the audit of a request naming the plan only."""
    with reading() as connection:
        return plans.plan_owner(connection, path_args["plan_id"])


@blp.route("/patients/<uuid:patient_id>/treatment-plans")
class PatientPlans(MethodView):
    @audited(READ, "treatment_plan")
    @blp.response(200, PlanOut(many=True))
    def get(self, patient_id):
        """A patient's treatment plans, newest first: at most one active, any number of drafts and retired ones."""
        with reading() as connection:
            return plans.patient_plans(connection, patient_id)

    @audited(CREATE, "treatment_plan", write=True)
    @blp.arguments(PlanIn())
    @blp.response(201, PlanOut)
    def post(self, data, patient_id):
        """Write a draft plan: infusion length (at least 120 minutes), drugs with dose, unit, route and purpose, notes.

        A draft can be changed freely and means nothing outside records until it is activated.
        """
        return plans.write_draft(unit_of_work(), patient_id, data, by=actor())


@blp.route("/treatment-plans/<uuid:plan_id>")
class PlanById(MethodView):
    @audited(READ, "treatment_plan", resource_arg="plan_id", patient_of=_plan_owner)
    @blp.response(200, PlanOut)
    def get(self, plan_id):
        """One treatment plan."""
        with reading() as connection:
            return plans.existing_plan(connection, plan_id)

    @audited(UPDATE, "treatment_plan", write=True, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.arguments(PlanPatch())
    @blp.response(200, PlanOut)
    @blp.alt_response(409, description="The plan is no longer a draft.")
    def patch(self, changes, plan_id):
        """Change a draft plan. Drugs, when given, replace the whole list. Active and retired plans are not edited: write a new draft."""
        return plans.change_draft(unit_of_work(), plan_id, changes)


@blp.route("/treatment-plans/<uuid:plan_id>/activate")
class PlanActivation(MethodView):
    @audited(ACTIVATE, "treatment_plan", write=True, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.response(200, PlanOut)
    @blp.alt_response(409, description="The plan has no drugs, or is already active or retired.")
    def post(self, plan_id):
        """Put a draft plan in force (neurologists only).

        The patient's active plan, if any, is retired in the same transaction. Scheduling and sessions
        hear records.treatment_plan.retired for the old plan, then records.treatment_plan.activated
        for this one, with its infusion length and drugs with their dose limits.
        """
        return plans.activate_plan(unit_of_work(), plan_id, by=actor())


@blp.route("/treatment-plans/<uuid:plan_id>/retire")
class PlanRetirement(MethodView):
    @audited(RETIRE, "treatment_plan", write=True, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.response(200, PlanOut)
    @blp.alt_response(409, description="The plan is already retired.")
    def post(self, plan_id):
        """Take a plan out of force; the patient then has no active plan until another is activated.

        An active plan's retirement is sent to scheduling and sessions (records.treatment_plan.retired).
        A draft can be retired too, to set it aside; nobody outside records heard of it, so no event.
        """
        return plans.retire_plan(unit_of_work(), plan_id, by=actor())
