"""Scheduling rules: no Flask, no database session, no pika.

An appointment holds two things for a span of time: its room and its patient.
  - the room from the start until `room_blocked_until`: the end, plus the turnover gap after an
    infusion (the recliner is cleaned and made ready before the next patient; `turnover_after`).
    Staff see this moment as the appointment's `room_free_at`;
  - the patient from the start until `patient_busy_until`: the end.
Booked, checked-in, in-progress and completed appointments hold both; cancelled and no-show ones hold
nothing. A completed appointment holds them only until its actual end (see `released_after_session`).

An appointment's statuses: booked, then checked_in at the desk, then in_progress once sessions reports
that the nurse started the infusion session, then completed when the session ends (completed or
aborted in sessions). Cancelled and no_show end it instead, but only before the session has started:
from then on the session is what is stopped, in sessions, and its end completes the appointment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.events import APPOINTMENT_KINDS, MINIMUM_INFUSION_MINUTES

INFUSION, FOLLOW_UP = APPOINTMENT_KINDS

INFUSION_ROOM, EXAM_ROOM = "infusion", "exam"
ROOM_KINDS = (INFUSION_ROOM, EXAM_ROOM)
ROOM_KIND_FOR = {INFUSION: INFUSION_ROOM, FOLLOW_UP: EXAM_ROOM}

BOOKED, CHECKED_IN, IN_PROGRESS, COMPLETED, CANCELLED, NO_SHOW = (
    "booked", "checked_in", "in_progress", "completed", "cancelled", "no_show")
STATUSES = (BOOKED, CHECKED_IN, IN_PROGRESS, COMPLETED, CANCELLED, NO_SHOW)
# The statuses in which an appointment holds its room and its patient. The PostgreSQL exclusion
# constraints (migration 0002, given in_progress by 0007) name the same statuses; change both together.
HOLDING_STATUSES = (BOOKED, CHECKED_IN, IN_PROGRESS, COMPLETED)

SESSION_COMPLETED, SESSION_ABORTED = "completed", "aborted"

# A start further ahead than this is almost certainly a typing slip (2062 for 2026).
BOOKING_HORIZON_DAYS = 400
# The slot finder looks at most this far in one request, which bounds its work.
AVAILABILITY_MAX_DAYS = 31
# A 409 for a change that would strand appointments lists this many, enough for a person to act on;
# its count says how many there are in all.
LISTED_IN_CONFLICTS = 50

# Which statuses each action may start from. Anything else is a 409 naming the status.
ALLOWED_FROM = {
    "reschedule": (BOOKED,),
    "cancel": (BOOKED, CHECKED_IN),
    "check_in": (BOOKED,),
    "no_show": (BOOKED,),
    "complete": (BOOKED, CHECKED_IN, IN_PROGRESS),
}
# How refusals name actions and statuses, for people.
_ACTION_WORDS = {"reschedule": "reschedule", "cancel": "cancel", "check_in": "check in", "no_show": "record a no-show for",
                 "complete": "complete"}
_STATUS_WORDS = {BOOKED: "booked", CHECKED_IN: "checked in", IN_PROGRESS: "in progress", COMPLETED: "completed",
                 CANCELLED: "cancelled", NO_SHOW: "a no-show"}
_LEADS_TO = {"cancel": CANCELLED, "check_in": CHECKED_IN, "no_show": NO_SHOW, "complete": COMPLETED}
# Once the infusion session has started, the appointment is not what the desk stops: the session is.
_STOPPED_IN_SESSIONS = {"cancel": "cancelling", "reschedule": "rescheduling", "no_show": "recording a no-show for"}


@dataclass(frozen=True)
class SchedulingRules:
    """The clinic's scheduling settings (read from the environment in scheduling.config)."""

    timezone: ZoneInfo
    turnover: timedelta = timedelta(minutes=15)
    follow_up_length: timedelta = timedelta(minutes=30)
    grid: timedelta = timedelta(minutes=15)
    follow_up_after_days: int = 14
    follow_up_search_days: int = 28
    no_show_grace: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class PlanCopy:
    """What scheduling knows of a patient: the active treatment plan, if any (None once retired), as of
    the patient's plan sequence `version`.

    Records numbers each patient's plan events, one more at each activation or retirement (replacing
    plan A by plan B is "A retired" at n+1, then "B activated" at n+2). A copy is replaced only by one
    of a higher number, whatever order the events arrive in and whatever the clocks of the machines
    that wrote them said: a late activation never brings back a plan retired since. An event from
    before records numbered them counts as 0.
    """

    patient_id: str
    plan_id: str | None
    infusion_minutes: int | None
    version: int = 0

    @property
    def is_active(self) -> bool:
        return self.plan_id is not None


