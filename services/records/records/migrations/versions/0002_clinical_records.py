"""diagnoses, treatment plans, headache diary, encounters, PHI audit; patients searchable by name

Revision ID: 0002
Revises: 0001
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

ACTIVE = sa.text("status = 'active'")


def search_name(given_name: str, family_name: str) -> str:
    """records.domain.search_name as it was when this migration was written: a migration must not
    change what it does when the domain code changes later."""
    decomposed = unicodedata.normalize("NFKD", f"{given_name} {family_name}".casefold())
    return " ".join("".join(char for char in decomposed if not unicodedata.combining(char)).split())


def upgrade():
    op.add_column("patients", sa.Column("search_name", sa.String(201), nullable=True))
    patients = sa.table("patients", sa.column("id", sa.String), sa.column("given_name", sa.String),
                        sa.column("family_name", sa.String), sa.column("search_name", sa.String))
    connection = op.get_bind()
    for row in connection.execute(sa.select(patients.c.id, patients.c.given_name, patients.c.family_name)).all():
        connection.execute(patients.update().where(patients.c.id == row.id)
                           .values(search_name=search_name(row.given_name, row.family_name)))
    with op.batch_alter_table("patients") as batch:
        batch.alter_column("search_name", existing_type=sa.String(201), nullable=False)
    op.create_index("ix_patients_birth_date", "patients", ["birth_date"])

    op.create_table(
        "diagnoses",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("code", sa.String(8), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("onset_date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("uq_diagnoses_active_code", "diagnoses", ["patient_id", "code"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)

    op.create_table(
        "treatment_plans",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("infusion_minutes", sa.Integer(), nullable=False),
        sa.Column("drugs", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_by", sa.String(200), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_by", sa.String(200), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_by_plan_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_treatment_plans_patient", "treatment_plans", ["patient_id"])
    op.create_index("uq_treatment_plans_one_active", "treatment_plans", ["patient_id"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)

    op.create_table(
        "diary_entries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("entry_date", sa.Date(), nullable=False),
        sa.Column("headache", sa.Boolean(), nullable=False),
        sa.Column("worst_intensity", sa.Integer(), nullable=True),
        sa.Column("acute_medication", sa.JSON(), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("patient_id", "entry_date", name="uq_diary_entries_patient_date"),
    )

    op.create_table(
        "encounters",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), nullable=False, unique=True),
        sa.Column("appointment_id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), sa.ForeignKey("patients.id"), nullable=False),
        sa.Column("room_id", sa.String(36), nullable=False),
        sa.Column("room_name", sa.String(100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drugs_given", sa.JSON(), nullable=False),
        sa.Column("pain_before", sa.Integer(), nullable=True),
        sa.Column("pain_after", sa.Integer(), nullable=True),
        sa.Column("highest_news2", sa.Integer(), nullable=True),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_encounters_patient_started", "encounters", ["patient_id", "started_at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("resource", sa.String(40), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=True),
        sa.Column("patient_id", sa.String(36), nullable=True),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("error_code", sa.String(40), nullable=True),
        sa.Column("correlation_id", sa.String(100), nullable=True),
    )
    op.create_index("ix_audit_log_patient", "audit_log", ["patient_id", "occurred_at"])
    op.create_index("ix_audit_log_occurred", "audit_log", ["occurred_at"])


def downgrade():
    op.drop_table("audit_log")
    op.drop_table("encounters")
    op.drop_table("diary_entries")
    op.drop_table("treatment_plans")
    op.drop_table("diagnoses")
    op.drop_index("ix_patients_birth_date", "patients")
    with op.batch_alter_table("patients") as batch:
        batch.drop_column("search_name")
