"""Vital signs: readings posted by bedside monitors and entered by nurses, scored with NEWS2 as they
arrive, raising alerts once per episode; a reading entered in error is voided. One piece, a little
past the usual length: the checks, the scoring and the storing of a batch are one pass over it, and
the helpers each step uses are kept beside it (and unit-tested there).

A monitor's post (record_from_device) is the service's busiest path: whatever the number of
readings, it is one read that finds the device by its token's hash with the started session in its
room and what the device sent before at the batch's times, a second read only when a partial set
needs earlier values, and one write (sessions.db.monitoring); no event unless an alert is raised.
Everything else here is arithmetic on what those reads returned.

A monitor may send a batch again after a timeout: a reading already stored with the same device,
time and values is answered as it was stored (already_stored), never stored twice; the same device
and time with other values is refused (409), since a monitor does not rewrite what it measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy.exc import IntegrityError

from clinic.audit import CREATE, Access
from clinic.auth import DEVICE, Principal
from clinic.db import new_id, violated_constraint
from clinic.errors import Conflict, NotFound, RuleViolation, Unauthorized
from clinic.events import VITALS_ALERT_RAISED
from clinic.unit_of_work import UnitOfWork
from sessions.db import monitoring
from sessions.domain import news2
from sessions.domain.alerts import Episode, after_reading, alert_level
from sessions.domain.care import OPEN, ensure_status
from sessions.domain.rules import SessionRules
from sessions.domain.vitals import PARAMETERS, out_of_bounds
from sessions.services.alerts import alert_event, news2_alert

VITALS = "vitals"  # the audit's name for what a post of readings touches
_TENTH = Decimal("0.1")


# --- who posts ----------------------------------------------------------------------------------


def device_access() -> Access:
    """The audit entry of a monitor's post. Which device it is becomes known when its token is found
    in the post's transaction (record_from_device names it then): `device:<id>`."""
    return Access(Principal(DEVICE, (DEVICE,)), CREATE, VITALS, resource_id=None)


def _name_the_device(uow: UnitOfWork, device_id: str) -> None:
    if uow.access is not None:
        uow.access.principal = Principal(f"{DEVICE}:{device_id}", (DEVICE,))


# --- pure helpers -------------------------------------------------------------------------------


def normalised(reading: dict) -> dict:
    """A posted reading as it is stored and compared: its time in UTC, every parameter present (None
    when not measured), the temperature read to one decimal place (halves up), as the NEWS2 chart reads it."""
    values = {"measured_at": reading["measured_at"].astimezone(timezone.utc), **{name: reading.get(name) for name in PARAMETERS}}
    if values["temperature"] is not None:
        values["temperature"] = Decimal(values["temperature"]).quantize(_TENTH, rounding=ROUND_HALF_UP)
    return values


def differing_parameters(stored: dict, values: dict) -> list[str]:
    """The parameters in which a stored reading and a posted one differ ([] when they are the same reading)."""
    differ = []
    for name in PARAMETERS:
        old, new = stored.get(name), values.get(name)
        if name == "temperature" and old is not None and new is not None:
            old, new = Decimal(old), Decimal(new)
        if old != new:
            differ.append(name)
    return differ


def _at(index: int, field: str, message: str) -> dict:
    return {str(index): {field: [message]}}


def bounds_faults(batch: list[dict], rules: SessionRules) -> dict:
    """{index: {field: [message]}} for each value outside what a living person can show."""
    faults = {}
    for index, values in enumerate(batch):
        found = out_of_bounds(values, rules.bounds)
        if found:
            faults[str(index)] = {field: [message] for field, message in found.items()}
    return faults


def time_faults(batch: list[dict], now: datetime, rules: SessionRules, not_before: Iterable[tuple[datetime | None, str]]) -> dict:
    """{index: {"measured_at": [message]}} for each reading timed later than the clinic's clock allows
    (rules.future_skew), or earlier than one of `not_before` ((moment, what it is))."""
    latest = now + rules.future_skew
    not_before = [(moment, what) for moment, what in not_before if moment is not None]
    faults = {}
    for index, values in enumerate(batch):
        measured_at = values["measured_at"]
        if measured_at > latest:
            faults.update(_at(index, "measured_at", f"measured at {measured_at.isoformat()}, later than the clinic's clock allows "
                                                    f"(more than {int(rules.future_skew.total_seconds())} s ahead)"))
            continue
        for moment, what in not_before:
            if measured_at < moment:
                faults.update(_at(index, "measured_at", f"measured at {measured_at.isoformat()}, before {what} ({moment.isoformat()})"))
                break
    return faults