def copy_after_activation(patient_id: str, plan_id: str, infusion_minutes: int, plan_sequence: int | None) -> PlanCopy:
    """The copy records' treatment_plan.activated makes: this plan is in force."""
    return PlanCopy(patient_id, plan_id, infusion_minutes, plan_sequence or 0)


def copy_after_retirement(patient_id: str, plan_sequence: int | None) -> PlanCopy:
    """The copy records' treatment_plan.retired makes: no plan in force (a replacing plan's activation
    follows with the next number). The patient stays known, for follow-up visits."""
    return PlanCopy(patient_id, None, None, plan_sequence or 0)


def require_known_patient(kind: str, plan: PlanCopy | None, patient_id: str) -> None:
    """Scheduling has no patient registry: a patient is known through the plan copies.

    An infusion needs an active plan (it sets the length and, at check-in, the drugs allowed). A
    follow-up visit needs a patient who has or had a plan: someone records has treated, not a typo.
    """
    if kind == INFUSION and (plan is None or not plan.is_active):
        raise RuleViolation("the patient has no active treatment plan; an infusion cannot be booked without one",
                            {"patient_id": ["no active treatment plan for this patient"]})
    if plan is None:
        raise RuleViolation("scheduling knows no patient with this id (no treatment plan was ever activated for them)",
                            {"patient_id": ["unknown patient"]})


def appointment_length(kind: str, plan: PlanCopy | None, rules: SchedulingRules) -> timedelta:
    if kind == INFUSION:
        minutes = plan.infusion_minutes if plan and plan.infusion_minutes else MINIMUM_INFUSION_MINUTES
        return timedelta(minutes=max(minutes, MINIMUM_INFUSION_MINUTES))
    return rules.follow_up_length


