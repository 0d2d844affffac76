"""Records' HTTP API: individualised treatment plans, from draft to active to retired.

Activation and retirement lock the patient's row first, then the plan's: two neurologists
activating two drafts for one patient at the same moment queue up, and the later one retires the
earlier one. The partial unique index on active plans is the last word if that ever fails.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from clinic.db import new_id, utcnow
from clinic.errors import Conflict, NotFound
from clinic.events import Drug
from clinic.outbox import add_event
from clinic.web import engine
from records import SERVICE, audit, db, domain
from records.api_support import CLINICAL_READERS, CLINICIANS, existing_patient, plain_text
from records.audit import ACTIVATE, CREATE, READ, RETIRE, UPDATE, audited

blp = Blueprint("treatment_plans", __name__, description="Individualised treatment plans: draft, active, retired.")

MINUTES = validate.Range(min=domain.MINIMUM_INFUSION_MINUTES, max=domain.MAXIMUM_INFUSION_MINUTES)
MOST_DRUGS = 30


class DrugIn(Drug):
    """A drug as a neurologist writes it: the shared event schema, plus what makes one drug coherent."""

    name = fields.String(required=True, validate=plain_text(200))

    @validates_schema
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


class PlanPatch(Schema):
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


def _stored(drugs: list[dict]) -> list[dict]:
    """Drugs as kept in the plan's JSON: doses as exact decimal text."""
    return [{**drug, "name": drug["name"].strip(), "dose": domain.decimal_text(drug["dose"]),
             "max_per_24h": domain.decimal_text(drug.get("max_per_24h")), "rate": drug.get("rate")} for drug in drugs]


def _plan_owner(path_args: dict) -> str | None:
    with engine().connect() as connection:
        return db.plan_patient_id(connection, str(path_args["plan_id"]))


def _existing_plan(connection, plan_id, for_update: bool = False) -> dict:
    plan = db.get_plan(connection, str(plan_id), for_update=for_update)
    if plan is None:
        raise NotFound("no treatment plan with this id", {"plan_id": str(plan_id)})
    return plan


def _locked(connection, plan_id) -> dict:
    """The plan, with its patient's row and then its own row locked (always in that order)."""
    patient_id = _existing_plan(connection, plan_id)["patient_id"]
    existing_patient(connection, patient_id, for_update=True)
    return _existing_plan(connection, plan_id, for_update=True)


@blp.route("/patients/<uuid:patient_id>/treatment-plans")
class PatientPlans(MethodView):
    @audited(READ, "treatment_plan", CLINICAL_READERS)
    @blp.response(200, PlanOut(many=True))
    def get(self, patient_id):
        """A patient's treatment plans, newest first: at most one active, any number of drafts and retired ones."""
        with engine().connect() as connection:
            existing_patient(connection, patient_id)
            return db.list_plans(connection, str(patient_id))

    @audited(CREATE, "treatment_plan", CLINICIANS, write=True)
    @blp.arguments(PlanIn())
    @blp.response(201, PlanOut)
    def post(self, data, patient_id):
        """Write a draft plan: infusion length (at least 120 minutes), drugs with dose, unit, route and purpose, notes.

        A draft can be changed freely and means nothing outside records until it is activated.
        """
        now = utcnow()
        plan = {"id": new_id(), "patient_id": str(patient_id), "status": domain.DRAFT, "infusion_minutes": data["infusion_minutes"],
                "drugs": _stored(data["drugs"]), "notes": data["notes"], "created_by": audit.current().principal.subject,
                "created_at": now, "updated_at": now}
        audit.concerning(resource_id=plan["id"])
        with audit.transaction() as connection:
            existing_patient(connection, patient_id)
            connection.execute(db.treatment_plans.insert().values(**plan))
            return db.get_plan(connection, plan["id"])