def same_time_twice(batch: list[dict]) -> tuple[dict[int, int], dict]:
    """For a monitor's batch: ({index: index of the same reading earlier in the batch}, faults for
    readings at the time of an earlier one with other values)."""
    first: dict[datetime, int] = {}
    repeats, faults = {}, {}
    for index, values in enumerate(batch):
        earlier = first.setdefault(values["measured_at"], index)
        if earlier == index:
            continue
        if differing_parameters(batch[earlier], values):
            faults.update(_at(index, "measured_at", f"reading {earlier} of this batch has the same time and other values"))
        else:
            repeats[index] = earlier
    return repeats, faults


@dataclass(frozen=True)
class Assessed:
    """One new reading's NEWS2 (None when nothing in it or before it could be scored), the alert
    level it reached, and the parameters taken from earlier readings to complete it."""

    score: news2.Score | None
    level: str | None
    filled_in: tuple[str, ...]


def assess(new: list[tuple[str, dict]], recent: list[tuple[datetime, dict]], episode: Episode | None, spo2_scale: int,
           rules: SessionRules) -> tuple[dict[str, Assessed], Episode | None, list[tuple[str, str]]]:
    """Score new readings (reading id, values) in measurement order, each partial set completed from
    the latest values within rules.scoring_window (the session's recent readings and the new ones
    before it), and carry the session's alert episode through them.

    Returns each reading's Assessed, the episode after them, and the alerts to raise: (reading id,
    level), at most one per reading, in measurement order."""
    assessed: dict[str, Assessed] = {}
    raises: list[tuple[str, str]] = []
    history = list(recent)
    for reading_id, values in sorted(new, key=lambda item: item[1]["measured_at"]):
        at = values["measured_at"]
        completed = news2.completed_from_recent(values, history, at, rules.scoring_window)
        score = news2.score(completed, spo2_scale)
        level = alert_level(score, rules) if score is not None else None
        if score is not None:
            episode, to_raise = after_reading(episode, level, rules, complete=score.complete)
            if to_raise is not None:
                raises.append((reading_id, to_raise))
        filled_in = tuple(name for name in news2.SCORED if values.get(name) is None and completed.get(name) is not None)
        assessed[reading_id] = Assessed(score, level, filled_in)
        history.append((at, values))
    return assessed, episode, raises


def replayed_episode(scored: list[dict], rules: SessionRules) -> Episode | None:
    """The alert episode that scored readings ({"alert_level", "news2_complete"}, in arrival order) make."""
    episode = None
    for reading in scored:
        episode, _ = after_reading(episode, reading["alert_level"], rules, complete=bool(reading["news2_complete"]))
    return episode


def _episode_of(context: dict) -> Episode | None:
    level = context.get("episode_level")
    return Episode(level, context.get("episode_calm_readings") or 0) if level is not None else None


def episode_row(session_id: str, before: Episode | None, after: Episode | None, opened_at: datetime | None,
                now: datetime) -> dict | None:
    """The alert_episodes row to write when the episode changed (None when it did not)."""
    if before == after:
        return None
    if after is None:
        return {"session_id": session_id, "level": None, "calm_readings": 0, "opened_at": None, "updated_at": now}
    opened = opened_at if before is not None and opened_at is not None else now
    return {"session_id": session_id, "level": after.level, "calm_readings": after.calm_readings, "opened_at": opened, "updated_at": now}


def new_reading_row(session_id: str, values: dict, received_at: datetime, device_id: str | None = None,
                    entered_by: str | None = None, assessed: Assessed | None = None, reading_id: str | None = None) -> dict:
    """A readings row as the service stores it (every column given, so rows go in one statement)."""
    score = assessed.score if assessed is not None else None
    return {
        "id": reading_id or new_id(), "session_id": session_id, "device_id": device_id, "entered_by": entered_by,
        "measured_at": values["measured_at"], "received_at": received_at, **{name: values.get(name) for name in PARAMETERS},
        "news2_total": score.total if score else None, "news2_points": dict(score.points) if score else None,
        "news2_complete": score.complete if score else None,
        "news2_filled_in": list(assessed.filled_in) if score else None,
        "alert_level": assessed.level if assessed is not None else None,
        "voided_at": None, "voided_by": None, "void_reason": None,
    }


