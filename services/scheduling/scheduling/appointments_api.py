"""Scheduling's HTTP API for appointments: booking, rescheduling, cancellation, check-in, no-shows, and the lists.

Times go in and out as ISO 8601 with a UTC offset (a time without one is refused); each
appointment also shows its times in the clinic's local time, for people. Dates in queries are
the clinic's local dates. Every view reads or changes patient data, so each is audited
(clinic.audit): who looked at or changed which patient's appointments.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from clinic import audit
from clinic.audit import CREATE, READ, SEARCH, UPDATE, audited, no_patient
from clinic.errors import NotFound
from clinic.validation import PLAUSIBLE_DAY, PLAUSIBLE_MOMENT, at_least_one_of, plain_text
from clinic.web import actor, reading, unit_of_work
from scheduling import domain
from scheduling.db import appointments
from scheduling.local_time import local_day_bounds
from scheduling.request_context import rules
from scheduling.services import booking, lifecycle

blp = Blueprint("appointments", __name__, url_prefix="/appointments",
                description="Infusions and follow-up visits: booking, rescheduling, check-in, cancellation, no-shows.")


class AppointmentIn(Schema):
    patient_id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(domain.APPOINTMENT_KINDS))
    starts_at = fields.AwareDateTime(required=True, validate=PLAUSIBLE_MOMENT,
                                     metadata={"description": "ISO 8601 with a UTC offset, on a whole minute",
                                               "pattern": r"T[0-9]{2}:[0-9]{2}(:00(\.0+)?)?(Z|[+-][0-9]{2}:[0-9]{2})$"})
    room_id = fields.UUID(load_default=None, allow_none=True,
                          metadata={"description": "Leave out for the first free room of the right kind"})


class RescheduleIn(Schema):
    starts_at = fields.AwareDateTime(load_default=None, allow_none=True, validate=PLAUSIBLE_MOMENT)
    room_id = fields.UUID(load_default=None, allow_none=True,
                          metadata={"description": "Leave out to stay in the same room if it is free, else the first free one"})

    something_to_change = at_least_one_of("starts_at", "room_id", message="give a new start, a new room, or both")


class CancelIn(Schema):
    reason = fields.String(required=True, validate=plain_text(500))


class AppointmentQuery(Schema):
    date = fields.Date(load_default=None, validate=PLAUSIBLE_DAY, metadata={"description": "A local date of the clinic"})
    room_id = fields.UUID(load_default=None)
    patient_id = fields.UUID(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(domain.STATUSES))
    needs_follow_up = fields.Boolean(load_default=None, metadata={
        "description": "true: completed infusions for which no follow-up visit could be booked automatically"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))


class AppointmentOut(Schema):
    id = fields.String()
    patient_id = fields.String()
    kind = fields.String()
    status = fields.String()
    room_id = fields.String()
    room_name = fields.String()
    plan_id = fields.String(allow_none=True)
    starts_at = fields.DateTime()
    ends_at = fields.DateTime()
    starts_at_local = fields.String(metadata={"description": "The start in the clinic's time zone"})
    ends_at_local = fields.String()
    room_free_at = fields.DateTime(attribute="room_blocked_until", metadata={
        "description": "When the room can take the next appointment (after the turnover gap following an infusion)"})
    booked_at = fields.DateTime()
    checked_in_at = fields.DateTime(allow_none=True)
    started_at = fields.DateTime(allow_none=True, metadata={
        "description": "When the infusion session started, from sessions (the appointment is then in_progress)"})
    ended_at = fields.DateTime(allow_none=True, metadata={"description": "When the session actually ended"})
    session_outcome = fields.String(allow_none=True, metadata={"description": "completed or aborted, from sessions"})
    cancelled_at = fields.DateTime(allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    no_show_at = fields.DateTime(allow_none=True)
    follow_up_of = fields.String(allow_none=True, metadata={"description": "On a follow-up visit: the infusion it follows"})
    follow_up_id = fields.String(allow_none=True, metadata={"description": "On an infusion: the follow-up visit booked after it"})
    booked_by = fields.String(allow_none=True, metadata={
        "description": "The staff member who booked it (token subject); empty for the automatic follow-up visit"})
    checked_in_by = fields.String(allow_none=True)
    cancelled_by = fields.String(allow_none=True)
    no_show_by = fields.String(allow_none=True)
    updated_by = fields.String(allow_none=True, metadata={
        "description": "Who made the latest change; empty when it came from the clinic's own software (a session's end)"})
    version = fields.Integer(metadata={
        "description": "1 when booked, one more at each change; the events about the appointment carry it as appointment_version"})


def local_iso(moment: datetime | None) -> str | None:
    return moment.astimezone(rules().timezone).isoformat() if moment else None


def shown(item: dict) -> dict:
    """An appointment or slot with its times also in the clinic's local time."""
    return {**item, "starts_at_local": local_iso(item["starts_at"]), "ends_at_local": local_iso(item["ends_at"])}


def utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(timezone.utc) if moment else None


def id_or_none(value) -> str | None:
    return str(value) if value is not None else None


