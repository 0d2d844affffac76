"""What each email says: its subject, plain text, HTML and, for an appointment, a calendar file.

`compose(kind, context, contact, clinic) -> Composed` is pure: it reads the templates beside this
module and nothing else, so the sender can render a message outside any transaction and the
messages API can render a stored one again for an admin. The words live in templates/<kind>.txt and
templates/<kind>.html (both extending a shared layout); this module turns the stored context into
what a reader understands (times in the clinic's zone, "2 hours 30 minutes", "Heart rate") and builds
the .ics.

The context each kind needs (times as ISO 8601 text with an offset, normally UTC, as the mail log
stores them):

- infusion_booked, follow_up_booked: appointment_id, appointment_version, starts_at, ends_at,
  room_name (the appointment's kind is implied by the email's kind; a `kind` key is ignored).
- rescheduled: appointment_id, appointment_version, kind (infusion | follow_up), starts_at, ends_at,
  room_name, previous_starts_at.
- cancelled: appointment_id, appointment_version, kind, starts_at; ends_at and room_name are used
  when present (the cancelled event carries neither).
- reminder: kind, starts_at, ends_at, room_name.
- no_show: kind, starts_at.
- post_infusion: ended_at.
- staff_alert: alert_id, session_id, room_name, alert_kind (news2 | monitor_silent),
  level (urgent | emergency), escalation (bool), news2_score (None for a silent monitor),
  scored ([{parameter, points}], may be empty), raised_at.

appointment_version None counts as 0 (events from before versions existed). Optional for the kinds
with a calendar file: occurred_at, the event's time, written as the file's DTSTAMP (the current time
when absent). The patient's name comes from `contact` (its given_name), never from the context;
patients' kinds need a contact, staff_alert takes contact=None and never shows a patient's name.

`clinic` is any object with clinic_name, clinic_address, clinic_phone, mail_from and timezone (a
ZoneInfo): the notifications MailSettings. A missing context value, an unknown kind or a template
error raises CompositionError, which names what is wrong; sending the message again cannot help.

One module past 300 lines because it is one reader's view of the mail log: the context contract above,
the words a patient reads (dates, lengths, parameter names) and the calendar file that goes with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import icalendar
import jinja2

PATIENT_KINDS = ("infusion_booked", "follow_up_booked", "rescheduled", "cancelled", "no_show", "reminder", "post_infusion")
KINDS = (*PATIENT_KINDS, "staff_alert")

_APPOINTMENT = ("appointment_id", "appointment_version", "starts_at", "ends_at", "room_name")
REQUIRED_CONTEXT = {
    "infusion_booked": _APPOINTMENT,
    "follow_up_booked": _APPOINTMENT,
    "rescheduled": (*_APPOINTMENT, "kind", "previous_starts_at"),
    "cancelled": ("appointment_id", "appointment_version", "kind", "starts_at"),
    "reminder": ("kind", "starts_at", "ends_at", "room_name"),
    "no_show": ("kind", "starts_at"),
    "post_infusion": ("ended_at",),
    "staff_alert": ("alert_id", "session_id", "room_name", "alert_kind", "level", "escalation", "news2_score", "scored",
                    "raised_at"),
}

# What a patient calls each kind of appointment.
_APPOINTMENT_WORDS = {"infusion": "infusion", "follow_up": "return office visit"}

# The NEWS2 parameters under the names sessions scores them by, as a nurse reads them.
_PARAMETER_LABELS = {
    "respiratory_rate": "Respiratory rate",
    "spo2": "SpO2",
    "on_oxygen": "Supplemental oxygen",
    "systolic": "Systolic blood pressure",
    "heart_rate": "Heart rate",
    "consciousness": "Consciousness",
    "temperature": "Temperature",
}

# Spelled out here rather than with %A / %B, which follow the process's locale.
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


class ClinicDetails(Protocol):
    """What an email needs to know about the clinic (the notifications MailSettings has it all)."""

    clinic_name: str
    clinic_address: str
    clinic_phone: str
    mail_from: str
    timezone: ZoneInfo


class CompositionError(ValueError):
    """An email that cannot be written from what the mail log holds: sending it again cannot help."""


class MissingContext(CompositionError):
    """The context lacks a value the email's kind needs."""

    def __init__(self, kind: str, key: str):
        super().__init__(f"a {kind} email needs {key!r} in its context")
        self.kind = kind
        self.key = key


@dataclass(frozen=True)
class Composed:
    subject: str
    text: str
    html: str
    calendar: bytes | None = None
    calendar_method: str | None = None  # REQUEST or CANCEL, for the attachment's content type


