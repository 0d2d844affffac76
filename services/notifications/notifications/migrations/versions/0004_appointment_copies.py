"""the appointment copy, kept by scheduling's appointment version (for reminders)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade():
    op.create_table(
        "appointments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=True),
        sa.Column("room_name", sa.String(100), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_appointments_status_starts", "appointments", ["status", "starts_at"])


def downgrade():
    op.drop_index("ix_appointments_status_starts", table_name="appointments")
    op.drop_table("appointments")
