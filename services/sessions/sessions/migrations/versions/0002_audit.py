"""the PHI access audit

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from clinic.audit import create_audit_table

revision = "0002"
down_revision = "0001"


def upgrade():
    create_audit_table(op)


def downgrade():
    op.drop_table("audit_log")
