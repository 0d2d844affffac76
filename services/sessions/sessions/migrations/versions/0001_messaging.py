"""outbox and inbox

Revision ID: 0001
"""

from alembic import op

from clinic.migrations import create_messaging_tables

revision = "0001"
down_revision = None


def upgrade():
    create_messaging_tables(op)


def downgrade():
    op.drop_table("inbox")
    op.drop_table("outbox")
