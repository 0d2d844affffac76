"""Scheduling's tables.

The migrations (migrations/versions) are the schema of record; these Table objects describe the
same tables for queries, and tests/integration/scheduling/test_migrations.py holds the two equal.
On PostgreSQL two exclusion constraints (migration 0002) refuse a room or a patient held twice at
once; on SQLite every transaction is BEGIN IMMEDIATE (clinic.db), so the conditions written into a
change (booking_sql.book_if_free) or checked just before it (a reschedule's look) run alone and are
the rule.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from clinic.audit import audit_table
from clinic.db import UtcDateTime, messaging_tables
from scheduling.domain import HOLDING_STATUSES

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"

ROOM_CONSTRAINT = "appointments_room_not_double_booked"
PATIENT_CONSTRAINT = "appointments_patient_in_one_place"

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit_table(metadata)

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # 1 when added, one more at each change; scheduling.room.changed carries it as room_version, so that
    # sessions keeps the newest copy of each room (rooms older than it count as 1: migration 0007).
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.UniqueConstraint("name", name="uq_rooms_name"),
)
# "Infusion 1" and "infusion 1" are one room to the people booking it (migration 0006). The exact-case
# constraint above stays: this one implies it, and dropping it would copy the table on SQLite.
sa.Index("uq_rooms_name_any_case", sa.func.lower(rooms.c.name), unique=True)

# The weekly template, in the clinic's local wall-clock time; weekday 0 is Monday.
office_hours = sa.Table(
    "office_hours",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("weekday", sa.Integer(), nullable=False),
    sa.Column("opens", sa.Time(), nullable=False),
    sa.Column("closes", sa.Time(), nullable=False),
)

# Whole local dates the clinic is closed.
closures = sa.Table(
    "closures",
    metadata,
    sa.Column("day", sa.Date(), primary_key=True),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

# One row: bumped by every change to office hours, closures or a room (scheduling.db.calendar says why).
calendar_version = sa.Table(
    "calendar_version",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("version", sa.BigInteger(), nullable=False),
)

# Each patient's active treatment plan, copied from records' events. A row stays after the plan is
# retired (plan_id NULL): the patient is still known, for follow-up visits. `version` is the patient's
# plan sequence as records stamped it on the event the row was made from (0: an event without one);
# the copy only ever moves to a higher one (scheduling.db.plan_copies). changed_at is when this copy
# was last written here, for people; nothing is ordered by it.
plan_copies = sa.Table(
    "plan_copies",
    metadata,
    sa.Column("patient_id", sa.String(36), primary_key=True),
    sa.Column("plan_id", sa.String(36), nullable=True),
    sa.Column("infusion_minutes", sa.Integer(), nullable=True),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
)

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("patient_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("room_id", sa.String(36), sa.ForeignKey("rooms.id"), nullable=False),
    sa.Column("plan_id", sa.String(36), nullable=True),
    sa.Column("starts_at", UtcDateTime(), nullable=False),
    sa.Column("ends_at", UtcDateTime(), nullable=False),
    # The two holds (scheduling.domain): the room until the end plus the turnover gap (shown to staff
    # as room_free_at), the patient until the end.
    sa.Column("room_blocked_until", UtcDateTime(), nullable=False),
    sa.Column("patient_busy_until", UtcDateTime(), nullable=False),
    sa.Column("booked_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("checked_in_at", UtcDateTime(), nullable=True),
    # When the infusion session started, as sessions reported it (the appointment is then in_progress).
    sa.Column("started_at", UtcDateTime(), nullable=True),
    sa.Column("ended_at", UtcDateTime(), nullable=True),
    sa.Column("session_outcome", sa.String(20), nullable=True),
    sa.Column("cancelled_at", UtcDateTime(), nullable=True),
    sa.Column("cancel_reason", sa.String(500), nullable=True),
    sa.Column("no_show_at", UtcDateTime(), nullable=True),
    # Who did it: the staff member (their token's subject) beside each change's time. Empty where the
    # clinic's own software made the change (the automatic follow-up visit, a session's end) and on
    # appointments older than these columns. updated_by is whoever made the latest change.
    sa.Column("booked_by", sa.String(200), nullable=True),
    sa.Column("checked_in_by", sa.String(200), nullable=True),
    sa.Column("cancelled_by", sa.String(200), nullable=True),
    sa.Column("no_show_by", sa.String(200), nullable=True),
    sa.Column("updated_by", sa.String(200), nullable=True),
    # On a follow-up visit booked after an infusion: that infusion. Unique, so one infusion never
    # gets two automatic follow-ups, whatever arrives twice.
    sa.Column("follow_up_of", sa.String(36), nullable=True, unique=True),
    # 1 when booked, one more at each change; every scheduling.appointment.* event carries it, so that
    # consumers order what they hear about one appointment (a calendar file's SEQUENCE).
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
)
# A room's day and a patient's appointments, and a day across rooms. (On PostgreSQL the exclusion
# constraints of migration 0002 add a GiST index each.)
sa.Index("ix_appointments_room_starts_at", appointments.c.room_id, appointments.c.starts_at)
sa.Index("ix_appointments_patient_starts_at", appointments.c.patient_id, appointments.c.starts_at)
sa.Index("ix_appointments_starts_at", appointments.c.starts_at)

# An appointment that holds its room and its patient. The statuses are written into the SQL rather than
# bound: constants, and a statement that needs no expanding at each execution.
holding = appointments.c.status.in_([sa.literal_column(f"'{status}'") for status in HOLDING_STATUSES])
