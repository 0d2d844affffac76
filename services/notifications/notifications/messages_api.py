"""Notifications' HTTP API for the mail log: "did the patient get my email?"

Front desk and nurses see each message's metadata (to whom, what kind, its status, why it was
skipped or failed); an admin also sees its context and its body, rendered again as it was sent,
and may send a failed or skipped message again. Every view is audited (clinic.audit): a message
to a patient is patient data.
"""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic import audit
from clinic.audit import READ, SEARCH, UPDATE, audited, no_patient
from clinic.auth import ADMIN
from clinic.validation import PLAUSIBLE_MOMENT
from clinic.web import current_principal, reading, unit_of_work
from notifications.compose import compose
from notifications.db.messages import KINDS, STATUSES
from notifications.services import mail_log

blp = Blueprint("messages", __name__, url_prefix="/messages",
                description="The mail log: every email to a patient or the on-call staff, and what became of it.")


class MessageQuery(Schema):
    patient_id = fields.UUID(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))
    kind = fields.String(load_default=None, validate=validate.OneOf(KINDS))
    since = fields.AwareDateTime(load_default=None, validate=PLAUSIBLE_MOMENT,
                                 metadata={"description": "Messages recorded at or after this moment (ISO 8601 with an offset)"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class MessageOut(Schema):
    id = fields.String()
    kind = fields.String(metadata={"description": "The template: " + ", ".join(KINDS)})
    status = fields.String(metadata={"description": "waiting_for_contact, queued, sent, failed or skipped"})
    reason = fields.String(allow_none=True, metadata={"description": "Why it was skipped or failed"})
    recipient = fields.String(metadata={"description": "The address; patient:<id> while there is none to send to"})
    patient_id = fields.String(allow_none=True, metadata={"description": "Empty for an alert to the on-call staff"})
    appointment_id = fields.String(allow_none=True)
    event_id = fields.String(metadata={"description": "The event that caused it (for a reminder: derived from the appointment)"})
    preferred_contact = fields.String(allow_none=True, metadata={
        "description": "The patient's stated preference (email still goes to an address without an opt-out)"})
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True, metadata={"description": "The last failed attempt: the error's class and SMTP code"})
    next_attempt_at = fields.DateTime()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)
    message_id = fields.String(allow_none=True, metadata={"description": "The email's Message-ID header"})


class BodyOut(Schema):
    subject = fields.String()
    text = fields.String()
    html = fields.String()
    has_calendar = fields.Boolean(metadata={"description": "An .ics file goes with it"})
    error = fields.String(metadata={"description": "The composition error's class, when it cannot be rendered"})


class MessageDetailOut(MessageOut):
    context = fields.Dict(metadata={"description": "Admins only: what the templates are rendered from"})
    body = fields.Nested(BodyOut, metadata={"description": "Admins only: the email as it is rendered now"})


def _is_admin() -> bool:
    return current_principal().has_any((ADMIN,))


@blp.route("")
class Messages(MethodView):
    @audited(SEARCH, "message", patient_of=no_patient)
    @blp.arguments(MessageQuery(), location="query")
    @blp.response(200, MessageOut(many=True))
    def get(self, query):
        """Messages in the mail log, newest first, filtered by patient, status, kind and time (metadata only)."""
        with reading() as connection:
            found = mail_log.find_messages(
                connection, patient_id=str(query["patient_id"]) if query["patient_id"] else None, status=query["status"],
                kind=query["kind"], since=query["since"], limit=query["limit"], offset=query["offset"])
        audit.concerning(patient_ids=[message["patient_id"] for message in found if message["patient_id"]])
        return found


@blp.route("/<uuid:message_id>")
class MessageById(MethodView):
    @audited(READ, "message", resource_arg="message_id", patient_of=no_patient)
    @blp.response(200, MessageDetailOut)
    def get(self, message_id):
        """One message: its metadata; for an admin also its context and its body, rendered again."""
        with reading() as connection:
            if _is_admin():
                found, body = mail_log.rendered(connection, str(message_id), current_app.extensions["notifications.mail"],
                                                compose)
                found = {**found, "body": body}
            else:
                found = mail_log.message(connection, str(message_id))
                found.pop("context", None)
        audit.concerning(patient_id=found["patient_id"])
        return found


@blp.route("/<uuid:message_id>/retry")
class Retry(MethodView):
    @audited(UPDATE, "message", write=True, resource_arg="message_id", patient_of=no_patient)
    @blp.response(200, MessageOut)
    @blp.alt_response(409, description="Not failed or skipped, or the patient still cannot be emailed (the reason in details).")
    def post(self, message_id):
        """Queue a failed or skipped message again, to the address the patient's contact copy gives now."""
        return mail_log.retry(unit_of_work(), str(message_id))
