"""The booking hot path on PostgreSQL stays two statements: what the booking needs to know (with its
locks), then the appointment, its event and its audit row written together (scheduling.db.booking_sql).
A third round trip per booking would cost every desk its share of the clinic's booking rate."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.integration.scheduling.support import MONDAY, local, migrated_database


@pytest.fixture(scope="module")
def scheduling_database(request, tmp_path_factory):
    """PostgreSQL only: on SQLite each part of a booking is a statement of its own, and nothing waits on it."""
    return migrated_database(request, tmp_path_factory, "postgresql")


def test_a_booking_is_two_statements_and_writes_its_event_and_audit_row_with_it(clinic):
    room = clinic.room("Infusion 1")
    patient = clinic.plan(minutes=120)
    clinic.booked(clinic.plan(minutes=120), local(MONDAY, "13:00"), room_id=room["id"])   # the calendar is cached from here
    statements = []

    def seen(_connection, _cursor, statement, *_):
        statements.append(statement)

    sa.event.listen(clinic.engine, "before_cursor_execute", seen)
    try:
        booked = clinic.call("POST", "/appointments", subject="desk-ana",
                             json={"patient_id": patient, "kind": "infusion", "room_id": room["id"],
                                   "starts_at": local(MONDAY, "09:00").isoformat()})
    finally:
        sa.event.remove(clinic.engine, "before_cursor_execute", seen)
    assert booked.status_code == 201, booked.get_data(as_text=True)
    assert len(statements) == 2, statements
    assert "INSERT INTO audit_log" in statements[1] and "INSERT INTO outbox" in statements[1]
    [row] = clinic.audit_trail(subject="desk-ana")
    assert (row["action"], row["resource_id"], row["patient_id"], row["outcome"]) == ("create", booked.get_json()["id"], patient, "allowed")
