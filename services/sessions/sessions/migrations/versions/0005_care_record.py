"""the care record: medication administrations, medication ledgers, pain scores, visitors

An administration counted against a 24-hour maximum first locks its patient's row of
medication_ledgers, so administrations racing past the maximum are added up one at a time.

One visitor at a time: a partial unique index on visitors(session_id) where left_at is null, on
PostgreSQL and on SQLite alike, refuses a second present visitor whoever sends it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

PRESENT = sa.text("left_at IS NULL")


def upgrade():
    op.create_table(
        "medications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_medications_session"), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("session_drug_id", sa.String(36), sa.ForeignKey("session_drugs.id", name="fk_medications_session_drug"),
                  nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("drug_key", sa.String(200), nullable=False),
        sa.Column("dose", sa.Numeric(12, 4), nullable=False),
        sa.Column("unit", sa.String(20), nullable=False),
        sa.Column("route", sa.String(10), nullable=False),
        sa.Column("rate", sa.String(40), nullable=True),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("given_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_by", sa.String(200), nullable=True),
        sa.Column("void_reason", sa.String(500), nullable=True),
    )
    op.create_index("ix_medications_session_given_at", "medications", ["session_id", "given_at"])
    op.create_index("ix_medications_patient_drug_given_at", "medications", ["patient_id", "drug_key", "given_at"])
    op.create_table(
        "medication_ledgers",
        sa.Column("patient_id", sa.String(36), primary_key=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "pain_scores",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_pain_scores_session"), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False, comment="pain severity 0-10, LOINC 72514-3"),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score BETWEEN 0 AND 10", name="ck_pain_scores_score"),
    )
    op.create_index("ix_pain_scores_session_measured_at", "pain_scores", ["session_id", "measured_at"])
    op.create_table(
        "visitors",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_visitors_session"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("relationship", sa.String(100), nullable=False),
        sa.Column("adult_confirmed", sa.Boolean(), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("arrived_by", sa.String(200), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("left_by", sa.String(200), nullable=True),
    )
    op.create_index("visitors_one_present_per_session", "visitors", ["session_id"], unique=True,
                    postgresql_where=PRESENT, sqlite_where=PRESENT)
    op.create_index("ix_visitors_session_arrived_at", "visitors", ["session_id", "arrived_at"])


def downgrade():
    op.drop_index("ix_visitors_session_arrived_at", table_name="visitors")
    op.drop_index("visitors_one_present_per_session", table_name="visitors")
    op.drop_table("visitors")
    op.drop_index("ix_pain_scores_session_measured_at", table_name="pain_scores")
    op.drop_table("pain_scores")
    op.drop_table("medication_ledgers")
    op.drop_index("ix_medications_patient_drug_given_at", table_name="medications")
    op.drop_index("ix_medications_session_given_at", table_name="medications")
    op.drop_table("medications")
