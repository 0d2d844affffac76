"""Records' HTTP API: patients, their demographics and contact details, and the search the front desk uses."""

from __future__ import annotations

import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from clinic.db import new_id, utcnow
from clinic.errors import Conflict, RuleViolation
from clinic.events import CONTACT_PREFERENCES
from clinic.outbox import add_event
from clinic.web import engine
from records import SERVICE, audit, db, domain
from records.api_support import DEMOGRAPHICS_READERS, REGISTRARS, existing_patient, not_in_future, plain_text
from records.audit import CREATE, READ, SEARCH, UPDATE, audited

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
    email = fields.Email(load_default=None, allow_none=True, validate=validate.Length(max=254))
    phone = fields.String(load_default=None, allow_none=True, validate=PHONE)
    preferred_contact = fields.String(load_default="email", validate=validate.OneOf(CONTACT_PREFERENCES))
    email_opt_out = fields.Boolean(load_default=False)

    @validates_schema
    def reachable_as_preferred(self, data, **_):
        problem = domain.reachability_problem(data)
        if problem:
            raise ValidationError(problem[1], problem[0])


class PatientPatch(Schema):
    given_name = fields.String(validate=NAME)
    family_name = fields.String(validate=NAME)
    birth_date = fields.Date(validate=not_in_future("a birth date"))
    sex = fields.String(validate=validate.OneOf(domain.SEXES))
    email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    phone = fields.String(allow_none=True, validate=PHONE)
    preferred_contact = fields.String(validate=validate.OneOf(CONTACT_PREFERENCES))
    email_opt_out = fields.Boolean()


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
        words = domain.search_words(query.get("name") or "")
        with engine().connect() as connection:
            found = db.search_patients(connection, words, query.get("birth_date"), SEARCH_LIMIT)
        audit.concerning(patient_ids=[patient["id"] for patient in found])
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
        now = utcnow()
        key = domain.identity_key(data["given_name"], data["family_name"], data["birth_date"], data["email"])
        patient = {**data, "id": new_id(), "identity_key": key, "search_name": domain.search_name(data["given_name"], data["family_name"]),
                   "created_at": now, "updated_at": now}
        audit.concerning(patient_id=patient["id"])
        try:
            with audit.transaction() as connection:
                patient["medical_record_number"] = _unused_record_number(connection)
                connection.execute(db.patients.insert().values(**patient))
                add_event(connection, db.outbox, SERVICE, "records.patient.registered", {"patient_id": patient["id"]})
                add_event(connection, db.outbox, SERVICE, "records.patient.contact_changed", domain.contact_details(patient))
        except sa.exc.IntegrityError:
            _raise_if_duplicate(key)
            raise
        return patient


@blp.route("/<uuid:patient_id>")
class PatientById(MethodView):
    @audited(READ, "patient", DEMOGRAPHICS_READERS)
    @blp.response(200, PatientOut)
    def get(self, patient_id):
        """A patient's demographics and contact details."""
        with engine().connect() as connection:
            return existing_patient(connection, patient_id)

    @audited(UPDATE, "patient", REGISTRARS, write=True)
    @blp.arguments(PatientPatch())
    @blp.response(200, PatientOut)
    @blp.alt_response(409, description="The change would make this patient a duplicate of another.")
    def patch(self, changes, patient_id):
        """Change a patient's name, birth date, sex or contact details; a contact change is sent on to notifications."""
        try:
            with audit.transaction() as connection:
                before = existing_patient(connection, patient_id, for_update=True)
                after = {**before, **changes, "updated_at": utcnow()}
                problem = domain.reachability_problem(after)
                if problem:
                    raise RuleViolation(problem[1], {problem[0]: [problem[1]]})
                after["identity_key"] = domain.identity_key(after["given_name"], after["family_name"], after["birth_date"], after["email"])
                after["search_name"] = domain.search_name(after["given_name"], after["family_name"])
                connection.execute(db.patients.update().where(db.patients.c.id == before["id"]).values(
                    **changes, identity_key=after["identity_key"], search_name=after["search_name"], updated_at=after["updated_at"]))
                if domain.contact_changed(before, after):
                    add_event(connection, db.outbox, SERVICE, "records.patient.contact_changed", domain.contact_details(after))
        except sa.exc.IntegrityError:
            _raise_if_duplicate(after["identity_key"], str(patient_id))
            raise
        return after


def _raise_if_duplicate(identity_key: str, own_id: str | None = None) -> None:
    """Turn the database's refusal of a second registration of one person into a 409 naming the first.

    The 409 tells the caller that patient's id and record number, so the audit names that patient.
    """
    with engine().connect() as lookup:
        existing = db.find_by_identity_key(lookup, identity_key)
    if existing is None or existing["id"] == own_id:
        return
    audit.concerning(patient_id=existing["id"])
    raise Conflict(
        "a patient with this name, birth date and email is already registered",
        {"patient_id": existing["id"], "medical_record_number": existing["medical_record_number"]},
    )


def _unused_record_number(connection) -> str:
    while True:
        number = domain.new_medical_record_number()
        taken = connection.execute(sa.select(db.patients.c.id).where(db.patients.c.medical_record_number == number)).first()
        if not taken:
            return number
