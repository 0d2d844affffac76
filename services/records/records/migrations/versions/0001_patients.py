"""patients, outbox and inbox

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
        "patients",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("medical_record_number", sa.String(12), nullable=False, unique=True),
        sa.Column("given_name", sa.String(100), nullable=False),
        sa.Column("family_name", sa.String(100), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("sex", sa.String(10), nullable=False),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("preferred_contact", sa.String(10), nullable=False),
        sa.Column("email_opt_out", sa.Boolean(), nullable=False),
        sa.Column("identity_key", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_patients_family_name", "patients", ["family_name"])


def downgrade():
    op.drop_table("patients")
    op.drop_table("inbox")
    op.drop_table("outbox")
