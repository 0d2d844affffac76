"""patients.family_search: the family name folded (no case, no accents), which a patient search must
give whole (issue 14: two letters of a name no longer list patients)

Revision ID: 0004
Revises: 0003

The column is NULL for a row nobody has folded yet: the records pods older than it keep registering
patients (and correcting family names) during a rolling deploy, without writing it. The records
worker's job folds those rows (records.services.patients.refold_family_names); this migration folds
the rows there are when it runs, so that a search finds them at once.
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
    # Nullable without a default: no batch copy of the table (patients is referenced by every other
    # records table), and a row an older pod writes stays recognisably unfolded. Unbounded text:
    # folding lengthens a name (ß is "ss", U+FDFA eighteen characters).
    op.add_column("patients", sa.Column("family_search", sa.Text(), nullable=True))
    patients = sa.table("patients", sa.column("id", sa.String), sa.column("family_name", sa.String),
                        sa.column("family_search", sa.Text))
    connection = op.get_bind()
    rows = connection.execute(sa.select(patients.c.id, patients.c.family_name)).all()
    if rows:
        # Only while the family name is still the one folded: a row changed since is the job's.
        connection.execute(
            patients.update().where(patients.c.id == sa.bindparam("row_id"), patients.c.family_name == sa.bindparam("name"))
            .values(family_search=sa.bindparam("folded")),
            [{"row_id": row.id, "name": row.family_name, "folded": folded(row.family_name)} for row in rows])
    op.create_index("ix_patients_family_search", "patients", ["family_search", "birth_date"])
    # The worker's job looks every minute for rows changed lately (refold_family_names): an index,
    # not a scan of every patient.
    op.create_index("ix_patients_updated_at", "patients", ["updated_at"])


def downgrade():
    op.drop_index("ix_patients_updated_at", "patients")
    op.drop_index("ix_patients_family_search", "patients")
    op.drop_column("patients", "family_search")
