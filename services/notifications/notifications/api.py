"""Notifications' HTTP API."""

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic.audit import READ, audited
from clinic.errors import NotFound
from clinic.web import reading
from notifications import db

blp = Blueprint("contacts", __name__, url_prefix="/contacts", description="The contact copies notifications keeps.")


class ContactOut(Schema):
    patient_id = fields.String()
    given_name = fields.String()
    family_name = fields.String()
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    preferred_contact = fields.String()
    email_opt_out = fields.Boolean()
    changed_at = fields.DateTime(metadata={"description": "When records made the change"})
    version = fields.Integer(metadata={"description": "records' contact version of this copy"})


@blp.route("/<uuid:patient_id>")
class ContactByPatient(MethodView):
    @audited(READ, "contact")
    @blp.response(200, ContactOut)
    def get(self, patient_id):
        """How notifications will reach a patient (admin, for support). Each look is in the PHI audit."""
        with reading() as connection:
            contact = db.get_contact(connection, str(patient_id))
        if contact is None:
            raise NotFound("no contact copy for this patient yet", {"patient_id": str(patient_id)})
        return contact
