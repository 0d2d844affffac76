"""the session lifecycle: room and plan copies, sessions, each session's copy of its plan's drugs

A room has at most one started session: a partial unique index on sessions(room_id) where the status
is 'started', on PostgreSQL and on SQLite alike, refuses the second start whoever sends it.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

STARTED = sa.text("status = 'started'")


def upgrade():
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "plans",
        sa.Column("plan_id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("infusion_minutes", sa.Integer(), nullable=True),
        sa.Column("drugs", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_plans_patient_id", "plans", ["patient_id"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("appointment_id", sa.String(36), nullable=False, unique=True),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column("room_name", sa.String(100), nullable=False),
        sa.Column("plan_id", sa.String(36), nullable=True),
        sa.Column("plan_version", sa.Integer(), nullable=True),
        sa.Column("planned_minutes", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("spo2_scale", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("appointment_starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appointment_ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_in_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_by", sa.String(200), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(200), nullable=True),
        sa.Column("escort_name", sa.String(200), nullable=True),
        sa.Column("escort_relationship", sa.String(100), nullable=True),
        sa.Column("escort_phone", sa.String(50), nullable=True),
        sa.Column("escort_adult_present", sa.Boolean(), nullable=True),
        sa.Column("told_to_rest_today", sa.Boolean(), nullable=True),
        sa.Column("told_to_call_if_problems", sa.Boolean(), nullable=True),
        sa.Column("told_of_return_visit", sa.Boolean(), nullable=True),
        sa.Column("early_discharge_reason", sa.String(500), nullable=True),
        sa.Column("abort_reason", sa.String(40), nullable=True),
        sa.Column("abort_note", sa.String(1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.CheckConstraint("status IN ('waiting', 'started', 'completed', 'aborted', 'cancelled')", name="ck_sessions_status"),
        sa.CheckConstraint("spo2_scale IN (1, 2)", name="ck_sessions_spo2_scale"),
    )
    op.create_index("sessions_one_started_per_room", "sessions", ["room_id"], unique=True,
                    postgresql_where=STARTED, sqlite_where=STARTED)
    op.create_index("ix_sessions_status_room_id", "sessions", ["status", "room_id"])
    op.create_index("ix_sessions_checked_in_at", "sessions", ["checked_in_at"])
    op.create_index("ix_sessions_patient_id", "sessions", ["patient_id"])
    op.create_table(
        "session_drugs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_session_drugs_session"), nullable=False),
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


def downgrade():
    op.drop_table("session_drugs")
    op.drop_index("ix_sessions_patient_id", table_name="sessions")
    op.drop_index("ix_sessions_checked_in_at", table_name="sessions")
    op.drop_index("ix_sessions_status_room_id", table_name="sessions")
    op.drop_index("sessions_one_started_per_room", table_name="sessions")
    op.drop_table("sessions")
    op.drop_index("ix_plans_patient_id", table_name="plans")
    op.drop_table("plans")
    op.drop_table("rooms")