def compose(kind: str, context: dict, contact: dict | None, clinic: ClinicDetails) -> Composed:
    """The email of `kind` for this context: subject, plain text, HTML and, for a booking, a change or a
    cancellation, the calendar file with its METHOD. Raises CompositionError naming what is missing."""
    if kind not in KINDS:
        raise CompositionError(f"no email of kind {kind!r}; the kinds are {', '.join(KINDS)}")
    for key in REQUIRED_CONTEXT[kind]:
        if key not in context:
            raise MissingContext(kind, key)
    values = {"clinic": {"name": clinic.clinic_name, "address": clinic.clinic_address, "phone": clinic.clinic_phone,
                         # What a tel: link dials: the digits and a leading +, without the spaces people read.
                         "dial": "".join(c for c in clinic.clinic_phone if c.isdigit() or c == "+")}}
    if kind in PATIENT_KINDS:
        if not contact or not contact.get("given_name"):
            raise CompositionError(f"a {kind} email needs the patient's contact with a given_name")
        values["patient_name"] = contact["given_name"]
    zone = clinic.timezone
    if kind == "staff_alert":
        values.update(_alert_values(context, zone))
        subject = _alert_subject(values)
    elif kind == "post_infusion":
        values["ended"] = spoken_moment(_moment(context, "ended_at", kind, zone))
        subject = "After your infusion: rest today, and call us if you need to"
    else:
        values.update(_appointment_values(kind, context, zone))
        subject = _appointment_subject(kind, values)
    try:
        text = _TEMPLATES.get_template(f"{kind}.txt").render(values)
        html = _TEMPLATES.get_template(f"{kind}.html").render(values)
    except jinja2.TemplateError as error:
        raise CompositionError(f"the {kind} template failed: {error}") from error
    calendar = method = None
    if kind in ("infusion_booked", "follow_up_booked", "rescheduled", "cancelled"):
        method = "CANCEL" if kind == "cancelled" else "REQUEST"
        calendar = appointment_calendar(kind, context, contact, clinic, method)
    # A header is one line: a room name with a line break in it must not start another.
    return Composed(" ".join(subject.split()), text, html, calendar, method)


