"""contact copies, outbox and inbox

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from clinic.migrations import create_messaging_tables

revision = "0001"
down_revision = None


def upgrade():
    create_messaging_tables(op)
    op.create_table(
        "contacts",
        sa.Column("patient_id", sa.String(36), primary_key=True),
        sa.Column("given_name", sa.String(100), nullable=False),
        sa.Column("family_name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("preferred_contact", sa.String(10), nullable=False),
        sa.Column("email_opt_out", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade():
    op.drop_table("contacts")
    op.drop_table("inbox")
    op.drop_table("outbox")
