"""who booked, checked in, cancelled or marked a no-show, and who changed an appointment last

Staff members by their token's subject. Appointments made before this revision keep the columns
empty: who made them was not recorded then.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

COLUMNS = ("booked_by", "checked_in_by", "cancelled_by", "no_show_by", "updated_by")


def upgrade():
    for name in COLUMNS:
        op.add_column("appointments", sa.Column(name, sa.String(200), nullable=True))


def downgrade():
    # A batch: SQLite drops columns by copying the table.
    with op.batch_alter_table("appointments") as table:
        for name in reversed(COLUMNS):
            table.drop_column(name)
