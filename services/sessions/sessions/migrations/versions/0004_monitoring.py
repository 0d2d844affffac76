"""monitoring: bedside monitors (devices), readings of vital signs, alerts, alert episodes

A monitor never has two readings at one time (uq_readings_device_time): a batch sent again stores
nothing twice. One alert per silence of a monitor (uq_alerts_silence) and one escalation per alert
(uq_alerts_escalation_of), whichever worker raises it. Each vital sign's column carries its LOINC code
in its comment.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

UNACKNOWLEDGED = sa.text("acknowledged_at IS NULL")


def upgrade():
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("room_id", sa.String(36), sa.ForeignKey("rooms.id", name="fk_devices_room"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
        sa.UniqueConstraint("token_hash", name="uq_devices_token_hash"),
    )
    op.create_index("ix_devices_room_id", "devices", ["room_id"])
    op.create_table(
        "readings",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_readings_session"), nullable=False),
        sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", name="fk_readings_device"), nullable=True),
        sa.Column("entered_by", sa.String(200), nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heart_rate", sa.Integer(), nullable=True, comment="LOINC 8867-4 heart rate, beats per minute"),
        sa.Column("systolic", sa.Integer(), nullable=True, comment="LOINC 8480-6 systolic blood pressure, mmHg"),
        sa.Column("diastolic", sa.Integer(), nullable=True, comment="LOINC 8462-4 diastolic blood pressure, mmHg"),
        sa.Column("respiratory_rate", sa.Integer(), nullable=True, comment="LOINC 9279-1 respiratory rate, breaths per minute"),
        sa.Column("spo2", sa.Integer(), nullable=True, comment="LOINC 2708-6 oxygen saturation (SpO2), percent"),
        sa.Column("on_oxygen", sa.Boolean(), nullable=True, comment="supplemental oxygen (true) or room air (false)"),
        sa.Column("temperature", sa.Numeric(4, 1), nullable=True, comment="LOINC 8310-5 body temperature, degrees Celsius"),
        sa.Column("consciousness", sa.String(20), nullable=True, comment="ACVPU: alert, new_confusion, voice, pain, unresponsive"),
        sa.Column("news2_total", sa.Integer(), nullable=True),
        sa.Column("news2_points", sa.JSON(), nullable=True),
        sa.Column("news2_complete", sa.Boolean(), nullable=True),
        sa.Column("news2_filled_in", sa.JSON(), nullable=True),
        sa.Column("alert_level", sa.String(20), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_by", sa.String(200), nullable=True),
        sa.Column("void_reason", sa.String(500), nullable=True),
        sa.UniqueConstraint("device_id", "measured_at", name="uq_readings_device_time"),
        sa.CheckConstraint("device_id IS NOT NULL OR entered_by IS NOT NULL", name="ck_readings_source"),
    )
    op.create_index("ix_readings_session_measured", "readings", ["session_id", "measured_at"])
    op.create_index("ix_readings_session_received", "readings", ["session_id", "received_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_alerts_session"), nullable=False),
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column("room_name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("news2_score", sa.Integer(), nullable=True),
        sa.Column("scored", sa.JSON(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reading_id", sa.String(36), sa.ForeignKey("readings.id", name="fk_alerts_reading"), nullable=True),
        sa.Column("silent_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalation", sa.Boolean(), nullable=False),
        sa.Column("escalation_of", sa.String(36), sa.ForeignKey("alerts.id", name="fk_alerts_escalation_of"), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.UniqueConstraint("reading_id", name="uq_alerts_reading"),
        sa.UniqueConstraint("session_id", "silent_since", name="uq_alerts_silence"),
        sa.UniqueConstraint("escalation_of", name="uq_alerts_escalation_of"),
        sa.CheckConstraint("kind IN ('news2', 'monitor_silent')", name="ck_alerts_kind"),
        sa.CheckConstraint("level IN ('urgent', 'emergency')", name="ck_alerts_level"),
    )
    op.create_index("ix_alerts_session_raised", "alerts", ["session_id", "raised_at"])
    op.create_index("ix_alerts_unacknowledged", "alerts", ["raised_at"], postgresql_where=UNACKNOWLEDGED, sqlite_where=UNACKNOWLEDGED)
    op.create_table(
        "alert_episodes",
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_alert_episodes_session"), primary_key=True),
        sa.Column("level", sa.String(20), nullable=True),
        sa.Column("calm_readings", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("alert_episodes")
    op.drop_index("ix_alerts_unacknowledged", table_name="alerts")
    op.drop_index("ix_alerts_session_raised", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_readings_session_received", table_name="readings")
    op.drop_index("ix_readings_session_measured", table_name="readings")
    op.drop_table("readings")
    op.drop_index("ix_devices_room_id", table_name="devices")
    op.drop_table("devices")
