"""How a session ends: a discharge to an adult escort (sessions.session.completed, with what records
and scheduling need: times, room, drugs given, pain before and after, the highest NEWS2, the alerts),
or an abort with a reason code (sessions.session.aborted, the code only; the note stays here).

The discharge is refused (422) with every unmet condition listed (sessions.domain.care): the nurse
sees everything still to do at once, and nothing is written.
"""

from __future__ import annotations

from clinic.errors import RuleViolation
from clinic.events import SESSION_ABORTED, SESSION_COMPLETED
from clinic.unit_of_work import UnitOfWork
from sessions.db import care as care_record
from sessions.db import monitoring
from sessions.domain import care
from sessions.domain.medications import amount
from sessions.services.sessions import change, changing, found, shown


def discharge(uow: UnitOfWork, session_id: str, request: care.Discharge, by: str) -> dict:
    """Discharge the patient to their escort: the session completes and sessions.session.completed
    leaves through the outbox with it. Refused with every unmet condition listed."""
    with uow:
        connection, now = uow.connection, uow.now
        session = changing(uow, session_id, "discharge")
        last = monitoring.latest_scores(connection, [session_id]).get(session_id)
        unacknowledged = monitoring.open_alerts(connection, [session_id]).get(session_id, [])
        state = care.SessionState(started_at=session["started_at"], planned_minutes=session["planned_minutes"],
                                  open_alerts=len(unacknowledged), last_news2=last["total"] if last else None,
                                  last_level=last["level"] if last else None)
        unmet = care.unmet_discharge_conditions(request, state, now)
        if unmet:
            raise RuleViolation("the patient cannot be discharged yet: " + "; ".join(item["message"] for item in unmet),
                                {"unmet": unmet})
        escort = request.escort
        change(connection, session, now, status=care.COMPLETED, ended_at=now, ended_by=by, escort_name=escort.name.strip(),
               escort_relationship=escort.relationship, escort_phone=escort.phone, escort_adult_present=escort.adult_present,
               told_to_rest_today=True, told_to_call_if_problems=True, told_of_return_visit=True,
               early_discharge_reason=request.early_reason.strip() if care.is_early(state, now) else None)
        uow.add_event(SESSION_COMPLETED, _completed_payload(connection, session, now))
        return shown(connection, session_id)


def abort(uow: UnitOfWork, session_id: str, reason: str, note: str | None, by: str) -> dict:
    """End the session without a discharge (a waiting one too: the patient goes home without the
    infusion). The event carries the reason code only; the note is kept here."""
    with uow:
        connection, now = uow.connection, uow.now
        session = changing(uow, session_id, "abort")
        change(connection, session, now, status=care.ABORTED, ended_at=now, ended_by=by, abort_reason=reason, abort_note=note)
        uow.add_event(SESSION_ABORTED, {"session_id": session["id"], "appointment_id": session["appointment_id"],
                                        "patient_id": session["patient_id"], "room_id": session["room_id"], "ended_at": now,
                                        "reason": reason})
        return shown(connection, session_id)


def _completed_payload(connection, session: dict, ended_at) -> dict:
    session_id = session["id"]
    pain_before, pain_after = care_record.pain_before_after(connection, session_id, session["started_at"])
    return {
        "session_id": session_id, "appointment_id": session["appointment_id"], "patient_id": session["patient_id"],
        "room_id": session["room_id"], "room_name": found(connection, session_id)["room_name"],
        "started_at": session["started_at"], "ended_at": ended_at,
        "drugs_given": [{**given, "dose": amount(given["dose"])} for given in care_record.drugs_given(connection, session_id)],
        "pain_before": pain_before, "pain_after": pain_after,
        "highest_news2": monitoring.highest_news2(connection, session_id),
        "alerts": monitoring.alert_summaries(connection, session_id),
    }

