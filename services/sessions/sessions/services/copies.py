"""What sessions keeps of other services' data, from their events: the rooms (scheduling) and the
treatment plans (records), each kept by the version its producer stamped, never by clock
(clinic.db.keep_newest); and each session's copy of its plan's drugs, filled from the plan copy.

Events about one patient's plans may arrive in any order (a retried one after those that followed
it): a copy is never replaced by an older sequence, and an activation older than another plan's
event of the same patient is kept as not in force.

A session takes the plan that was active when the patient checked in. Its drugs are copied into
session_drugs as soon as both the session and the plan copy are here, in whichever order the
check-in and the plan's activation arrive; a plan retired or replaced later leaves them as they are.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import is_postgresql, keep_newest, new_id, row_of, rows_of
from clinic.unit_of_work import UnitOfWork
from sessions.db.tables import plans, rooms, session_drugs, sessions
from sessions.domain import care

# One advisory lock per patient (PostgreSQL): a check-in and the activation of the patient's plan,
# applied by two worker replicas at once, take it first, so the second to come sees what the first
# wrote and the session gets its drugs either way. (SQLite runs one write transaction at a time.)
_PATIENT_LOCK_SALT = "sessions.patient:"


def lock_patient(connection: Connection, patient_id: str) -> None:
    """Queue behind other work on this patient's plan copies and sessions until the transaction ends."""
    if is_postgresql(connection):
        key = sa.func.hashtextextended(sa.literal(_PATIENT_LOCK_SALT + patient_id), 0)
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


# --- rooms ---------------------------------------------------------------------------------------


def keep_room(uow: UnitOfWork, room_id: str, name: str, kind: str, active: bool, version: int) -> bool:
    """The room as scheduling last announced it (the highest room_version wins); True when written."""
    return keep_newest(uow.connection, rooms, {"id": room_id, "name": name, "kind": kind, "active": active, "version": version,
                                               "changed_at": uow.now}, key=("id",))


def room_seen_at_check_in(connection: Connection, room_id: str, name: str, now: datetime) -> None:
    """A room first heard of in a check-in (before any room.changed about it) is an infusion room in
    use: copied at version 0, which any room.changed replaces."""
    keep_newest(connection, rooms, {"id": room_id, "name": name, "kind": "infusion", "active": True, "version": 0,
                                    "changed_at": now}, key=("id",))


# --- plans ---------------------------------------------------------------------------------------


def keep_activated_plan(uow: UnitOfWork, plan_id: str, patient_id: str, infusion_minutes: int, drugs: list[dict],
                        version: int | None) -> None:
    """records activated a plan: keep it (by the patient's plan sequence, None read as 0) with its
    drugs, and give its drugs to the sessions that wait for them.

    An activation heard after a later plan event of the same patient (another plan's, at a higher
    sequence) is kept, drugs and all, but not as active: records keeps one active plan per patient,
    so by that later sequence this plan had been retired, whether or not its retirement is here yet."""
    connection = uow.connection
    lock_patient(connection, patient_id)
    sequence = version or 0
    in_force = not _later_plan_event_heard(connection, patient_id, plan_id, sequence)
    written = keep_newest(connection, plans, {"plan_id": plan_id, "patient_id": patient_id, "infusion_minutes": infusion_minutes,
                                              "drugs": drugs, "active": in_force, "version": sequence, "changed_at": uow.now},
                          key=("plan_id",))
    if not written:
        # A later event about this plan (its retirement) arrived first and left no drugs: the drugs
        # are the plan's whatever its state, so they are filled in; `active` stays as the later event said.
        connection.execute(plans.update().where(plans.c.plan_id == plan_id, plans.c.drugs.is_(None))
                           .values(drugs=drugs, infusion_minutes=infusion_minutes))
    elif in_force:
        # A session checked in while the patient had no plan known here takes the one activated now.
        connection.execute(sessions.update().where(sessions.c.patient_id == patient_id, sessions.c.plan_id.is_(None),
                                                   sessions.c.status.in_(care.OPEN)).values(plan_id=plan_id))
    _fill_waiting_sessions(connection, plan_id)


def _later_plan_event_heard(connection: Connection, patient_id: str, plan_id: str, sequence: int) -> bool:
    """Whether a copy of another of the patient's plans stands at a higher plan sequence than `sequence`."""
    return connection.execute(sa.select(plans.c.plan_id).where(
        plans.c.patient_id == patient_id, plans.c.plan_id != plan_id, plans.c.version > sequence).limit(1)).first() is not None


def keep_retired_plan(uow: UnitOfWork, plan_id: str, patient_id: str, version: int | None) -> None:
    """records retired a plan: it is no longer active. Its drugs stay (the sessions begun under it
    keep theirs, and the board shows that the plan changed)."""
    connection = uow.connection
    lock_patient(connection, patient_id)
    # Only these columns: on a stored plan the drugs and minutes an activation brought are kept.
    keep_newest(connection, plans, {"plan_id": plan_id, "patient_id": patient_id, "active": False, "version": version or 0,
                                    "changed_at": uow.now}, key=("plan_id",))
    _fill_waiting_sessions(connection, plan_id)


def plan_copy(connection: Connection, plan_id: str | None) -> dict | None:
    return row_of(connection, sa.select(plans).where(plans.c.plan_id == plan_id)) if plan_id else None


def active_plan_of(connection: Connection, patient_id: str) -> dict | None:
    """The patient's active plan copy (the newest, should two be marked active while events are under way)."""
    return row_of(connection, sa.select(plans).where(plans.c.patient_id == patient_id, plans.c.active.is_(True))
                  .order_by(plans.c.version.desc()).limit(1))


def copy_plan_drugs(connection: Connection, session: dict, plan: dict) -> None:
    """Give the session its copy of the plan's drugs, each with an id of its own, and the plan's
    planned minutes (never below the clinic's minimum)."""
    drugs = plan["drugs"] or []
    if drugs:
        connection.execute(session_drugs.insert(), [
            {"id": new_id(), "session_id": session["id"], "position": position, "name": drug["name"], "dose": drug["dose"],
             "unit": drug["unit"], "route": drug["route"], "purpose": drug["purpose"], "rate": drug.get("rate"),
             "max_per_24h": drug.get("max_per_24h")}
            for position, drug in enumerate(drugs)])
    minutes = care.planned_minutes(plan["infusion_minutes"], care.minutes_between(session["appointment_starts_at"],
                                                                                 session["appointment_ends_at"]))
    connection.execute(sessions.update().where(sessions.c.id == session["id"])
                       .values(plan_id=plan["plan_id"], plan_version=plan["version"], planned_minutes=minutes))


def _fill_waiting_sessions(connection: Connection, plan_id: str) -> None:
    """The open sessions checked in under this plan before its copy (with drugs) was here get its drugs now."""
    plan = plan_copy(connection, plan_id)
    if plan is None or plan["drugs"] is None:
        return
    waiting = rows_of(connection, sa.select(sessions).where(
        sessions.c.plan_id == plan_id, sessions.c.plan_version.is_(None), sessions.c.status.in_(care.OPEN)).with_for_update())
    for session in waiting:
        copy_plan_drugs(connection, session, plan)
