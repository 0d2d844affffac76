"""The event envelope and a marshmallow schema for every event type, registered by (type, version).

Producers check their payload against the schema before it enters the outbox;
consumers load it with the same schema on receipt. Events carry identifiers and
the clinical facts consumers need, never more: contact details travel only in
records.patient.contact_changed, which only notifications binds to.

One module past 300 lines because it is the whole contract between the services, read in one place:
every event type's name, its payload schema and the registry that maps (type, version) to it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from marshmallow import Schema, ValidationError, fields, validate

# Clinical rule (DESIGN.md): an infusion lasts at least two hours, whatever a plan says.
MINIMUM_INFUSION_MINUTES = 120

DRUG_ROUTES = ("IV", "IM", "SC", "PO")
DRUG_PURPOSES = ("pain", "nausea_vomiting", "prevention", "hydration", "other")
APPOINTMENT_KINDS = ("infusion", "follow_up")
ALERT_LEVELS = ("urgent", "emergency")
# Why an alert was raised: a NEWS2 score at an alert level, or a monitor that stopped sending.
ALERT_KINDS = ("news2", "monitor_silent")
ROOM_KINDS = ("infusion", "exam")
# Why a session was stopped before its discharge: a fixed list, so the code is all that leaves sessions.
ABORT_REASONS = ("patient_unwell", "adverse_reaction", "patient_left", "equipment", "other")
CONTACT_PREFERENCES = ("email", "phone", "sms")


# The event types, by name: producers, consumers and tests use these rather than bare strings.
PATIENT_REGISTERED = "records.patient.registered"
PATIENT_CONTACT_CHANGED = "records.patient.contact_changed"
PLAN_ACTIVATED = "records.treatment_plan.activated"
PLAN_RETIRED = "records.treatment_plan.retired"
APPOINTMENT_BOOKED = "scheduling.appointment.booked"
APPOINTMENT_RESCHEDULED = "scheduling.appointment.rescheduled"
APPOINTMENT_CANCELLED = "scheduling.appointment.cancelled"
APPOINTMENT_CHECKED_IN = "scheduling.appointment.checked_in"
APPOINTMENT_NO_SHOW = "scheduling.appointment.no_show"
ROOM_CHANGED = "scheduling.room.changed"
SESSION_STARTED = "sessions.session.started"
VITALS_ALERT_RAISED = "sessions.vitals.alert_raised"
SESSION_COMPLETED = "sessions.session.completed"
SESSION_ABORTED = "sessions.session.aborted"


class InvalidEvent(ValueError):
    """A message that is not a valid event of a known type and version."""


# --- envelope -------------------------------------------------------------------------------


class EnvelopeSchema(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True, validate=validate.Length(min=3, max=200))
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    producer = fields.String(required=True)
    correlation_id = fields.String(required=True, allow_none=True)
    data = fields.Dict(required=True)


@dataclass(frozen=True)
class Event:
    type: str
    data: dict
    producer: str
    version: int = 1
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    correlation_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "version": self.version,
                "occurred_at": self.occurred_at.isoformat(),
                "producer": self.producer,
                "correlation_id": self.correlation_id,
                "data": self.data,
            },
            separators=(",", ":"),
        )


# --- payload schemas --------------------------------------------------------------------------


class _Strict(Schema):
    """Payload schemas refuse unknown fields: a field nobody declared is a field nobody vetted for PHI."""


def _version(what: str):
    """A version the producer stamps in the same transaction as the change, for consumers that keep a
    copy: the higher one wins, whatever order events arrive in ("copies are kept by version").
    Optional, so events written before it existed still load; a consumer reads a missing one as 0,
    which never replaces a copy made from a versioned event (clinic.db.keep_newest). Versions only
    grow, and not every version is announced (a change no consumer needs, such as a session's end on
    an appointment, takes one too): a consumer keeps the highest and never expects the next."""
    return fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1),
                          metadata={"description": what})


# A closed list of dose units, so a consumer comparing a dose given with the plan's limit never has to
# guess whether "MG" or "milligrams" is the same unit. A 24-hour maximum is in the drug's own unit.
DOSE_UNITS = ("mg", "mcg", "g", "mL", "L", "units", "mEq", "mmol")
# An infusion rate: a positive number, one space, an amount per hour or minute, e.g. "125 mL/h".
INFUSION_RATE_FORM = r"^(?=[0-9.]*[1-9])[0-9]{1,6}(\.[0-9]{1,3})? (mL/h|mL/min|mg/h|mg/min|mcg/min|g/h|units/h)$"


class Drug(_Strict):
    """One drug of a treatment plan, with the limits sessions holds each administration to."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    dose = fields.Decimal(required=True, as_string=True, places=None, validate=validate.Range(min=0, min_inclusive=False))
    unit = fields.String(required=True, validate=validate.OneOf(DOSE_UNITS))
    route = fields.String(required=True, validate=validate.OneOf(DRUG_ROUTES))
    purpose = fields.String(required=True, validate=validate.OneOf(DRUG_PURPOSES))
    rate = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        INFUSION_RATE_FORM, error="not a rate like '125 mL/h' (a number, a space, a unit per h or min)"))
    max_per_24h = fields.Decimal(load_default=None, allow_none=True, as_string=True, places=None,
                                 validate=validate.Range(min=0, min_inclusive=False))


