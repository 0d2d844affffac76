"""patients.family_search: the family name folded (no case, no accents), which a patient search must
give whole (issue 14: two letters of a name no longer list patients)

Revision ID: 0004
Revises: 0003
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def folded(text: str) -> str:
    """records.domain's folding as it was when this migration was written: a migration must not change
    what it does when the domain code changes later."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(char for char in decomposed if not unicodedata.combining(char)).split())


def upgrade():
    # NOT NULL with a constant default, no batch copy of the table (patients is referenced by every
    # other records table); every row is then given its own value.
    op.add_column("patients", sa.Column("family_search", sa.String(100), nullable=False, server_default=""))
    patients = sa.table("patients", sa.column("id", sa.String), sa.column("family_name", sa.String),
                        sa.column("family_search", sa.String))
    connection = op.get_bind()
    for row in connection.execute(sa.select(patients.c.id, patients.c.family_name)).all():
        connection.execute(patients.update().where(patients.c.id == row.id).values(family_search=folded(row.family_name)))
    op.create_index("ix_patients_family_search", "patients", ["family_search", "birth_date"])


def downgrade():
    op.drop_index("ix_patients_family_search", "patients")
    op.drop_column("patients", "family_search")