# --- the use cases ------------------------------------------------------------------------------


def _refuse(faults: dict, what: str) -> None:
    if faults:
        indices = ", ".join(sorted(faults, key=int))
        raise RuleViolation(f"{what}: reading(s) {indices}", {"readings": faults})


def record_from_device(uow: UnitOfWork, rules: SessionRules, token_hash: str, posted: list[dict]) -> dict:
    """Store a monitor's readings (the monitor known by its device token's hash,
    clinic.auth.hash_device_token) in the started session of its room, scored, raising what alerts
    they call for. 401 for an unknown or revoked token, 409 when no session is started in its room or
    a reading's time is stored with other values, 422 naming each reading out of bounds, in the
    future, or from before the session started or the monitor came to the room."""
    batch = [normalised(reading) for reading in posted]
    _refuse(bounds_faults(batch, rules), "values no living person can show")
    repeats, faults = same_time_twice(batch)
    _refuse(faults, "two readings at one time")
    try:
        return _record_from_device(uow, rules, token_hash, batch, repeats)
    except IntegrityError as exc:
        # Stored by another request between this one's read and its write (the session's lock makes that
        # all but impossible): the same post once more finds them stored, and answers so.
        if violated_constraint(exc) not in (monitoring.ONE_READING_PER_DEVICE_AND_TIME, ""):
            raise
    return _record_from_device(uow, rules, token_hash, batch, repeats)


def _record_from_device(uow: UnitOfWork, rules: SessionRules, token_hash: str, batch: list[dict], repeats: dict[int, int]) -> dict:
    with uow:
        context, sent = monitoring.device_context(uow.connection, token_hash, [values["measured_at"] for values in batch])
        if context is None or context["revoked_at"] is not None:
            raise Unauthorized("this device token is not valid: unknown, or the device was revoked")
        _name_the_device(uow, context["device_id"])
        if context["session_id"] is None:
            raise Conflict("no session is started in this monitor's room; nothing was stored",
                           {"room_id": context["device_room_id"], "device_id": context["device_id"]})
        uow.audit.concerning(patient_id=context["patient_id"], resource_id=context["session_id"])
        _refuse(time_faults(batch, uow.now, rules, [(context["started_at"], "the session started"),
                                                    (context["assigned_at"], "this monitor came to its room")]),
                "readings timed outside the session")
        return _store(uow, rules, context, batch, repeats, sent, device_id=context["device_id"])


def record_by_hand(uow: UnitOfWork, rules: SessionRules, session_id: str, posted: list[dict], by: str) -> dict:
    """A nurse's readings for a waiting session (baseline readings before the start) or a started
    one, scored as a monitor's are. 404 for an unknown session, 409 for one that has ended, 422 naming
    each reading out of bounds, in the future or from before the patient checked in."""
    batch = [normalised(reading) for reading in posted]
    with uow:
        context = monitoring.session_context(uow.connection, session_id)
        if context is None:
            raise NotFound("no session with this id", {"session_id": session_id})
        uow.audit.concerning(patient_id=context["patient_id"], resource_id=session_id)
        ensure_status({"id": session_id, "status": context["status"]}, OPEN, "record vital signs on")
        _refuse(bounds_faults(batch, rules), "values no living person can show")
        _refuse(time_faults(batch, uow.now, rules, [(context["checked_in_at"], "the patient checked in")]),
                "readings timed outside the session")
        return _store(uow, rules, context, batch, {}, [], entered_by=by)


