"""versions: an appointment's (1 when booked, one more at each change) and a plan copy's (the
patient's plan sequence from records' events)

Appointments made before this revision count as version 1. Plan copies made before it count as 0:
any event that carries a plan sequence replaces them, and none that does not.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade():
    op.add_column("appointments", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("plan_copies", sa.Column("version", sa.Integer(), nullable=False, server_default="0"))


def downgrade():
    # Batches: SQLite drops columns by copying the table.
    with op.batch_alter_table("plan_copies") as table:
        table.drop_column("version")
    with op.batch_alter_table("appointments") as table:
        table.drop_column("version")
