"""Notifications' HTTP API."""

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from clinic.auth import ADMIN, requires_roles
from clinic.errors import NotFound
from clinic.web import engine
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
    changed_at = fields.DateTime()


@blp.route("/<uuid:patient_id>")
class ContactByPatient(MethodView):
    @requires_roles(ADMIN)
    @blp.response(200, ContactOut)
    def get(self, patient_id):
        """How notifications will reach a patient (admin, for support)."""
        with engine().connect() as connection:
            contact = db.get_contact(connection, str(patient_id))
        if contact is None:
            raise NotFound("no contact copy for this patient yet", {"patient_id": str(patient_id)})
        return contact
