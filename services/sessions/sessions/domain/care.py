"""A session's states, what each action may do from which state, the planned minutes, and the
conditions a patient is discharged on. Pure rules: no Flask, no database, no pika.

A session is opened `waiting` when the patient checks in for an infusion; a nurse starts it when the
drip goes in (`started`); it ends `completed` by a discharge to an escort, `aborted` (by a nurse or a
neurologist, also before it started: a patient unwell at the baseline readings goes home without an
infusion, and scheduling frees the room), or `cancelled` when scheduling cancels the appointment
while the session is still waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from clinic.errors import Conflict
from clinic.events import MINIMUM_INFUSION_MINUTES

WAITING, STARTED, COMPLETED, ABORTED, CANCELLED = "waiting", "started", "completed", "aborted", "cancelled"
STATUSES = (WAITING, STARTED, COMPLETED, ABORTED, CANCELLED)
OPEN = (WAITING, STARTED)
ENDED = (COMPLETED, ABORTED, CANCELLED)

# The states each action may be taken from. Readings and care (vitals, medications, visitors) are
# recorded on an open session; a waiting one takes baseline readings.
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "start": (WAITING,),
    "discharge": (STARTED,),
    "abort": (WAITING, STARTED),
    "cancel": (WAITING,),
    "change": OPEN,
}

SPO2_SCALES = (1, 2)  # NEWS2 scale 1; scale 2 for the hypercapnic target range (88-92 %)

# The post-infusion instructions the nurse confirms were given at discharge.
INSTRUCTIONS = {
    "rest_today": "rest for the remainder of the day",
    "call_if_problems": "call the clinic at any time if problems occur",
    "return_visit": "the return office visit",
}


def ensure_status(session: dict, allowed: tuple[str, ...], action: str) -> None:
    """Refuse (409) an action on a session whose state does not allow it, naming the state."""
    if session["status"] not in allowed:
        raise Conflict(f"cannot {action} a session that is {session['status']}",
                       {"session_id": session["id"], "status": session["status"]})


def planned_minutes(plan_minutes: int | None, appointment_minutes: int | None) -> int:
    """How long the infusion is planned to run: the plan's duration, else the appointment's length,
    never less than the clinic's minimum."""
    chosen = plan_minutes if plan_minutes is not None else appointment_minutes
    return max(chosen or 0, MINIMUM_INFUSION_MINUTES)


def minutes_between(start: datetime, end: datetime) -> int:
    """Whole minutes from start to end (none before it)."""
    return max(int((end - start).total_seconds() // 60), 0)


@dataclass(frozen=True)
class Escort:
    """The adult who takes the patient home."""

    name: str | None
    relationship: str | None
    phone: str | None
    adult_present: bool


@dataclass(frozen=True)
class Discharge:
    """What the nurse or neurologist asking for a discharge gives."""

    escort: Escort | None
    instructions: dict[str, bool]           # INSTRUCTIONS' keys, each confirmed as given or not
    early_reason: str | None = None
    by_neurologist: bool = False


@dataclass(frozen=True)
class SessionState:
    """What the session's record says at the moment of discharge."""

    started_at: datetime
    planned_minutes: int
    open_alerts: int                        # alerts nobody acknowledged
    last_news2: int | None
    last_level: str | None                  # the alert level of the last NEWS2, None below the thresholds


def unmet_discharge_conditions(discharge: Discharge, state: SessionState, now: datetime) -> list[dict]:
    """Every condition the discharge does not meet, each {"condition", "message"}: [] when the patient
    may go home. All are listed, so the nurse sees at once everything still to do."""
    unmet = []
    escort = discharge.escort
    if escort is None or not (escort.name and escort.name.strip()):
        unmet.append({"condition": "escort", "message": "an adult escort must take the patient home: name the escort"})
    elif not escort.adult_present:
        unmet.append({"condition": "escort", "message": "confirm that the adult escort is present"})
    missing = [text for key, text in INSTRUCTIONS.items() if not discharge.instructions.get(key)]
    if missing:
        unmet.append({"condition": "instructions", "message": "confirm the post-infusion instructions were given: " + "; ".join(missing),
                      "missing": [key for key in INSTRUCTIONS if not discharge.instructions.get(key)]})
    if state.open_alerts:
        unmet.append({"condition": "open_alerts",
                      "message": f"{state.open_alerts} alert(s) not acknowledged: acknowledge them first"})
    if state.last_level is not None:
        unmet.append({"condition": "last_news2",
                      "message": f"the last NEWS2 score ({state.last_news2}) is at the {state.last_level} level"})
    planned = max(state.planned_minutes, MINIMUM_INFUSION_MINUTES)
    elapsed = minutes_between(state.started_at, now)
    if elapsed < planned:
        reason = (discharge.early_reason or "").strip()
        if not discharge.by_neurologist:
            unmet.append({"condition": "planned_minutes",
                          "message": f"the infusion has run {elapsed} of its {planned} planned minutes; "
                                     "only a neurologist may discharge early"})
        elif not reason:
            unmet.append({"condition": "planned_minutes",
                          "message": f"the infusion has run {elapsed} of its {planned} planned minutes; "
                                     "give the reason for discharging early"})
    return unmet


def is_early(state: SessionState, now: datetime) -> bool:
    """The discharge comes before the planned minutes (never less than the clinic's minimum) have run."""
    return minutes_between(state.started_at, now) < max(state.planned_minutes, MINIMUM_INFUSION_MINUTES)
