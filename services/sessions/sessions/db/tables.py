"""Sessions' core tables: the copies kept from other services' events (rooms, plans), the sessions
and the plan's drugs each session was given, and the messaging and audit tables.

The migrations (migrations/versions) are the schema of record; these Table objects describe the same
tables for queries, and tests/integration/sessions/test_migrations.py holds the two equal.

On PostgreSQL the partial unique index `sessions_one_started_per_room` refuses a second started
session in a room, whoever starts it; on SQLite every write transaction is BEGIN IMMEDIATE (clinic.db)
and the same index refuses it too.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.audit import audit_table
from clinic.db import UtcDateTime, messaging_tables, row_of

ONE_STARTED_PER_ROOM = "sessions_one_started_per_room"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit_table(metadata)

# The rooms, copied from scheduling.room.changed and kept by the room's version (clinic.db.keep_newest).
# A room first heard of in a check-in, before any room.changed about it, is copied at version 0 from
# the check-in (an infusion room in use), which the first room.changed replaces.
rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
)

# Treatment plans, copied from records.treatment_plan.activated / retired, one row per plan, kept by the
# patient's plan sequence as records stamped it (0: an event without one). A retirement only clears
# `active`: the drugs and minutes stay, as an activation brought them (even one that arrives after the
# retirement, sessions.services.copies fills them in then). An activation heard after another plan's event
# of the same patient at a higher sequence is stored not active (it had been replaced by then).
# changed_at is for people; nothing is ordered by it.
plans = sa.Table(
    "plans",
    metadata,
    sa.Column("plan_id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), nullable=False),
    sa.Column("infusion_minutes", sa.Integer(), nullable=True),
    sa.Column("drugs", sa.JSON(), nullable=True),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
)
sa.Index("ix_plans_patient_id", plans.c.patient_id)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # One session per appointment, whatever arrives twice.
    sa.Column("appointment_id", sa.String(36), nullable=False, unique=True),
    sa.Column("patient_id", sa.String(36), nullable=False),
    sa.Column("room_id", sa.String(36), nullable=False),
    # The room's name at check-in, for session.completed when no room copy exists.
    sa.Column("room_name", sa.String(100), nullable=False),
    # The plan in force at check-in; null until the patient's plan copy is known.
    sa.Column("plan_id", sa.String(36), nullable=True),
    # The plan copy's version the session's drugs were copied from; null until they are.
    sa.Column("plan_version", sa.Integer(), nullable=True),
    sa.Column("planned_minutes", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    # 1: SpO2 scored on NEWS2 scale 1; 2: the hypercapnic target range (88-92 %), set by a neurologist.
    sa.Column("spo2_scale", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("appointment_starts_at", UtcDateTime(), nullable=False),
    sa.Column("appointment_ends_at", UtcDateTime(), nullable=False),
    sa.Column("checked_in_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("started_by", sa.String(200), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("ended_by", sa.String(200), nullable=True),
    # The discharge: the escort who takes the patient home (PHI, kept here only), the instructions
    # confirmed as given, and the neurologist's reason for a discharge before the planned minutes.
    sa.Column("escort_name", sa.String(200), nullable=True),
    sa.Column("escort_relationship", sa.String(100), nullable=True),
    sa.Column("escort_phone", sa.String(50), nullable=True),
    sa.Column("escort_adult_present", sa.Boolean(), nullable=True),
    sa.Column("told_to_rest_today", sa.Boolean(), nullable=True),
    sa.Column("told_to_call_if_problems", sa.Boolean(), nullable=True),
    sa.Column("told_of_return_visit", sa.Boolean(), nullable=True),
    sa.Column("early_discharge_reason", sa.String(500), nullable=True),
    # An abort: one of clinic.events.ABORT_REASONS, and the free text that stays in sessions.
    sa.Column("abort_reason", sa.String(40), nullable=True),
    sa.Column("abort_note", sa.String(1000), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # 1 when opened, one more at each change.
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.CheckConstraint("status IN ('waiting', 'started', 'completed', 'aborted', 'cancelled')", name="ck_sessions_status"),
    sa.CheckConstraint("spo2_scale IN (1, 2)", name="ck_sessions_spo2_scale"),
)
sa.Index(ONE_STARTED_PER_ROOM, sessions.c.room_id, unique=True,
         postgresql_where=sessions.c.status == "started", sqlite_where=sessions.c.status == "started")
sa.Index("ix_sessions_status_room_id", sessions.c.status, sessions.c.room_id)
sa.Index("ix_sessions_checked_in_at", sessions.c.checked_in_at)
sa.Index("ix_sessions_patient_id", sessions.c.patient_id)

# The session's copy of its plan's drugs, each with the id a nurse names when giving it.
session_drugs = sa.Table(
    "session_drugs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_session_drugs_session"), nullable=False),
    # The drug's place in the plan, so the list reads as the plan does.
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("dose", sa.Numeric(12, 4), nullable=False),
    sa.Column("unit", sa.String(20), nullable=False),
    sa.Column("route", sa.String(10), nullable=False),
    sa.Column("purpose", sa.String(40), nullable=False),
    sa.Column("rate", sa.String(40), nullable=True),
    sa.Column("max_per_24h", sa.Numeric(12, 4), nullable=True),
    sa.UniqueConstraint("session_id", "position", name="uq_session_drugs_session_position"),
)

# Infusions cancelled before sessions heard of their check-in (the cancellation overtook it): a
# check-in arriving later opens no session. Sessions cancelled while waiting are in sessions itself.
cancelled_appointments = sa.Table(
    "cancelled_appointments",
    metadata,
    sa.Column("appointment_id", sa.String(36), primary_key=True),
    sa.Column("cancelled_at", UtcDateTime(), nullable=False),
)


# --- the reads every part of sessions starts a change with ----------------------------------------


def locked_session(connection: Connection, session_id: str) -> dict | None:
    """The session, read for a change to it: locked until the transaction ends on PostgreSQL (FOR
    UPDATE), so changes to one session queue behind each other; on SQLite every write transaction is
    BEGIN IMMEDIATE and runs alone already. None when there is no such session."""
    return row_of(connection, sa.select(sessions).where(sessions.c.id == session_id).with_for_update())


def started_session_in_room(connection: Connection, room_id: str) -> dict | None:
    """The started session in the room (there is at most one), or None."""
    return row_of(connection, sa.select(sessions).where(sessions.c.room_id == room_id, sessions.c.status == "started"))
