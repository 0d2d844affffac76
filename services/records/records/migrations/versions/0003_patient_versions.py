"""patients carry the versions their events are ordered by: contact_version and plan_sequence

Revision ID: 0003
Revises: 0002

Patients registered before this revision start at 0 for both: their earlier events carried no
version, which consumers read as 0, so the next change (1) replaces what they kept.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

COLUMNS = ("contact_version", "plan_sequence")


def upgrade():
    # ADD COLUMN with a constant default, no batch copy of the table: SQLite and PostgreSQL both fill
    # existing rows with the default, and patients is referenced by every other records table.
    for name in COLUMNS:
        op.add_column("patients", sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade():
    # SQLite has had DROP COLUMN since 3.35; neither column is indexed or referenced.
    for name in reversed(COLUMNS):
        op.drop_column("patients", name)