@blp.route("/treatment-plans/<uuid:plan_id>")
class PlanById(MethodView):
    @audited(READ, "treatment_plan", CLINICAL_READERS, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.response(200, PlanOut)
    def get(self, plan_id):
        """One treatment plan."""
        with engine().connect() as connection:
            return _existing_plan(connection, plan_id)

    @audited(UPDATE, "treatment_plan", CLINICIANS, write=True, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.arguments(PlanPatch())
    @blp.response(200, PlanOut)
    @blp.alt_response(409, description="The plan is no longer a draft.")
    def patch(self, changes, plan_id):
        """Change a draft plan. Drugs, when given, replace the whole list. Active and retired plans are not edited: write a new draft."""
        if "drugs" in changes:
            changes["drugs"] = _stored(changes["drugs"])
        with audit.transaction() as connection:
            plan = _existing_plan(connection, plan_id, for_update=True)
            domain.ensure_editable(plan)
            db.update_plan(connection, plan["id"], **changes, updated_at=utcnow())
            return db.get_plan(connection, plan["id"])


@blp.route("/treatment-plans/<uuid:plan_id>/activate")
class PlanActivation(MethodView):
    @audited(ACTIVATE, "treatment_plan", CLINICIANS, write=True, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.response(200, PlanOut)
    @blp.alt_response(409, description="The plan has no drugs, or is already active or retired.")
    def post(self, plan_id):
        """Put a draft plan in force (neurologists only).

        The patient's active plan, if any, is retired in the same transaction. Scheduling and sessions
        hear records.treatment_plan.retired for the old plan, then records.treatment_plan.activated
        for this one, with its infusion length and drugs with their dose limits.
        """
        try:
            with audit.transaction() as connection:
                plan = _locked(connection, plan_id)
                domain.ensure_activatable(plan)
                now, who = utcnow(), audit.current().principal.subject
                replaced = db.active_plan(connection, plan["patient_id"])
                if replaced is not None:
                    db.update_plan(connection, replaced["id"], status=domain.RETIRED, retired_at=now, retired_by=who,
                                   replaced_by_plan_id=plan["id"], updated_at=now)
                    add_event(connection, db.outbox, SERVICE, "records.treatment_plan.retired",
                              domain.retired_payload(replaced, plan["id"]))
                db.update_plan(connection, plan["id"], status=domain.ACTIVE, activated_at=now, activated_by=who, updated_at=now)
                add_event(connection, db.outbox, SERVICE, "records.treatment_plan.activated",
                          domain.activated_payload(plan, replaced["id"] if replaced else None))
                return db.get_plan(connection, plan["id"])
        except sa.exc.IntegrityError:
            # Only reachable if the locks above were bypassed: the index keeps one active plan regardless.
            raise Conflict("another plan of this patient was activated at the same moment; look again and retry",
                           {"plan_id": str(plan_id)}) from None


@blp.route("/treatment-plans/<uuid:plan_id>/retire")
class PlanRetirement(MethodView):
    @audited(RETIRE, "treatment_plan", CLINICIANS, write=True, resource_arg="plan_id", patient_of=_plan_owner)
    @blp.response(200, PlanOut)
    @blp.alt_response(409, description="The plan is already retired.")
    def post(self, plan_id):
        """Take a plan out of force; the patient then has no active plan until another is activated.

        An active plan's retirement is sent to scheduling and sessions (records.treatment_plan.retired).
        A draft can be retired too, to set it aside; nobody outside records heard of it, so no event.
        """
        with audit.transaction() as connection:
            plan = _locked(connection, plan_id)
            announce = domain.retirement_is_news(plan)
            now = utcnow()
            db.update_plan(connection, plan["id"], status=domain.RETIRED, retired_at=now,
                           retired_by=audit.current().principal.subject, updated_at=now)
            if announce:
                add_event(connection, db.outbox, SERVICE, "records.treatment_plan.retired", domain.retired_payload(plan))
            return db.get_plan(connection, plan["id"])
