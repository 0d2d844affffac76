"""Notifications rules: no Flask, no database session, no pika.

What each consumed event means for the mail log: which message (its kind), and the context its
templates are rendered from (notifications.compose, whose docstring lists the keys each kind needs).
A context holds times as ISO 8601 UTC text (compose shows them in the clinic's time zone), the room's
name, the appointment's version (a calendar file's SEQUENCE), the NEWS2 facts of an alert; never the
patient's name or address, which come from the contact copy when the message is rendered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

# The kinds of message, each a template (notifications/templates/<kind>.txt and .html); the mail log
# holds the full list (notifications.db.messages.KINDS).
INFUSION_BOOKED, RESCHEDULED, CANCELLED, NO_SHOW = "infusion_booked", "rescheduled", "cancelled", "no_show"
REMINDER, POST_INFUSION, FOLLOW_UP_BOOKED, STAFF_ALERT = "reminder", "post_infusion", "follow_up_booked", "staff_alert"

# The appointment copy's statuses: what notifications has heard of the appointment.
BOOKED, APPOINTMENT_CANCELLED, APPOINTMENT_NO_SHOW = "booked", "cancelled", "no_show"

# A fixed namespace, so every worker derives the same reminder id for the same appointment version.
_REMINDERS = uuid.UUID("6f1d7c2e-4b8a-5d3e-9c1f-0a2b3c4d5e6f")


def contact_copy(data: dict, changed_at: datetime) -> dict:
    """The contact copy an event describes. An event from before versions existed counts as version 0,
    so it fills a copy nobody has made yet but never replaces a versioned one."""
    return {
        "patient_id": str(data["patient_id"]),
        "given_name": data["given_name"],
        "family_name": data["family_name"],
        "email": data["email"],
        "phone": data["phone"],
        "preferred_contact": data["preferred_contact"],
        "email_opt_out": data["email_opt_out"],
        "changed_at": changed_at,
        "version": data.get("contact_version") or 0,
    }


def iso(moment: datetime | None) -> str | None:
    """A moment as ISO 8601 UTC text, as contexts hold it (JSON has no datetimes)."""
    return moment.astimezone(timezone.utc).isoformat() if moment is not None else None


# --- the appointment copy -----------------------------------------------------------------------


def appointment_copy(data: dict, status: str) -> dict:
    """The appointment copy an appointment event describes, with only the columns the event carries:
    a cancellation or a no-show names no room, so the copy keeps the room it had (clinic.db.keep_newest
    writes only the columns given). Events from before versions existed count as version 0."""
    copy = {"id": str(data["appointment_id"]), "patient_id": str(data["patient_id"]), "starts_at": data["starts_at"],
            "status": status, "version": data.get("appointment_version") or 0}
    for column in ("kind", "room_name", "ends_at"):
        if column in data:
            copy[column] = data[column]
    return copy


# --- what each event asks to send -----------------------------------------------------------------


def booked_kind(appointment_kind: str) -> str:
    """An infusion's booking sends the preparation notes; a follow-up visit's its own confirmation."""
    return INFUSION_BOOKED if appointment_kind == "infusion" else FOLLOW_UP_BOOKED


def appointment_context(data: dict, occurred_at: datetime, known: dict | None = None) -> dict:
    """The context of a message about an appointment (booked, rescheduled, cancelled, no-show), from
    the event's data. `known` is the appointment copy as it was before this event, for what the event
    does not carry (a cancellation names no room or end): None where that is unknown too.
    `occurred_at` (the event's time) becomes the calendar file's DTSTAMP."""
    known = known or {}
    context = {
        "appointment_id": str(data["appointment_id"]),
        "kind": data.get("kind") or known.get("kind"),
        "starts_at": iso(data["starts_at"]),
        "ends_at": iso(data.get("ends_at") or known.get("ends_at")),
        "room_name": data.get("room_name") or known.get("room_name"),
        "appointment_version": data.get("appointment_version") or 0,
        "occurred_at": iso(occurred_at),
    }
    if data.get("previous_starts_at") is not None:
        context["previous_starts_at"] = iso(data["previous_starts_at"])
    return context


def reminder_context(copy: dict) -> dict:
    """The context of the day-before reminder, from the appointment copy (a booked one has them all)."""
    return {
        "appointment_id": copy["id"],
        "kind": copy["kind"],
        "starts_at": iso(copy["starts_at"]),
        "ends_at": iso(copy["ends_at"]),
        "room_name": copy["room_name"],
        "appointment_version": copy["version"],
    }


def post_infusion_context(data: dict) -> dict:
    """The context of the post-infusion instructions, from sessions.session.completed. The drugs,
    the pain scores and the alerts stay out: the instructions are the same for everyone."""
    return {
        "session_id": str(data["session_id"]),
        "appointment_id": str(data["appointment_id"]),
        "room_name": data["room_name"],
        "started_at": iso(data["started_at"]),
        "ended_at": iso(data["ended_at"]),
    }


def staff_alert_context(data: dict, version: int) -> dict:
    """The context of the on-call staff's alert, from sessions.vitals.alert_raised version 2 or 1.

    Version 1 knew only NEWS2 alerts (no kind, no escalation) and named the scoring parameters
    without their points; its patient id is dropped here: the alert names no patient."""
    if version == 1:
        return {
            "alert_id": str(data["alert_id"]),
            "session_id": str(data["session_id"]),
            "room_name": data["room_name"],
            "alert_kind": "news2",
            "level": data["level"],
            "escalation": False,
            "news2_score": data["news2_score"],
            "scored": [{"parameter": parameter, "points": None} for parameter in data["triggered_by"]],
            "observed_at": iso(data["observed_at"]),
            "raised_at": iso(data["observed_at"]),
        }
    return {
        "alert_id": str(data["alert_id"]),
        "session_id": str(data["session_id"]),
        "room_name": data["room_name"],
        "alert_kind": data["kind"],
        "level": data["level"],
        "escalation": data["escalation"],
        "news2_score": data.get("news2_score"),
        "scored": [{"parameter": item["parameter"], "points": item["points"]} for item in data.get("scored") or []],
        "observed_at": iso(data.get("observed_at")),
        "raised_at": iso(data["raised_at"]),
    }


# --- reminders ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReminderRules:
    """When reminders go: from `hour` o'clock (clinic-local) the day before each appointment."""

    timezone: ZoneInfo
    hour: int = 17


def reminder_event_id(appointment_id: str, version: int) -> str:
    """The id the reminder of one version of an appointment is logged under: the same in every worker
    and after every restart (so it is queued once), a new one once the appointment is rescheduled."""
    return str(uuid.uuid5(_REMINDERS, f"{appointment_id}:{version}"))


def reminder_window(rules: ReminderRules, now: datetime) -> tuple[datetime, datetime] | None:
    """The UTC bounds of tomorrow (clinic-local) once today's reminder hour has come, else None:
    the appointments starting in them get their reminder now."""
    local_now = now.astimezone(rules.timezone)
    if local_now.hour < rules.hour:
        return None
    tomorrow = local_now.date() + timedelta(days=1)
    return _local_midnight(tomorrow, rules.timezone), _local_midnight(tomorrow + timedelta(days=1), rules.timezone)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(timezone.utc)