def appointment_calendar(kind: str, context: dict, contact: dict | None, clinic: ClinicDetails, method: str) -> bytes:
    """The .ics for one appointment: the same UID at every change, SEQUENCE the appointment's version (so a
    calendar keeps the newest), times in the clinic's zone with its VTIMEZONE; CANCEL removes it."""
    zone = clinic.timezone
    starts = _moment(context, "starts_at", kind, zone)
    ends = _moment(context, "ends_at", kind, zone) if context.get("ends_at") else None
    what = _appointment_word(kind, context)
    room = context.get("room_name")

    calendar = icalendar.Calendar()
    calendar.add("prodid", f"-//{clinic.clinic_name}//notifications//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = icalendar.Event()
    event.add("uid", f"{context['appointment_id']}@{_mail_domain(clinic.mail_from)}")
    event.add("sequence", context["appointment_version"] or 0)
    event.add("dtstamp", _stamp(context, kind))
    event.add("dtstart", starts)
    if ends is not None:
        event.add("dtend", ends)
    event.add("summary", f"{what.capitalize()} at {clinic.clinic_name}")
    event.add("location", ", ".join(part for part in (room, clinic.clinic_name, clinic.clinic_address) if part))
    event.add("description", f"Questions or problems: call {clinic.clinic_name} on {clinic.clinic_phone}.")
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    if parseaddr(clinic.mail_from)[1]:
        organizer = icalendar.vCalAddress(f"mailto:{parseaddr(clinic.mail_from)[1]}")
        organizer.params["cn"] = clinic.clinic_name
        event.add("organizer", organizer)
    if contact and contact.get("email"):
        # RSVP=FALSE: the organiser's address takes no replies; the patient calls to change a booking.
        attendee = icalendar.vCalAddress(f"mailto:{contact['email']}")
        attendee.params.update({"cn": contact.get("given_name") or "", "rsvp": "FALSE", "partstat": "ACCEPTED"})
        event.add("attendee", attendee)
    calendar.add_component(event)
    # A VTIMEZONE for the years around the appointment, not icalendar's default 1970-2038 table.
    calendar.add_missing_timezones(first_date=date(starts.year - 1, 1, 1), last_date=date(starts.year + 2, 1, 1))
    return calendar.to_ical()


def spoken_moment(moment: datetime) -> str:
    """'Tuesday 8 January 2030 at 9:00 AM': a local time as a patient reads it."""
    return f"{spoken_date(moment)} at {spoken_time(moment)}"


def spoken_date(moment: datetime) -> str:
    return f"{_DAYS[moment.weekday()]} {moment.day} {_MONTHS[moment.month - 1]} {moment.year}"


def spoken_time(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{hour}:{moment.minute:02d} {'AM' if moment.hour < 12 else 'PM'}"


def spoken_length(length: timedelta) -> str:
    """'2 hours 30 minutes', '1 hour', '45 minutes'."""
    hours, minutes = divmod(int(length.total_seconds() // 60), 60)
    parts = []
    if hours:
        parts.append(f"{hours} hour{'s' if hours != 1 else ''}")
    if minutes or not hours:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return " ".join(parts)


def _appointment_values(kind: str, context: dict, zone: ZoneInfo) -> dict:
    starts = _moment(context, "starts_at", kind, zone)
    what = _appointment_word(kind, context)
    values = {
        "what": what,
        "is_infusion": what == "infusion",
        "when": spoken_moment(starts),
        "room": context.get("room_name"),
        "length": None,
        "previous_when": None,
    }
    if context.get("ends_at"):
        values["length"] = spoken_length(_moment(context, "ends_at", kind, zone) - starts)
    if kind == "rescheduled":
        values["previous_when"] = spoken_moment(_moment(context, "previous_starts_at", kind, zone))
    return values


def _appointment_subject(kind: str, values: dict) -> str:
    what, when = values["what"], values["when"]
    return {
        "infusion_booked": f"Your infusion is booked for {when}",
        "follow_up_booked": f"Your return office visit is booked for {when}",
        "rescheduled": f"Your {what} has moved to {when}",
        "cancelled": f"Your {what} on {when} is cancelled",
        "no_show": f"We missed you at your {what} on {when}",
        "reminder": f"Reminder: your {what} on {when}",
    }[kind]


def _alert_values(context: dict, zone: ZoneInfo) -> dict:
    return {
        "level": str(context["level"]).capitalize(),
        "escalation": bool(context["escalation"]),
        "room": context["room_name"],
        "silent_monitor": context["alert_kind"] == "monitor_silent",
        "news2_score": context["news2_score"],
        "scored": [_scored_parameter(item["parameter"], item.get("points")) for item in context["scored"]],
        "raised": spoken_moment(_moment(context, "raised_at", "staff_alert", zone)),
        "session_id": context["session_id"],
        "alert_id": context["alert_id"],
    }


def _scored_parameter(parameter: str, points: int | None) -> str:
    """'Heart rate: 3 points'; version 1 alerts named the parameters without their points."""
    label = _PARAMETER_LABELS.get(parameter, str(parameter).replace("_", " ").capitalize())
    return label if points is None else f"{label}: {points} point{'s' if points != 1 else ''}"


def _alert_subject(values: dict) -> str:
    """Urgent, Emergency and Escalated first, so they show in a phone's notification."""
    what = "monitor silent" if values["silent_monitor"] else f"NEWS2 score {values['news2_score']}"
    prefix = "Escalated: " if values["escalation"] else ""
    return f"{prefix}{values['level']} alert in {values['room']}: {what}"


def _appointment_word(kind: str, context: dict) -> str:
    if kind == "infusion_booked":
        return _APPOINTMENT_WORDS["infusion"]
    if kind == "follow_up_booked":
        return _APPOINTMENT_WORDS["follow_up"]
    try:
        return _APPOINTMENT_WORDS[context["kind"]]
    except KeyError:
        raise CompositionError(f"a {kind} email's context has an unknown appointment kind {context['kind']!r}") from None


def _moment(context: dict, key: str, kind: str, zone: ZoneInfo) -> datetime:
    """A stored time (ISO text or a datetime) in the clinic's zone; a time without an offset is refused
    rather than guessed."""
    value = context[key]
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise CompositionError(f"a {kind} email's {key!r} is not an ISO 8601 time: {value!r}") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise CompositionError(f"a {kind} email's {key!r} must be a time with an offset, got {value!r}")
    return value.astimezone(zone)


def _stamp(context: dict, kind: str) -> datetime:
    if context.get("occurred_at"):
        return _moment(context, "occurred_at", kind, timezone.utc)
    return datetime.now(timezone.utc)


def _mail_domain(mail_from: str) -> str:
    """The clinic's domain, from its sender address: the part of the UID that says whose appointment it is."""
    address = parseaddr(mail_from)[1]
    return address.rpartition("@")[2] or "clinic.invalid"
