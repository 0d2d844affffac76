"""Records' HTTP API: patients and their contact details."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date

import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from clinic.auth import ADMIN, FRONT_DESK, NEUROLOGIST, NURSE, requires_roles
from clinic.db import new_id, utcnow
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.events import CONTACT_PREFERENCES
from clinic.outbox import add_event
from clinic.web import engine
from records import SERVICE, db, domain

blp = Blueprint("patients", __name__, url_prefix="/patients", description="Patients and their contact details.")

PHONE = validate.Regexp(r"^\+?[0-9][0-9 ()\-]{5,30}$", error="not a phone number (digits, spaces, ( ) - and a leading +)")
NAME = validate.Length(min=1, max=100)


class PatientIn(Schema):
    given_name = fields.String(required=True, validate=NAME)
    family_name = fields.String(required=True, validate=NAME)
    birth_date = fields.Date(required=True)
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

    @validates("birth_date")
    def not_in_future(self, value: date, data_key: str):
        if value > date.today():
            raise ValidationError("a birth date cannot be in the future")
        if value.year < 1900:
            raise ValidationError("a birth date before 1900 is not plausible")


class PatientPatch(Schema):
    given_name = fields.String(validate=NAME)
    family_name = fields.String(validate=NAME)
    email = fields.Email(allow_none=True, validate=validate.Length(max=254))
    phone = fields.String(allow_none=True, validate=PHONE)
    preferred_contact = fields.String(validate=validate.OneOf(CONTACT_PREFERENCES))
    email_opt_out = fields.Boolean()


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
    @requires_roles(FRONT_DESK, NEUROLOGIST, ADMIN)
    @blp.arguments(PatientIn)
    @blp.response(201, PatientOut)
    @blp.alt_response(409, description="The same name, birth date and email are already registered.")
    def post(self, data):
        """Register a patient.

        A medical record number is generated. The patient's contact details go to
        notifications (records.patient.contact_changed) in the same transaction.
        """
        now = utcnow()
        key = domain.identity_key(data["given_name"], data["family_name"], data["birth_date"], data["email"])
        patient = {**data, "id": new_id(), "identity_key": key, "created_at": now, "updated_at": now}
        with _refusing_duplicates(key), engine().begin() as connection:
            patient["medical_record_number"] = _unused_record_number(connection)
            connection.execute(db.patients.insert().values(**patient))
            add_event(connection, db.outbox, SERVICE, "records.patient.registered", {"patient_id": patient["id"]})
            add_event(connection, db.outbox, SERVICE, "records.patient.contact_changed", domain.contact_details(patient))
        return patient


@blp.route("/<uuid:patient_id>")
class PatientById(MethodView):
    @requires_roles(FRONT_DESK, NURSE, NEUROLOGIST, ADMIN)
    @blp.response(200, PatientOut)
    def get(self, patient_id):
        """A patient's demographics and contact details."""
        with engine().connect() as connection:
            return _existing(connection, str(patient_id))

    @requires_roles(FRONT_DESK, NEUROLOGIST, ADMIN)
    @blp.arguments(PatientPatch)
    @blp.response(200, PatientOut)
    def patch(self, changes, patient_id):
        """Change a patient's name or contact details; a contact change is sent on to notifications."""
        with engine().begin() as connection:
            before = _existing(connection, str(patient_id), for_update=True)
            after = {**before, **changes, "updated_at": utcnow()}
            problem = domain.reachability_problem(after)
            if problem:
                raise RuleViolation(problem[1], {problem[0]: [problem[1]]})
            after["identity_key"] = domain.identity_key(after["given_name"], after["family_name"], after["birth_date"], after["email"])
            with _refusing_duplicates(after["identity_key"], connection):
                connection.execute(db.patients.update().where(db.patients.c.id == before["id"]).values(
                    **changes, identity_key=after["identity_key"], updated_at=after["updated_at"]))
            if domain.contact_changed(before, after):
                add_event(connection, db.outbox, SERVICE, "records.patient.contact_changed", domain.contact_details(after))
        return after


def _existing(connection, patient_id: str, for_update: bool = False) -> dict:
    patient = db.get_patient(connection, patient_id, for_update=for_update)
    if patient is None:
        raise NotFound("no patient with this id", {"patient_id": patient_id})
    return patient


@contextmanager
def _refusing_duplicates(identity_key: str, connection=None):
    """Turn the database's refusal of a second registration of one person into a 409 naming the first."""
    try:
        yield
    except sa.exc.IntegrityError:
        if connection is not None:
            connection.rollback()
        with engine().connect() as lookup:
            existing = db.find_by_identity_key(lookup, identity_key)
        if existing is None:
            raise
        raise Conflict(
            "a patient with this name, birth date and email is already registered",
            {"patient_id": existing["id"], "medical_record_number": existing["medical_record_number"]},
        ) from None


def _unused_record_number(connection) -> str:
    while True:
        number = domain.new_medical_record_number()
        taken = connection.execute(sa.select(db.patients.c.id).where(db.patients.c.medical_record_number == number)).first()
        if not taken:
            return number
