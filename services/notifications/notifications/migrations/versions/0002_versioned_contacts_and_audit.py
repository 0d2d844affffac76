"""contact copies kept by the producer's version; the PHI access audit

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from clinic.audit import create_audit_table

revision = "0002"
down_revision = "0001"


def upgrade():
    # Copies made before versions existed get 0: any versioned event replaces them.
    with op.batch_alter_table("contacts") as contacts:
        contacts.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    create_audit_table(op)


def downgrade():
    op.drop_table("audit_log")
    with op.batch_alter_table("contacts") as contacts:
        contacts.drop_column("version")
