"""the PHI access audit: who read or changed which patient's appointments, and who changed rooms,
office hours and closures (clinic.audit)

Revision ID: 0004
"""

from alembic import op

from clinic.audit import create_audit_table

revision = "0004"
down_revision = "0003"


def upgrade():
    create_audit_table(op)


def downgrade():
    op.drop_table("audit_log")
