"""Records' HTTP API: a patient's diagnoses (ICD-10-CM), written and read by neurologists."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates

from clinic.audit import CREATE, READ, UPDATE, audited
from clinic.validation import plain_text
from clinic.web import actor, reading, unit_of_work
from records import domain
from records.services import diagnoses
from records.validators import Change, not_in_future

blp = Blueprint("diagnoses", __name__, url_prefix="/patients", description="Diagnoses, coded in ICD-10-CM.")


class DiagnosisIn(Schema):
    code = fields.String(required=True, metadata={"description": "ICD-10-CM, with or without the dot: G43.709, G44.41",
                                                  "pattern": r"^[A-Za-z][0-9][0-9A-Za-z](\.?[0-9A-Za-z]{1,4})?$"})
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


class DiagnosisPatch(Change):
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
    @audited(READ, "diagnosis")
    @blp.response(200, DiagnosisOut(many=True))
    def get(self, patient_id):
        """A patient's diagnoses, active first."""
        with reading() as connection:
            return diagnoses.patient_diagnoses(connection, patient_id)

    @audited(CREATE, "diagnosis", write=True)
    @blp.arguments(DiagnosisIn())
    @blp.response(201, DiagnosisOut)
    @blp.alt_response(409, description="The same code is already an active diagnosis of this patient.")
    def post(self, data, patient_id):
        """Record a diagnosis: an ICD-10-CM code (its form is checked), a description, onset date and status.

        Chronic migraine (G43.7xx) and medication-overuse headache (G44.41) are the usual ones here.
        """
        return diagnoses.record_diagnosis(unit_of_work(), patient_id, data, by=actor())


@blp.route("/<uuid:patient_id>/diagnoses/<uuid:diagnosis_id>")
class DiagnosisById(MethodView):
    @audited(UPDATE, "diagnosis", write=True, resource_arg="diagnosis_id")
    @blp.arguments(DiagnosisPatch())
    @blp.response(200, DiagnosisOut)
    @blp.alt_response(409, description="The diagnosis would make its code active twice for this patient.")
    def patch(self, changes, patient_id, diagnosis_id):
        """Correct a diagnosis's description, or mark it resolved (or active again)."""
        return diagnoses.change_diagnosis(unit_of_work(), patient_id, diagnosis_id, changes)
