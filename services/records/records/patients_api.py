"""Records' HTTP API: patients, their demographics and contact details, and the search the front desk uses."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clinic.audit import CREATE, READ, SEARCH, UPDATE, audited, concerning
from clinic.events import CONTACT_PREFERENCES
from clinic.validation import EmailAddress, JsonBoolean, plain_text
from clinic.web import reading, unit_of_work
from records import domain
from records.roles import DEMOGRAPHICS_READERS, REGISTRARS
from records.services import patients
from records.validators import Change, not_in_future

blp = Blueprint("patients", __name__, url_prefix="/patients", description="Patients and their contact details.")

PHONE = validate.Regexp(r"^\+?[0-9][0-9 ()\-]{5,30}$", error="not a phone number (digits, spaces, ( ) - and a leading +)")
NAME = plain_text(100)
# A search answers a person at the desk, not an export: past this many matches, narrow it down.
SEARCH_LIMIT = 50


class PatientIn(Schema):
    given_name = fields.String(required=True, validate=NAME)
    family_name = fields.String(required=True, validate=NAME)
    birth_date = fields.Date(required=True, validate=not_in_future("a birth date"))
    sex = fields.String(required=True, validate=validate.OneOf(domain.SEXES))
    email = EmailAddress(load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True, validate=PHONE)
    preferred_contact = fields.String(load_default="email", validate=validate.OneOf(CONTACT_PREFERENCES))
    email_opt_out = JsonBoolean(load_default=False)

    @validates_schema
    def reachable_as_preferred(self, data, **_):
        problem = domain.reachability_problem(data)
        if problem:
            raise ValidationError(problem[1], problem[0])


class PatientPatch(Change):
    given_name = fields.String(validate=NAME)
    family_name = fields.String(validate=NAME)
    birth_date = fields.Date(validate=not_in_future("a birth date"))
    sex = fields.String(validate=validate.OneOf(domain.SEXES))
    email = EmailAddress(allow_none=True)
    phone = fields.String(allow_none=True, validate=PHONE)
    preferred_contact = fields.String(validate=validate.OneOf(CONTACT_PREFERENCES))
    email_opt_out = JsonBoolean()


class PatientSearch(Schema):
    name = fields.String(validate=plain_text(100, min_length=2),
                         metadata={"description": "Words that begin the patient's given or family name; case and accents ignored"})
    birth_date = fields.Date()

    @validates_schema
    def something_to_search_for(self, data, **_):
        if not data.get("name") and not data.get("birth_date"):
            raise ValidationError("give a name, a birth date, or both", "name")
        if "name" in data and not any(char.isalnum() for char in data["name"]):
            raise ValidationError("a name to search for needs letters or digits", "name")


class PatientOut(Schema):
    id = fields.String()
    medical_record_number = fields.String()
    given_name = fields.String()
    family_name = fields.String()
    birth_date = fields.Date()
    sex = fields.String()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    preferred_contact = fields.String()
    email_opt_out = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


@blp.route("")
class Patients(MethodView):
    @audited(SEARCH, "patient", DEMOGRAPHICS_READERS)
    @blp.arguments(PatientSearch(), location="query", unknown=RAISE)
    @blp.response(200, PatientOut(many=True))
    def get(self, query):
        """Find patients by name and/or birth date.

        Every word of `name` must begin a word of the patient's given or family name (case and
        accents ignored): "mar sil" finds Maria Silva. At most 50 patients, by family name.
        The search terms are never logged; each patient shown is recorded in the PHI audit.
        """
        with reading() as connection:
            found = patients.find_patients(connection, query.get("name") or "", query.get("birth_date"), SEARCH_LIMIT)
        concerning(patient_ids=[patient["id"] for patient in found])
        return found

    @audited(CREATE, "patient", REGISTRARS, write=True)
    @blp.arguments(PatientIn())
    @blp.response(201, PatientOut)
    @blp.alt_response(409, description="The same name, birth date and email are already registered.")
    def post(self, data):
        """Register a patient.

        A medical record number is generated. The patient's contact details go to
        notifications (records.patient.contact_changed) in the same transaction.
        """
        return patients.register_patient(unit_of_work(), data)


@blp.route("/<uuid:patient_id>")
class PatientById(MethodView):
    @audited(READ, "patient", DEMOGRAPHICS_READERS)
    @blp.response(200, PatientOut)
    def get(self, patient_id):
        """A patient's demographics and contact details."""
        with reading() as connection:
            return patients.existing_patient(connection, patient_id)

    @audited(UPDATE, "patient", REGISTRARS, write=True)
    @blp.arguments(PatientPatch())
    @blp.response(200, PatientOut)
    @blp.alt_response(409, description="The change would make this patient a duplicate of another.")
    def patch(self, changes, patient_id):
        """Change a patient's name, birth date, sex or contact details; a contact change is sent on to notifications."""
        return patients.change_patient(unit_of_work(), patient_id, changes)