@blp.route("")
class Appointments(MethodView):
    @audited(CREATE, "appointment", write=True, patient_of=no_patient)
    @blp.arguments(AppointmentIn())
    @blp.response(201, AppointmentOut)
    @blp.alt_response(409, description="The room or the patient is taken then; details.appointment_id names the appointment in the way.")
    @blp.alt_response(422, description="A clinic rule refuses it: past start, outside office hours, a closure, wrong room, no active plan.")
    def post(self, data):
        """Book an infusion or a follow-up visit.

        An infusion lasts the patient's active treatment plan's infusion time (never less than 120
        minutes) in an infusion room, and the room then needs its turnover gap. A follow-up visit
        takes an exam room. The appointment lies wholly inside office hours, not on a closure. With
        no room given, the first free room of the right kind (by name) is taken.
        """
        request = booking.BookingRequest(patient_id=str(data["patient_id"]), kind=data["kind"], starts_at=utc(data["starts_at"]),
                                         room_id=id_or_none(data["room_id"]), booked_by=actor())
        return shown(booking.book(unit_of_work(refusals=booking.REFUSALS), rules(), request))

    @audited(SEARCH, "appointment", patient_of=no_patient)
    @blp.arguments(AppointmentQuery(), location="query")
    @blp.response(200, AppointmentOut(many=True))
    def get(self, query):
        """Appointments, earliest first, filtered by local date, room, patient, status.

        Statuses: booked, checked_in, in_progress (the infusion session has started), completed, cancelled, no_show.
        """
        bounds = local_day_bounds(query["date"], rules().timezone) if query["date"] else (None, None)
        with reading() as connection:
            found = appointments.find(
                connection, starts_from=bounds[0], starts_before=bounds[1], room_id=id_or_none(query["room_id"]),
                patient_id=id_or_none(query["patient_id"]), status=query["status"], needs_follow_up=query["needs_follow_up"],
                limit=query["limit"], offset=query["offset"])
        audit.concerning(patient_ids=[appointment["patient_id"] for appointment in found])
        return [shown(appointment) for appointment in found]


@blp.route("/<uuid:appointment_id>")
class AppointmentById(MethodView):
    @audited(READ, "appointment", resource_arg="appointment_id", patient_of=no_patient)
    @blp.response(200, AppointmentOut)
    def get(self, appointment_id):
        """One appointment."""
        with reading() as connection:
            appointment = appointments.shown(connection, str(appointment_id))
        if appointment is None:
            raise NotFound("no appointment with this id", {"appointment_id": str(appointment_id)})
        audit.concerning(patient_id=appointment["patient_id"])
        return shown(appointment)


@blp.route("/<uuid:appointment_id>/reschedule")
class Reschedule(MethodView):
    @audited(UPDATE, "appointment", write=True, resource_arg="appointment_id", patient_of=no_patient)
    @blp.arguments(RescheduleIn())
    @blp.response(200, AppointmentOut)
    @blp.alt_response(409, description="Not booked any more (checked in, its infusion session started, ...), or the new time "
                                       "collides (details name the appointment).")
    def post(self, data, appointment_id):
        """Move a booked appointment to a new start and/or room, under the same rules as booking."""
        return shown(booking.reschedule(unit_of_work(refusals=booking.REFUSALS), rules(), str(appointment_id), utc(data["starts_at"]),
                                        id_or_none(data["room_id"]), actor()))


@blp.route("/<uuid:appointment_id>/cancel")
class Cancel(MethodView):
    @audited(UPDATE, "appointment", write=True, resource_arg="appointment_id", patient_of=no_patient)
    @blp.arguments(CancelIn())
    @blp.response(200, AppointmentOut)
    @blp.alt_response(409, description="Already cancelled, completed or a no-show; or in progress: its infusion session has "
                                       "started, and is aborted in sessions instead.")
    def post(self, data, appointment_id):
        """Cancel a booked or checked-in appointment, with the reason; the room and the patient are free again.

        Once the infusion session has started (status in_progress) the appointment cannot be cancelled:
        the session is aborted in sessions, and its end completes the appointment.
        """
        return shown(lifecycle.cancel(unit_of_work(), str(appointment_id), data["reason"], actor()))


@blp.route("/<uuid:appointment_id>/check-in")
class CheckIn(MethodView):
    @audited(UPDATE, "appointment", write=True, resource_arg="appointment_id", patient_of=no_patient)
    @blp.response(200, AppointmentOut)
    @blp.alt_response(409, description="Not booked (already checked in, cancelled, ...).")
    @blp.alt_response(422, description="Not the day of the appointment, its time is over, or no active plan for an infusion.")
    def post(self, appointment_id):
        """The patient has arrived (on the day, before the scheduled end). Sessions opens the infusion session from this."""
        return shown(lifecycle.check_in(unit_of_work(), rules(), str(appointment_id), actor()))


@blp.route("/<uuid:appointment_id>/no-show")
class NoShow(MethodView):
    @audited(UPDATE, "appointment", write=True, resource_arg="appointment_id", patient_of=no_patient)
    @blp.response(200, AppointmentOut)
    @blp.alt_response(409, description="Not booked (checked in, in progress, cancelled, a no-show already, ...).")
    @blp.alt_response(422, description="Too early: the grace period after the start has not passed.")
    def post(self, appointment_id):
        """The patient did not come. Allowed once the grace period after the start has passed; frees the room."""
        return shown(lifecycle.mark_no_show(unit_of_work(), rules(), str(appointment_id), actor()))
