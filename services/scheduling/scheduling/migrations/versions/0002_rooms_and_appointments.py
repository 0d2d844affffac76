"""rooms, office hours, closures, plan copies, appointments

On PostgreSQL two exclusion constraints make double booking impossible, whatever the
application does: a room is never held twice at once (its hold runs to the end plus the
turnover gap), a patient is never in two appointments at once. Only booked, checked-in and
completed appointments hold anything (scheduling.domain.HOLDING_STATUSES).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

HOLDING = "status IN ('booked', 'checked_in', 'completed')"


def upgrade():
    op.create_table(
        "rooms",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_rooms_name"),
        sa.CheckConstraint("kind IN ('infusion', 'exam')", name="ck_rooms_kind"),
    )
    op.create_table(
        "office_hours",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("opens", sa.Time(), nullable=False),
        sa.Column("closes", sa.Time(), nullable=False),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name="ck_office_hours_weekday"),
        sa.CheckConstraint("opens < closes", name="ck_office_hours_opens_before_closing"),
    )
    op.create_table(
        "closures",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # One row: bumped by every change to office hours, closures or a room's use (scheduling.db explains why).
    calendar_version = op.create_table(
        "calendar_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_calendar_version_one_row"),
    )
    op.bulk_insert(calendar_version, [{"id": 1, "version": 1}])
    op.create_table(
        "plan_copies",
        sa.Column("patient_id", sa.String(36), primary_key=True),
        sa.Column("plan_id", sa.String(36), nullable=True),
        sa.Column("infusion_minutes", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "appointments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("room_id", sa.String(36), sa.ForeignKey("rooms.id", name="fk_appointments_room"), nullable=False),
        sa.Column("plan_id", sa.String(36), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("room_blocked_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patient_busy_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("session_outcome", sa.String(20), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.String(500), nullable=True),
        sa.Column("no_show_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("follow_up_of", sa.String(36), nullable=True),
        sa.UniqueConstraint("follow_up_of", name="uq_appointments_follow_up_of"),
        sa.CheckConstraint("kind IN ('infusion', 'follow_up')", name="ck_appointments_kind"),
        sa.CheckConstraint("status IN ('booked', 'checked_in', 'completed', 'cancelled', 'no_show')", name="ck_appointments_status"),
        sa.CheckConstraint("starts_at < ends_at", name="ck_appointments_starts_before_it_ends"),
        sa.CheckConstraint("room_blocked_until >= starts_at AND patient_busy_until >= starts_at",
                           name="ck_appointments_holds_not_inverted"),
    )
    op.create_index("ix_appointments_room_starts_at", "appointments", ["room_id", "starts_at"])
    op.create_index("ix_appointments_patient_starts_at", "appointments", ["patient_id", "starts_at"])
    op.create_index("ix_appointments_starts_at", "appointments", ["starts_at"])

    if op.get_bind().dialect.name == "postgresql":
        # btree_gist gives GiST an equality operator for room and patient ids, so one constraint can
        # say "same room AND overlapping time". It is a trusted extension: the database owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE appointments ADD CONSTRAINT appointments_room_not_double_booked "
            "EXCLUDE USING gist (room_id WITH =, tstzrange(starts_at, room_blocked_until, '[)') WITH &&) "
            f"WHERE ({HOLDING})"
        )
        op.execute(
            "ALTER TABLE appointments ADD CONSTRAINT appointments_patient_in_one_place "
            "EXCLUDE USING gist (patient_id WITH =, tstzrange(starts_at, patient_busy_until, '[)') WITH &&) "
            f"WHERE ({HOLDING})"
        )


def downgrade():
    op.drop_table("appointments")
    op.drop_table("plan_copies")
    op.drop_table("calendar_version")
    op.drop_table("closures")
    op.drop_table("office_hours")
    op.drop_table("rooms")