class DrugGiven(_Strict):
    name = fields.String(required=True)
    dose = fields.Decimal(required=True, as_string=True)
    unit = fields.String(required=True)
    route = fields.String(required=True, validate=validate.OneOf(DRUG_ROUTES))
    given_at = fields.AwareDateTime(required=True)
    rate = fields.String(load_default=None, allow_none=True)


class PatientRegistered(_Strict):
    patient_id = fields.UUID(required=True)


class PatientContactChanged(_Strict):
    patient_id = fields.UUID(required=True)
    given_name = fields.String(required=True)
    family_name = fields.String(required=True)
    email = fields.Email(required=True, allow_none=True)
    phone = fields.String(required=True, allow_none=True)
    preferred_contact = fields.String(required=True, validate=validate.OneOf(CONTACT_PREFERENCES))
    email_opt_out = fields.Boolean(required=True)
    contact_version = _version("The patient's contact version: one more at each change of contact details")


class TreatmentPlanActivated(_Strict):
    plan_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    infusion_minutes = fields.Integer(required=True, validate=validate.Range(min=MINIMUM_INFUSION_MINUTES))
    drugs = fields.List(fields.Nested(Drug), required=True, validate=validate.Length(min=1))
    replaces_plan_id = fields.UUID(load_default=None, allow_none=True)
    plan_sequence = _version("The patient's plan sequence: one more at each activation or retirement of an active plan")


class TreatmentPlanRetired(_Strict):
    plan_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    # Set when the plan was retired because a newer one was activated (whose activated event follows),
    # so a consumer can tell "no plan now" from "another plan takes over".
    replaced_by_plan_id = fields.UUID(load_default=None, allow_none=True)
    plan_sequence = _version("The patient's plan sequence: one more at each activation or retirement of an active plan")


class AppointmentBooked(_Strict):
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(APPOINTMENT_KINDS))
    room_id = fields.UUID(required=True)
    room_name = fields.String(required=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    appointment_version = _version("The appointment's version: one more at each change (a calendar file's SEQUENCE)")


class AppointmentRescheduled(AppointmentBooked):
    previous_starts_at = fields.AwareDateTime(required=True)
    previous_room_id = fields.UUID(required=True)


class AppointmentCancelled(_Strict):
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(APPOINTMENT_KINDS))
    starts_at = fields.AwareDateTime(required=True)
    appointment_version = _version("The appointment's version: one more at each change (a calendar file's SEQUENCE)")
    # No reason: it is free text staff type ("patient unwell"), which no consumer needs; it stays in scheduling.


