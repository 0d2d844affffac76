"""patients.search_name unbounded: folding lengthens a name (ß is "ss", U+FDFA eighteen characters),
so a given name of 100 "ß" no longer overflows the 201 characters it had

Revision ID: 0005
Revises: 0004

On PostgreSQL, VARCHAR to TEXT changes the catalogue only (no table rewrite). SQLite keeps the
column as declared: it never enforced the length, and changing a declaration there means copying
patients, which every other records table references.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("patients", "search_name", type_=sa.Text(), existing_type=sa.String(201), existing_nullable=False)


def downgrade():
    # Refused by PostgreSQL while a folded name is longer than 201 characters: such a row would
    # otherwise be cut, and no longer found by the end of its name.
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("patients", "search_name", type_=sa.String(201), existing_type=sa.Text(), existing_nullable=False)
