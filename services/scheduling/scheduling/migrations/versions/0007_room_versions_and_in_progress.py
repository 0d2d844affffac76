"""room versions, announced to sessions; appointments in progress while their infusion session runs

Rooms get a version (1 when added, one more at each change), which scheduling.room.changed carries
so that sessions keeps the newest copy of each room. Rooms made before this revision count as 1, and
each is announced once, here: a scheduling.room.changed row per room goes into the outbox in the
migration's own transaction, and the relay publishes it like any other. Sessions thus learns the
rooms that existed before it listened, with no step for anyone to remember. The event is spelled out
below as the outbox wrote it on the day this was written (clinic.outbox.outbox_row), not built by
that code: a migration must keep writing what it wrote then.

Appointments get the status in_progress (sessions reported that the infusion session started) and
the time it started. An in-progress appointment holds its room and its patient as a checked-in one
does, so the status check and, on PostgreSQL, the two exclusion constraints of 0002 now name it.

Revision ID: 0007
"""

import json
import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

STATUSES_BEFORE = "status IN ('booked', 'checked_in', 'completed', 'cancelled', 'no_show')"
STATUSES = "status IN ('booked', 'checked_in', 'in_progress', 'completed', 'cancelled', 'no_show')"
HOLDING_BEFORE = "status IN ('booked', 'checked_in', 'completed')"
HOLDING = "status IN ('booked', 'checked_in', 'in_progress', 'completed')"
EXCLUSIONS = {
    "appointments_room_not_double_booked": "room_id WITH =, tstzrange(starts_at, room_blocked_until, '[)') WITH &&",
    "appointments_patient_in_one_place": "patient_id WITH =, tstzrange(starts_at, patient_busy_until, '[)') WITH &&",
}


def upgrade():
    op.add_column("rooms", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.add_column("appointments", sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    if _on_postgresql():
        _postgresql_statuses(STATUSES, HOLDING)
    else:
        with _sqlite_copy_of_appointments() as table:
            table.drop_constraint("ck_appointments_status", type_="check")
            table.create_check_constraint("ck_appointments_status", sa.text(STATUSES))
    _announce_rooms()


def downgrade():
    # Before this revision an appointment whose session had started was still checked in.
    op.execute("UPDATE appointments SET status = 'checked_in' WHERE status = 'in_progress'")
    if _on_postgresql():
        _postgresql_statuses(STATUSES_BEFORE, HOLDING_BEFORE)
        op.drop_column("appointments", "started_at")
        op.drop_column("rooms", "version")
        return
    with _sqlite_copy_of_appointments() as table:
        table.drop_constraint("ck_appointments_status", type_="check")
        table.create_check_constraint("ck_appointments_status", sa.text(STATUSES_BEFORE))
        table.drop_column("started_at")
    # Not a copy of rooms: appointments refer to it, and the copy would lose the index on lower(name),
    # which SQLite's reflection cannot see. SQLite (3.35 and later) drops a column in place.
    op.drop_column("rooms", "version")


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _postgresql_statuses(statuses: str, holding: str) -> None:
    """The status check allows `statuses`; the exclusion constraints hold the appointments in `holding`."""
    op.drop_constraint("ck_appointments_status", "appointments", type_="check")
    op.create_check_constraint("ck_appointments_status", "appointments", sa.text(statuses))
    for name, ranges in EXCLUSIONS.items():
        op.execute(f"ALTER TABLE appointments DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE appointments ADD CONSTRAINT {name} EXCLUDE USING gist ({ranges}) WHERE ({holding})")


def _sqlite_copy_of_appointments():
    """SQLite changes a check constraint by copying the table: a batch that reflects the appointments
    (not the rooms their foreign key names, which stay as they are)."""
    return op.batch_alter_table("appointments", recreate="always", reflect_kwargs={"resolve_fks": False})


def _announce_rooms() -> None:
    """One scheduling.room.changed (version 1 of the event) per existing room, at room version 1, in the outbox."""
    connection = op.get_bind()
    rooms = connection.execute(sa.text("SELECT id, name, kind, active FROM rooms ORDER BY name")).all()
    now = datetime.now(timezone.utc)
    outbox = sa.table("outbox", sa.column("event_id"), sa.column("event_type"), sa.column("body"),
                      sa.column("created_at", sa.DateTime(timezone=True)), sa.column("attempts"))
    rows = []
    for room in rooms:
        event_id = str(uuid.uuid4())
        body = {
            "id": event_id,
            "type": "scheduling.room.changed",
            "version": 1,
            "occurred_at": now.isoformat(),
            "producer": "scheduling",
            "correlation_id": None,
            "data": {"room_id": room.id, "name": room.name, "kind": room.kind, "active": bool(room.active), "room_version": 1},
        }
        rows.append({"event_id": event_id, "event_type": "scheduling.room.changed", "body": json.dumps(body, separators=(",", ":")),
                     "created_at": now, "attempts": 0})
    if rows:
        op.bulk_insert(outbox, rows)