class AppointmentCheckedIn(_Strict):
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(APPOINTMENT_KINDS))
    room_id = fields.UUID(required=True)
    room_name = fields.String(required=True)
    plan_id = fields.UUID(load_default=None, allow_none=True)
    starts_at = fields.AwareDateTime(required=True)
    ends_at = fields.AwareDateTime(required=True)
    checked_in_at = fields.AwareDateTime(required=True)
    appointment_version = _version("The appointment's version: one more at each change (a calendar file's SEQUENCE)")


class AppointmentNoShow(_Strict):
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    starts_at = fields.AwareDateTime(required=True)
    appointment_version = _version("The appointment's version: one more at each change (a calendar file's SEQUENCE)")


class RoomChanged(_Strict):
    """A room as it is after an admin added or changed it: what sessions keeps to know the infusion rooms."""

    room_id = fields.UUID(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    kind = fields.String(required=True, validate=validate.OneOf(ROOM_KINDS))
    active = fields.Boolean(required=True)
    room_version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1),
                                  metadata={"description": "The room's version: one more at each change"})


class SessionStarted(_Strict):
    session_id = fields.UUID(required=True)
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    room_id = fields.UUID(required=True)
    started_at = fields.AwareDateTime(required=True)


class VitalsAlertRaised(_Strict):
    alert_id = fields.UUID(required=True)
    session_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    room_name = fields.String(required=True)
    level = fields.String(required=True, validate=validate.OneOf(ALERT_LEVELS))
    news2_score = fields.Integer(required=True, validate=validate.Range(min=0))
    triggered_by = fields.List(fields.String(), required=True)
    observed_at = fields.AwareDateTime(required=True)


class ParameterScore(_Strict):
    """One vital sign's NEWS2 points, so the person reading an alert sees why it was raised."""

    parameter = fields.String(required=True, validate=validate.Length(min=1, max=40))
    points = fields.Integer(required=True, strict=True, validate=validate.Range(min=0, max=3))


class VitalsAlertRaisedV2(_Strict):
    """Version 2: an alert has a kind (a NEWS2 score, or a monitor gone silent) and may be an
    escalation of one nobody acknowledged in time. The NEWS2 fields are empty for a silent monitor.
    No patient id: the on-call staff it is for go to the room, and the session names the patient there."""

    alert_id = fields.UUID(required=True)
    session_id = fields.UUID(required=True)
    room_id = fields.UUID(required=True)
    room_name = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(ALERT_KINDS))
    level = fields.String(required=True, validate=validate.OneOf(ALERT_LEVELS))
    escalation = fields.Boolean(required=True)
    news2_score = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))
    scored = fields.List(fields.Nested(ParameterScore), load_default=list,
                         metadata={"description": "The parameters that scored points, with their points"})
    observed_at = fields.AwareDateTime(load_default=None, allow_none=True,
                                       metadata={"description": "When the readings behind a NEWS2 alert were taken"})
    raised_at = fields.AwareDateTime(required=True)


class AlertSummary(_Strict):
    level = fields.String(required=True, validate=validate.OneOf(ALERT_LEVELS))
    # Null for a monitor that went silent (kind monitor_silent); events from before kinds are all news2.
    news2_score = fields.Integer(required=True, allow_none=True)
    observed_at = fields.AwareDateTime(required=True)
    kind = fields.String(load_default="news2", validate=validate.OneOf(ALERT_KINDS))
    escalation = fields.Boolean(load_default=False)


class SessionCompleted(_Strict):
    session_id = fields.UUID(required=True)
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    room_id = fields.UUID(required=True)
    room_name = fields.String(required=True)
    started_at = fields.AwareDateTime(required=True)
    ended_at = fields.AwareDateTime(required=True)
    drugs_given = fields.List(fields.Nested(DrugGiven), required=True)
    pain_before = fields.Integer(required=True, allow_none=True, validate=validate.Range(min=0, max=10))
    pain_after = fields.Integer(required=True, allow_none=True, validate=validate.Range(min=0, max=10))
    highest_news2 = fields.Integer(required=True, allow_none=True, validate=validate.Range(min=0))
    alerts = fields.List(fields.Nested(AlertSummary), required=True)


