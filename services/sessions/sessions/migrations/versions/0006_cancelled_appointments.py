"""appointments cancelled before their check-in was heard of

A cancellation can overtake its own check-in (a redelivered or retried event): sessions keeps the
appointment's id, and the late check-in then opens no session.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade():
    op.create_table(
        "cancelled_appointments",
        sa.Column("appointment_id", sa.String(36), primary_key=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("cancelled_appointments")
