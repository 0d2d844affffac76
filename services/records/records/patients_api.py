"""Records' HTTP API: patients, their demographics and contact details, and the search the front desk uses."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clinic import limits
from clinic.audit import CREATE, READ, SEARCH, UPDATE, audited, concerning
from clinic.events import CONTACT_PREFERENCES
from clinic.http_errors import ErrorSchema
from clinic.validation import EmailAddress, JsonBoolean, plain_text
from clinic.web import current_principal, reading, unit_of_work
from records import domain
from records.services import patients
from records.validators import Change, not_in_future

blp = Blueprint("patients", __name__, url_prefix="/patients", description="Patients and their contact details.")

PHONE = validate.Regexp(r"^\+?[0-9][0-9 ()\-]{5,30}$", error="not a phone number (digits, spaces, ( ) - and a leading +)")
NAME = plain_text(100)
# A search answers a person at the desk, not an export: past this many matches, narrow it down.
SEARCH_LIMIT = 50
MIN_LETTERS_WITH_BIRTH_DATE = 2


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
    """Enough to find one patient, not to list many: the whole family name, or a birth date with at
    least two letters of the name (two letters alone would page through every patient)."""

    family_name = fields.String(validate=NAME, metadata={
        "description": "The patient's whole family name, matched exactly; case and accents ignored"})
    name = fields.String(validate=plain_text(100, min_length=2), metadata={
        "description": "Words that begin the patient's given or family name; case and accents ignored. "
                       "Alone it finds nobody: with a birth date it needs at least two letters"})
    birth_date = fields.Date()

    @validates_schema
    def enough_to_find_one_patient(self, data, **_):
        # Letters are counted as the search compares them (folded): some fold to nothing.
        name = data.get("name")
        if name is not None and not domain.searchable(name):
            raise ValidationError("a name to search for needs letters or digits", "name")
        if data.get("family_name") is not None:
            if not domain.searchable(data["family_name"]):
                raise ValidationError("a family name to search for needs letters or digits", "family_name")
            return
        if data.get("birth_date") is not None:
            if name is None or domain.search_letters(name) < MIN_LETTERS_WITH_BIRTH_DATE:
                raise ValidationError(f"with a birth date, give at least {MIN_LETTERS_WITH_BIRTH_DATE} letters of the name", "name")
            return
        if name is not None:
            raise ValidationError("the start of a name alone is not enough: give the whole family_name, "
                                  "or a birth_date with the name", "name")
        raise ValidationError("give the whole family name, or a birth date with at least two letters of the name", "family_name")


class PatientFound(Schema):
    """A patient as a search answers: enough to tell patients apart, no contact details (those are on
    GET /patients/{id}, read and audited one patient at a time)."""

    id = fields.String()
    medical_record_number = fields.String()
    given_name = fields.String()
    family_name = fields.String()
    birth_date = fields.Date()


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
    @audited(SEARCH, "patient")
    @blp.arguments(PatientSearch(), location="query", unknown=RAISE)
    @blp.response(200, PatientFound(many=True))
    @blp.alt_response(429, schema=ErrorSchema, description="Too many searches by this staff member (CLINIC_RATE_LIMIT_PATIENT_SEARCH); "
                                                           "Retry-After says when to try again.")
    def get(self, query):
        """Find a patient by the whole family name, or by birth date and name.

        Give `family_name` (the whole family name, matched exactly: "alvarez ruiz" finds Álvarez Ruiz,
        "alv" finds nobody), or `birth_date` with at least two letters of the name. Every word of
        `name` must begin a word of the patient's given or family name: "mar" with 1984-03-09 finds
        Maria Silva born that day. Case and accents are ignored. At most 50 patients, by family name,
        each with its id, record number, names and birth date only; GET /patients/{id} has the rest.
        Each staff member has a search allowance of its own (429 past it). The search terms are never
        logged; each patient shown is recorded in the PHI audit.
        """
        # The whole subject, as clinic.auth counts it for hold_subject (actor() is cut to 200 characters).
        limits.hold_patient_search(current_principal().subject)
        with reading() as connection:
            found = patients.find_patients(connection, query.get("family_name"), query.get("name") or "",
                                           query.get("birth_date"), SEARCH_LIMIT)
        concerning(patient_ids=[patient["id"] for patient in found])
        return found

    @audited(CREATE, "patient", write=True)
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
    @audited(READ, "patient")
    @blp.response(200, PatientOut)
    def get(self, patient_id):
        """A patient's demographics and contact details."""
        with reading() as connection:
            return patients.existing_patient(connection, patient_id)

    @audited(UPDATE, "patient", write=True)
    @blp.arguments(PatientPatch())
    @blp.response(200, PatientOut)
    @blp.alt_response(409, description="The change would make this patient a duplicate of another.")
    def patch(self, changes, patient_id):
        """Change a patient's name, birth date, sex or contact details; a contact change is sent on to notifications."""
        return patients.change_patient(unit_of_work(), patient_id, changes)
