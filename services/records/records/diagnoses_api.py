"""Records' HTTP API: a patient's diagnoses (ICD-10-CM), written and read by neurologists."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates

from clinic.db import new_id, utcnow
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.web import engine
from records import audit, db, domain
from records.api_support import CLINICIANS, existing_patient, not_in_future, plain_text
from records.audit import CREATE, READ, UPDATE, audited

blp = Blueprint("diagnoses", __name__, url_prefix="/patients", description="Diagnoses, coded in ICD-10-CM.")


class DiagnosisIn(Schema):
    code = fields.String(required=True, metadata={"description": "ICD-10-CM, with or without the dot: G43.709, G44.41"})
    description = fields.String(required=True, validate=plain_text(500))
    onset_date = fields.Date(load_default=None, allow_none=True, validate=not_in_future("an onset date"))
    status = fields.String(load_default="active", validate=validate.OneOf(domain.DIAGNOSIS_STATUSES))

    @validates("code")
    def icd10cm_form(self, value: str, data_key: str):
        if domain.normalised_icd10cm(value) is None:
            raise ValidationError("not an ICD-10-CM code: a letter, two characters, then optionally a dot and up to four more")

    @post_load
    def written_form(self, data, **_):
        data["code"] = domain.normalised_icd10cm(data["code"])
        return data


class DiagnosisPatch(Schema):
    description = fields.String(validate=plain_text(500))
    status = fields.String(validate=validate.OneOf(domain.DIAGNOSIS_STATUSES))


class DiagnosisOut(Schema):
    id = fields.String()
    patient_id = fields.String()
    code = fields.String()
    description = fields.String()
    onset_date = fields.Date(allow_none=True)
    status = fields.String()
    recorded_by = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


@blp.route("/<uuid:patient_id>/diagnoses")
class Diagnoses(MethodView):
    @audited(READ, "diagnosis", CLINICIANS)
    @blp.response(200, DiagnosisOut(many=True))
    def get(self, patient_id):
        """A patient's diagnoses, active first."""
        with engine().connect() as connection:
            existing_patient(connection, patient_id)
            return db.list_diagnoses(connection, str(patient_id))

    @audited(CREATE, "diagnosis", CLINICIANS, write=True)
    @blp.arguments(DiagnosisIn())
    @blp.response(201, DiagnosisOut)
    @blp.alt_response(409, description="The same code is already an active diagnosis of this patient.")
    def post(self, data, patient_id):
        """Record a diagnosis: an ICD-10-CM code (its form is checked), a description, onset date and status.

        Chronic migraine (G43.7xx) and medication-overuse headache (G44.41) are the usual ones here.
        """
        now = utcnow()
        diagnosis = {**data, "id": new_id(), "patient_id": str(patient_id), "recorded_by": audit.current().principal.subject,
                     "created_at": now, "updated_at": now}
        audit.concerning(resource_id=diagnosis["id"])
        with audit.transaction() as connection:
            patient = existing_patient(connection, patient_id, for_update=True)
            if data["onset_date"] and data["onset_date"] < patient["birth_date"]:
                raise RuleViolation("the onset date is before the patient's birth date", {"onset_date": ["before the birth date"]})
            if data["status"] == "active":
                _refuse_second_active(connection, diagnosis)
            connection.execute(db.diagnoses.insert().values(**diagnosis))
        return diagnosis


@blp.route("/<uuid:patient_id>/diagnoses/<uuid:diagnosis_id>")
class DiagnosisById(MethodView):
    @audited(UPDATE, "diagnosis", CLINICIANS, write=True, resource_arg="diagnosis_id")
    @blp.arguments(DiagnosisPatch())
    @blp.response(200, DiagnosisOut)
    def patch(self, changes, patient_id, diagnosis_id):
        """Correct a diagnosis's description, or mark it resolved (or active again)."""
        with audit.transaction() as connection:
            existing_patient(connection, patient_id, for_update=True)
            diagnosis = db.get_diagnosis(connection, str(patient_id), str(diagnosis_id), for_update=True)
            if diagnosis is None:
                raise NotFound("this patient has no diagnosis with this id", {"diagnosis_id": str(diagnosis_id)})
            after = {**diagnosis, **changes, "updated_at": utcnow()}
            if after["status"] == "active" and diagnosis["status"] != "active":
                _refuse_second_active(connection, after)
            connection.execute(db.diagnoses.update().where(db.diagnoses.c.id == diagnosis["id"])
                               .values(**changes, updated_at=after["updated_at"]))
        return after


def _refuse_second_active(connection, diagnosis: dict) -> None:
    # The patient row is locked by the caller, so no other request can slip the same code in between.
    existing = db.active_diagnosis_with_code(connection, diagnosis["patient_id"], diagnosis["code"])
    if existing is not None:
        raise Conflict(f"{diagnosis['code']} is already an active diagnosis of this patient",
                       {"diagnosis_id": existing["id"], "code": diagnosis["code"]})