def _store(uow: UnitOfWork, rules: SessionRules, context: dict, batch: list[dict], repeats: dict[int, int], sent: list[dict],
           device_id: str | None = None, entered_by: str | None = None) -> dict:
    """Store what is new in a batch (`sent`: the device's readings already stored at its times),
    scored, with its alerts, events and audit row; answer every reading of the batch in its order."""
    connection, session_id = uow.connection, context["session_id"]
    times = [values["measured_at"] for values in batch]
    stored_at = {row["measured_at"]: row for row in sent}
    already: dict[int, dict] = {}
    conflicts = {}
    for index, values in enumerate(batch):
        stored = stored_at.get(values["measured_at"])
        if stored is None or index in repeats:
            continue
        differ = differing_parameters(stored, values)
        if differ:
            conflicts[str(index)] = {"reading_id": stored["id"], "measured_at": values["measured_at"].isoformat(), "differs_in": differ}
        else:
            already[index] = stored
    if conflicts:
        raise Conflict(f"this monitor sent other values for the same time before (reading(s) {', '.join(conflicts)}); "
                       "a stored reading is not rewritten", {"readings": conflicts})

    new = [(new_id(), index, values) for index, values in enumerate(batch) if index not in already and index not in repeats]
    # Complete sets need nothing from before them: the query for what fills in partial sets is made only for those.
    partial = any(values[name] is None for _, _, values in new for name in news2.SCORED)
    earlier = monitoring.recent_readings(connection, session_id, min(times), max(times), rules.scoring_window) if partial else []
    recent = [(row["measured_at"], row) for row in [*earlier, *sent] if row["session_id"] == session_id and row["voided_at"] is None]
    before = _episode_of(context)
    assessed, after, raises = assess([(reading_id, values) for reading_id, _, values in new], recent, before,
                                     context["spo2_scale"], rules)
    rows = {reading_id: new_reading_row(session_id, values, uow.now, device_id, entered_by, assessed[reading_id], reading_id)
            for reading_id, _, values in new}
    raised = [news2_alert(context, rows[reading_id], level, uow.now) for reading_id, level in raises]
    events = [uow.event_row(VITALS_ALERT_RAISED, alert_event(alert), version=2) for alert in raised]
    monitoring.write_readings(connection, list(rows.values()), uow.audit_rows(),
                              episode_row(session_id, before, after, context.get("episode_opened_at"), uow.now), raised, events)

    alert_of = {alert["reading_id"]: alert for alert in raised}
    answered: dict[int, dict] = {}
    for reading_id, index, _ in new:
        alert = alert_of.get(reading_id)
        answered[index] = {**rows[reading_id], "alert_id": alert["id"] if alert else None,
                           "alert_raised_level": alert["level"] if alert else None, "already_stored": False}
    for index, stored in already.items():
        answered[index] = {**stored, "already_stored": True}
    for index, first_index in repeats.items():
        answered[index] = answered.get(first_index) or {**already[first_index], "already_stored": True}
    return {"session_id": session_id, "readings": [answered[index] for index in range(len(batch))]}


def void_reading(uow: UnitOfWork, rules: SessionRules, session_id: str, reading_id: str, reason: str, by: str) -> dict:
    """Void a reading entered in error: kept in the history, left out of scores and alerts from now
    on (the session's alert episode is made again from the readings left). 404 for an unknown session
    or reading, 409 when it is voided already or the session has ended."""
    with uow:
        connection = uow.connection
        context = monitoring.session_context(connection, session_id)
        if context is None:
            raise NotFound("no session with this id", {"session_id": session_id})
        uow.audit.concerning(patient_id=context["patient_id"], resource_id=reading_id)
        ensure_status({"id": session_id, "status": context["status"]}, OPEN, "void a reading of")
        reading = monitoring.reading_of_session(connection, session_id, reading_id)
        if reading is None:
            raise NotFound("no reading with this id in this session", {"reading_id": reading_id})
        if reading["voided_at"] is not None:
            raise Conflict("this reading is voided already", {"reading_id": reading_id, "voided_at": reading["voided_at"].isoformat(),
                                                              "voided_by": reading["voided_by"]})
        monitoring.void(connection, reading_id, uow.now, by, reason)
        before = _episode_of(context)
        after = replayed_episode(monitoring.scored_readings_in_arrival_order(connection, session_id), rules)
        changed = episode_row(session_id, before, after, context.get("episode_opened_at"), uow.now)
        if changed is not None:
            monitoring.save_episode(connection, changed)
        return {**reading, "voided_at": uow.now, "voided_by": by, "void_reason": reason}