class SessionAborted(_Strict):
    session_id = fields.UUID(required=True)
    appointment_id = fields.UUID(required=True)
    patient_id = fields.UUID(required=True)
    room_id = fields.UUID(required=True)
    ended_at = fields.AwareDateTime(required=True)
    # One of ABORT_REASONS from sessions; kept a plain string so events from before the list still load.
    reason = fields.String(required=True)


# --- registry ---------------------------------------------------------------------------------

SCHEMAS: dict[tuple[str, int], type[Schema]] = {
    (PATIENT_REGISTERED, 1): PatientRegistered,
    (PATIENT_CONTACT_CHANGED, 1): PatientContactChanged,
    (PLAN_ACTIVATED, 1): TreatmentPlanActivated,
    (PLAN_RETIRED, 1): TreatmentPlanRetired,
    (APPOINTMENT_BOOKED, 1): AppointmentBooked,
    (APPOINTMENT_RESCHEDULED, 1): AppointmentRescheduled,
    (APPOINTMENT_CANCELLED, 1): AppointmentCancelled,
    (APPOINTMENT_CHECKED_IN, 1): AppointmentCheckedIn,
    (APPOINTMENT_NO_SHOW, 1): AppointmentNoShow,
    (ROOM_CHANGED, 1): RoomChanged,
    (SESSION_STARTED, 1): SessionStarted,
    (VITALS_ALERT_RAISED, 1): VitalsAlertRaised,
    (VITALS_ALERT_RAISED, 2): VitalsAlertRaisedV2,
    (SESSION_COMPLETED, 1): SessionCompleted,
    (SESSION_ABORTED, 1): SessionAborted,
}

EVENT_TYPES = sorted({event_type for event_type, _ in SCHEMAS})


def register(event_type: str, version: int, schema: type[Schema]) -> None:
    """Add a schema (a new type, or a new version of one)."""
    SCHEMAS[(event_type, version)] = schema
    _instances.pop((event_type, version), None)


_instances: dict[tuple[str, int], Schema] = {}


def schema_for(event_type: str, version: int) -> Schema:
    """The schema instance for a type and version. Instances are kept: building one is costly, and
    a schema holds no per-call state, so threads can share it."""
    key = (event_type, version)
    schema = _instances.get(key)
    if schema is None:
        try:
            schema = _instances[key] = SCHEMAS[key]()
        except KeyError:
            raise InvalidEvent(f"no schema for {event_type} version {version}") from None
    return schema


def serialise_payload(event_type: str, data: dict, version: int = 1) -> dict:
    """The payload as JSON-ready primitives, checked against its schema; raises InvalidEvent."""
    payload = _jsonable(data)
    errors = schema_for(event_type, version).validate(payload)
    if errors:
        raise InvalidEvent(f"{event_type} v{version} payload invalid: {errors}")
    return payload


# One instance for every message, as schema_for keeps the payloads' (building one costs more than a load).
_envelope = EnvelopeSchema()


def parse(body: bytes | str) -> Event:
    """A received message as an Event with its payload loaded (UUIDs, datetimes, decimals)."""
    try:
        raw = json.loads(body)
        envelope = _envelope.load(raw)
    except (ValueError, ValidationError) as exc:
        raise InvalidEvent(f"not a valid event envelope: {exc}") from exc
    schema = schema_for(envelope["type"], envelope["version"])
    try:
        data = schema.load(envelope["data"])
    except ValidationError as exc:
        raise InvalidEvent(f"{envelope['type']} v{envelope['version']} payload invalid: {exc.messages}") from exc
    return Event(
        type=envelope["type"],
        version=envelope["version"],
        data=data,
        producer=envelope["producer"],
        id=str(envelope["id"]),
        occurred_at=envelope["occurred_at"],
        correlation_id=envelope["correlation_id"],
    )


def _jsonable(value):
    """Python values (UUID, datetime, Decimal) into what a schema's load accepts."""
    return json.loads(json.dumps(value, default=_default))


def _default(value):
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidEvent("event times must be timezone-aware")
        return value.isoformat()
    return str(value)
