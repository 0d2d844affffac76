"""room names unique whatever their case: "Infusion 1" and "infusion 1" are one room to the people booking it

A unique index on lower(name), on PostgreSQL and SQLite alike. Rooms whose names differ only in case
would make it fail: they are named first, for an admin to rename one of each pair.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade():
    clashes = op.get_bind().execute(sa.text(
        "SELECT lower(name) FROM rooms GROUP BY lower(name) HAVING count(*) > 1 ORDER BY 1")).scalars().all()
    if clashes:
        raise RuntimeError("rooms whose names differ only in case, to be renamed before this migration: " + ", ".join(clashes))
    op.create_index("uq_rooms_name_any_case", "rooms", [sa.text("lower(name)")], unique=True)


def downgrade():
    op.drop_index("uq_rooms_name_any_case", table_name="rooms")
