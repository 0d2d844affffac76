"""Treatment plans, from draft to active to retired, and the events other services keep a copy from.

Activation and retirement lock the patient's row first, then the plan's (always in that order): two
neurologists activating two drafts for one patient at the same moment queue up, and the later one
retires the earlier one. The partial unique index on active plans is the last word if that ever fails.
Every activation or retirement announced is one more of the patient's plan sequence, stamped on the
event in the same transaction, so scheduling's one-plan-per-patient copy orders them by it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import new_id, violated_constraint
from clinic.errors import Conflict, NotFound
from clinic.events import PLAN_ACTIVATED, PLAN_RETIRED
from clinic.unit_of_work import UnitOfWork
from records import db, domain
from records.services.patients import existing_patient


def write_draft(uow: UnitOfWork, patient_id, draft: dict, by: str) -> dict:
    """Write a draft plan (infusion length, drugs, notes) for a patient. A draft means nothing outside
    records until it is activated, so no event. Raises NotFound for an unknown patient."""
    plan = {"id": new_id(), "patient_id": str(patient_id), "status": domain.DRAFT, "infusion_minutes": draft["infusion_minutes"],
            "drugs": domain.stored_drugs(draft["drugs"]), "notes": draft["notes"], "created_by": by}
    uow.audit.concerning(resource_id=plan["id"])
    with uow:
        existing_patient(uow.connection, patient_id)
        uow.connection.execute(db.treatment_plans.insert().values(**plan, created_at=uow.now, updated_at=uow.now))
        return db.get_plan(uow.connection, plan["id"])


def change_draft(uow: UnitOfWork, plan_id, changes: dict) -> dict:
    """Change a draft plan; drugs, when given, replace the whole list. Raises NotFound, or Conflict
    for an active or retired plan (write a new draft instead)."""
    if "drugs" in changes:
        changes = {**changes, "drugs": domain.stored_drugs(changes["drugs"])}
    with uow:
        plan = existing_plan(uow.connection, plan_id, for_update=True)
        domain.ensure_editable(plan)
        db.update_plan(uow.connection, plan["id"], **changes, updated_at=uow.now)
        return db.get_plan(uow.connection, plan["id"])


def activate_plan(uow: UnitOfWork, plan_id, by: str) -> dict:
    """Put a draft plan in force. The patient's active plan, if any, is retired in the same transaction:
    records.treatment_plan.retired (sequence n+1) then records.treatment_plan.activated (n+2).

    Raises NotFound, or Conflict (no drugs, already active, retired).
    """
    try:
        with uow:
            plan, patient = _locked(uow, plan_id)
            domain.ensure_activatable(plan)
            sequence = patient["plan_sequence"]
            replaced = db.active_plan(uow.connection, plan["patient_id"])
            if replaced is not None:
                sequence += 1
                db.update_plan(uow.connection, replaced["id"], status=domain.RETIRED, retired_at=uow.now, retired_by=by,
                               replaced_by_plan_id=plan["id"], updated_at=uow.now)
                uow.add_event(PLAN_RETIRED, domain.retired_payload(replaced, plan["id"], plan_sequence=sequence))
            sequence += 1
            db.update_plan(uow.connection, plan["id"], status=domain.ACTIVE, activated_at=uow.now, activated_by=by, updated_at=uow.now)
            uow.add_event(PLAN_ACTIVATED, domain.activated_payload(plan, replaced["id"] if replaced else None, plan_sequence=sequence))
            db.set_plan_sequence(uow.connection, plan["patient_id"], sequence)
            return db.get_plan(uow.connection, plan["id"])
    except sa.exc.IntegrityError as exc:
        # Only reachable if the locks above were bypassed: the index keeps one active plan regardless.
        if violated_constraint(exc) not in (db.ONE_ACTIVE_PLAN, ""):  # SQLite names the column, not the index
            raise
        raise Conflict("another plan of this patient was activated at the same moment; look again and retry",
                       {"plan_id": str(plan_id)}) from None


def retire_plan(uow: UnitOfWork, plan_id, by: str) -> dict:
    """Take a plan out of force. An active plan's retirement is announced (records.treatment_plan.retired,
    one more of the plan sequence); a draft set aside is not, nobody outside records heard of it.

    Raises NotFound, or Conflict for a plan already retired.
    """
    with uow:
        plan, patient = _locked(uow, plan_id)
        announce = domain.retirement_is_news(plan)
        db.update_plan(uow.connection, plan["id"], status=domain.RETIRED, retired_at=uow.now, retired_by=by, updated_at=uow.now)
        if announce:
            sequence = patient["plan_sequence"] + 1
            uow.add_event(PLAN_RETIRED, domain.retired_payload(plan, plan_sequence=sequence))
            db.set_plan_sequence(uow.connection, plan["patient_id"], sequence)
        return db.get_plan(uow.connection, plan["id"])


def existing_plan(connection: Connection, plan_id, for_update: bool = False) -> dict:
    """The plan, or NotFound naming the id."""
    plan = db.get_plan(connection, str(plan_id), for_update=for_update)
    if plan is None:
        raise NotFound("no treatment plan with this id", {"plan_id": str(plan_id)})
    return plan


def plan_owner(connection: Connection, plan_id) -> str | None:
    """The id of the patient a plan is about, None for an unknown plan."""
    return db.plan_patient_id(connection, str(plan_id))


def patient_plans(connection: Connection, patient_id) -> list[dict]:
    """A patient's plans, newest first; NotFound for an unknown patient."""
    existing_patient(connection, patient_id)
    return db.list_plans(connection, str(patient_id))


def _locked(uow: UnitOfWork, plan_id) -> tuple[dict, dict]:
    """The plan and its patient, with the patient's row and then the plan's row locked (always in that order)."""
    patient_id = existing_plan(uow.connection, plan_id)["patient_id"]
    uow.audit.concerning(patient_id=patient_id)
    patient = existing_patient(uow.connection, patient_id, for_update=True)
    return existing_plan(uow.connection, plan_id, for_update=True), patient
