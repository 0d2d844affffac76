"""the mail log: every message notifications sends or decided not to send

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=True),
        sa.Column("appointment_id", sa.String(36), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("preferred_contact", sa.String(10), nullable=True),
        sa.UniqueConstraint("event_id", "kind", "recipient", name="uq_messages_event_kind_recipient"),
    )
    op.create_index("ix_messages_due", "messages", ["status", "next_attempt_at"])
    op.create_index("ix_messages_patient", "messages", ["patient_id", "created_at"])
    op.create_index("ix_messages_created", "messages", ["created_at"])


def downgrade():
    op.drop_index("ix_messages_created", table_name="messages")
    op.drop_index("ix_messages_patient", table_name="messages")
    op.drop_index("ix_messages_due", table_name="messages")
    op.drop_table("messages")