def check_plan_fits_booking(appointment: dict, plan: PlanCopy, rules: SchedulingRules) -> None:
    """An infusion starts only if the active plan's length fits the time the room was booked for:
    a plan activated since the booking may be longer, and the room may be booked right after."""
    needed = appointment_length(INFUSION, plan, rules)
    booked = appointment["ends_at"] - appointment["starts_at"]
    if needed > booked:
        minutes = int(needed.total_seconds() // 60)
        raise RuleViolation(
            f"the active treatment plan now needs {minutes} minutes but this appointment is booked for "
            f"{int(booked.total_seconds() // 60)}; reschedule it before checking in",
            {"plan_id": plan.plan_id, "needed_minutes": minutes},
        )


def turnover_after(kind: str, rules: SchedulingRules) -> timedelta:
    """How long after the end the room stays held: the turnover gap after an infusion, none after a visit."""
    return rules.turnover if kind == INFUSION else timedelta(0)


@dataclass(frozen=True)
class Span:
    """The times an appointment occupies: [starts_at, ends_at) for the patient, [starts_at, room_blocked_until) for the room."""

    starts_at: datetime
    ends_at: datetime
    room_blocked_until: datetime

    @property
    def patient_busy_until(self) -> datetime:
        return self.ends_at


def span_for(kind: str, starts_at: datetime, plan: PlanCopy | None, rules: SchedulingRules) -> Span:
    ends_at = starts_at + appointment_length(kind, plan, rules)
    return Span(starts_at, ends_at, ends_at + turnover_after(kind, rules))


def check_start(starts_at: datetime, now: datetime) -> None:
    """A start must be in the future, on a whole minute, and within the booking horizon."""
    if starts_at.tzinfo is None:
        raise RuleViolation("times need a UTC offset", {"starts_at": ["a timezone-aware time is required"]})
    if starts_at.second or starts_at.microsecond:
        raise RuleViolation("appointments start on a whole minute", {"starts_at": ["seconds must be zero"]})
    if starts_at < now:
        raise RuleViolation("the start is in the past", {"starts_at": ["must not be in the past"]})
    if starts_at > now + timedelta(days=BOOKING_HORIZON_DAYS):
        raise RuleViolation(f"the start is more than {BOOKING_HORIZON_DAYS} days ahead",
                            {"starts_at": [f"must be within {BOOKING_HORIZON_DAYS} days"]})


def check_room(room: dict | None, kind: str, room_id: str) -> None:
    """The room named in a request must exist, be in use, and be of the kind the appointment needs."""
    if room is None:
        raise RuleViolation("no room with this id", {"room_id": ["unknown room"]})
    if not room["active"]:
        raise RuleViolation(f"room {room['name']} is not in use", {"room_id": ["room is inactive"]})
    needed = ROOM_KIND_FOR[kind]
    if room["kind"] != needed:
        raise RuleViolation(f"{_a(kind.replace('_', '-'))} appointment needs {_a(needed)} room; "
                            f"{room['name']} is {_a(room['kind'])} room", {"room_id": [f"not {_a(needed)} room"]})


def room_changes(room: dict, changes: dict) -> dict:
    """What of `changes` (name, kind, active) differs from the room as it is: nothing for a change to
    what it is already, which then writes nothing, bumps no version and tells no one."""
    return {field: value for field, value in changes.items() if room[field] != value}


def _a(word: str) -> str:
    """The word with its indefinite article: "an infusion", "an exam", "a follow-up"."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def found(appointment: dict | None, appointment_id: str) -> dict:
    """The appointment, or a 404 naming the id asked for."""
    if appointment is None:
        raise NotFound("no appointment with this id", {"appointment_id": appointment_id})
    return appointment


def refuse_stranding(message: str, stranded: list[dict]) -> None:
    """A 409 listing the booked appointments a change to rooms or the calendar would strand, if any."""
    if stranded:
        raise Conflict(message, {"appointment_id": stranded[0]["id"], "count": len(stranded),
                                 "appointment_ids": [appointment["id"] for appointment in stranded[:LISTED_IN_CONFLICTS]]})


def ensure_allowed(action: str, appointment: dict) -> None:
    """A 409 unless the appointment's status lets this action happen (ALLOWED_FROM)."""
    status = appointment["status"]
    if status in ALLOWED_FROM[action]:
        return
    if status == IN_PROGRESS and action in _STOPPED_IN_SESSIONS:
        message = (f"the infusion session has started; abort the session in sessions instead of "
                   f"{_STOPPED_IN_SESSIONS[action]} the appointment")
    elif _LEADS_TO.get(action) == status:
        message = f"the appointment is {_STATUS_WORDS[status]} already"
    else:
        allowed = " or ".join(_STATUS_WORDS[allowed] for allowed in ALLOWED_FROM[action])
        message = f"cannot {_ACTION_WORDS[action]} an appointment that is {_STATUS_WORDS[status]} (only one that is {allowed})"
    raise Conflict(message, {"appointment_id": appointment["id"], "status": status})


def goes_in_progress(appointment: dict) -> bool:
    """Whether sessions' news that the infusion session started puts the appointment in progress.

    Only a checked-in one moves. Any other stays as it is: in progress already (the news came twice),
    completed (the session's end arrived first: the start it reports is over), cancelled or a
    no-show (the desk's change and the start crossed; the session's end still records the infusion).
    """
    return appointment["status"] == CHECKED_IN


def check_check_in_time(appointment: dict, now: datetime, tz: ZoneInfo) -> None:
    """Check-in is for the day of the appointment, up to its scheduled end."""
    if now.astimezone(tz).date() != appointment["starts_at"].astimezone(tz).date():
        raise RuleViolation("a patient can be checked in only on the day of the appointment",
                            {"starts_at": appointment["starts_at"].isoformat()})
    if now >= appointment["ends_at"]:
        raise RuleViolation("the appointment's time is over; mark a no-show or reschedule",
                            {"ends_at": appointment["ends_at"].isoformat()})


def check_no_show_time(appointment: dict, now: datetime, rules: SchedulingRules) -> None:
    """A no-show is recorded only once the grace period after the start has passed: patients run late."""
    allowed_from = appointment["starts_at"] + rules.no_show_grace
    if now < allowed_from:
        raise RuleViolation(f"a no-show can be recorded only from {allowed_from.astimezone(rules.timezone):%H:%M} "
                            f"({int(rules.no_show_grace.total_seconds() // 60)} minutes after the start)",
                            {"no_show_allowed_from": allowed_from.isoformat()})


def released_after_session(appointment: dict, ended_at: datetime, rules: SchedulingRules) -> tuple[datetime, datetime]:
    """(room_blocked_until, patient_busy_until) once the session has ended at `ended_at`.

    The room is free from the actual end (plus the turnover gap after an infusion, as between any
    two infusions). The hold only ever shrinks: a session that overran has already lived through
    its overrun, and stretching the hold now could collide with the next booking in that room.
    Never before the start, so a session begun early leaves an empty hold, not an inverted one.
    """
    start = appointment["starts_at"]
    room_until = min(appointment["room_blocked_until"], max(start, ended_at + turnover_after(appointment["kind"], rules)))
    patient_until = min(appointment["patient_busy_until"], max(start, ended_at))
    return room_until, patient_until


def follow_up_search_start(ended_at: datetime, now: datetime, rules: SchedulingRules) -> datetime:
    """Local midnight of the day `follow_up_after_days` after the infusion ended, or now if that is later."""
    day = ended_at.astimezone(rules.timezone).date() + timedelta(days=rules.follow_up_after_days)
    midnight = datetime(day.year, day.month, day.day, tzinfo=rules.timezone)
    return max(midnight.astimezone(now.tzinfo), now)
