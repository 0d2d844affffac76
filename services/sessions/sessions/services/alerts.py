"""Alerts: raised by a NEWS2 score (services.vitals), by a monitor gone silent, or again as an
escalation when nobody acknowledged one in time; acknowledged by a nurse or a neurologist.

Each alert leaves the service once, as sessions.vitals.alert_raised version 2, written to the outbox
in the transaction that raises it. The event names the session and the room, never the patient.

The two worker jobs (watch_monitors, escalate_unacknowledged) decide from what the database says
and are safe with two workers at once: a silence is one alert (uq_alerts_silence on the session and
the moment the silence began) and an alert is escalated once (uq_alerts_escalation_of); the insert
that would make a second does nothing, and raises no event.
"""

from __future__ import annotations

from datetime import datetime

from clinic.db import new_id
from clinic.errors import Conflict, NotFound
from clinic.events import VITALS_ALERT_RAISED
from clinic.unit_of_work import UnitOfWork
from sessions.db import monitoring
from sessions.domain.alerts import URGENT, escalation_due
from sessions.domain.care import OPEN, STARTED
from sessions.domain.rules import SessionRules

NEWS2, MONITOR_SILENT = "news2", "monitor_silent"


def alert_event(alert: dict) -> dict:
    """The payload of sessions.vitals.alert_raised version 2 for an alert row (no patient in it)."""
    return {
        "alert_id": alert["id"], "session_id": alert["session_id"], "room_id": alert["room_id"], "room_name": alert["room_name"],
        "kind": alert["kind"], "level": alert["level"], "escalation": alert["escalation"], "news2_score": alert["news2_score"],
        "scored": alert["scored"], "observed_at": alert["observed_at"], "raised_at": alert["raised_at"],
    }


def _alert(session: dict, kind: str, level: str, raised_at: datetime, **values) -> dict:
    return {"id": new_id(), "session_id": session["session_id"], "room_id": session["room_id"], "room_name": session["room_name"],
            "kind": kind, "level": level, "news2_score": None, "scored": [], "observed_at": None, "raised_at": raised_at,
            "reading_id": None, "silent_since": None, "escalation": False, "escalation_of": None, "acknowledged_at": None,
            "acknowledged_by": None, **values}


def news2_alert(session: dict, reading: dict, level: str, raised_at: datetime) -> dict:
    """The alert a stored reading's NEWS2 raises: its total and the parameters that scored."""
    scored = [{"parameter": name, "points": points} for name, points in (reading["news2_points"] or {}).items() if points > 0]
    return _alert(session, NEWS2, level, raised_at, news2_score=reading["news2_total"], scored=scored,
                  observed_at=reading["measured_at"], reading_id=reading["id"])


def silent_since(started_at: datetime, device_since: datetime | None, last_received_at: datetime | None) -> datetime:
    """Since when a monitored session has waited for a reading: its start, a monitor's arrival in the
    room, or the last reading's arrival, whichever is latest."""
    return max(moment for moment in (started_at, device_since, last_received_at) if moment is not None)


def escalation(original: dict, raised_at: datetime) -> dict:
    """An alert nobody acknowledged, raised again as an escalation."""
    return {**original, "id": new_id(), "raised_at": raised_at, "reading_id": None, "silent_since": None, "escalation": True,
            "escalation_of": original["id"], "acknowledged_at": None, "acknowledged_by": None}


def _columns(alert: dict) -> dict:
    return {column.name: alert[column.name] for column in monitoring.alerts.c}


# --- the use cases ------------------------------------------------------------------------------


def acknowledge_alert(uow: UnitOfWork, alert_id: str, by: str) -> dict:
    """A nurse or neurologist has seen the alert and is dealing with it: acknowledged together with the
    alert it escalates, or its escalation. 404 for an unknown alert, 409 when acknowledged already."""
    with uow:
        connection = uow.connection
        alert = monitoring.alert(connection, alert_id, lock=True)
        if alert is None:
            raise NotFound("no alert with this id", {"alert_id": alert_id})
        uow.audit.concerning(patient_id=alert["patient_id"], resource_id=alert_id)
        if alert["acknowledged_at"] is not None:
            raise Conflict(f"this alert was acknowledged already by {alert['acknowledged_by']}",
                           {"alert_id": alert_id, "acknowledged_at": alert["acknowledged_at"].isoformat(),
                            "acknowledged_by": alert["acknowledged_by"]})
        monitoring.acknowledge(connection, alert, uow.now, by)
        return {**alert, "acknowledged_at": uow.now, "acknowledged_by": by}


def watch_monitors(uow: UnitOfWork, rules: SessionRules) -> list[dict]:
    """The worker's look for silent monitors: a started session in a room with an active device that
    has had no reading for rules.monitor_silent_after raises one urgent monitor_silent alert per
    silence (not one per run). Rooms without a device raise none. Returns the alerts raised."""
    with uow:
        connection = uow.connection
        due = []
        for session in monitoring.monitored_started_sessions(connection):
            since = silent_since(session["started_at"], session["device_since"], session["last_received_at"])
            if uow.now - since >= rules.monitor_silent_after:
                due.append(_alert(session, MONITOR_SILENT, URGENT, uow.now, silent_since=since))
        # A session discharged or aborted since the look above raises nothing.
        started = monitoring.still_in(connection, [alert["session_id"] for alert in due], (STARTED,))
        raised = monitoring.insert_alerts_once(connection, [alert for alert in due if alert["session_id"] in started], key="silent_since")
        for alert in raised:
            uow.add_event(VITALS_ALERT_RAISED, alert_event(alert), version=2)
        return raised


def escalate_unacknowledged(uow: UnitOfWork, rules: SessionRules) -> list[dict]:
    """The worker's look for alerts nobody acknowledged within rules.escalate_after, in sessions not yet
    ended: each is raised again once, as an escalation. Returns the escalations raised."""
    with uow:
        connection = uow.connection
        candidates = monitoring.unacknowledged_originals(connection, uow.now - rules.escalate_after, OPEN)
        due = [escalation(_columns(alert), uow.now) for alert in candidates
               if escalation_due(alert["raised_at"], alert["acknowledged_at"], False, uow.now, rules)]
        still_open = monitoring.still_in(connection, [alert["session_id"] for alert in due], OPEN)
        raised = monitoring.insert_alerts_once(connection, [alert for alert in due if alert["session_id"] in still_open],
                                               key="escalation_of")
        for alert in raised:
            uow.add_event(VITALS_ALERT_RAISED, alert_event(alert), version=2)
        return raised
