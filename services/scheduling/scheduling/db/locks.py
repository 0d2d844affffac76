"""The locks scheduling takes on PostgreSQL, and the one order every transaction takes them in.

    1. the calendar lock   an advisory lock: shared by work on appointments that reads office hours,
                           closures or rooms (booking, rescheduling, a session's end with its
                           follow-up visit); exclusive by a change to any of those (calendar_change)
    2. the appointment     being changed (FOR UPDATE)
    3. the plan copy       of the appointment's patient (FOR NO KEY UPDATE)
    4. the room            the appointment goes into, or the room being changed (FOR NO KEY UPDATE)

A transaction takes the ones it needs in this order and never an earlier one after a later one, so no
two transactions can each hold a lock the other waits for: that cycle is a deadlock, which PostgreSQL
breaks by aborting one of them (40P01). Cancel, check-in and no-show lock the appointment alone. A
booking takes 1, 3 and 4 in its first statement (scheduling.db.booking_sql.booking_context, which
writes them in this order).

Why the calendar lock: office hours, closures and which rooms are in use change rarely, by an admin,
and such a change is refused while it would strand a booked appointment. So that no booking slips in
between that check and the change's commit, the change holds the lock exclusively until it commits
and bumps the calendar's version (scheduling.db.calendar), and work on appointments holds it shared
(bookings never wait for each other). Taken first, before anything it protects is read, a shared
holder reads the calendar as it is after any change it waited for.

Why the row locks: they queue bookings for one patient or one room behind each other. Without them,
simultaneous inserts that collide each add their row and then wait for the others' to commit before
the exclusion constraint can decide: a deadlock PostgreSQL breaks only one victim per
deadlock_timeout (1 s), so fifty desks clicking the same slot would take a minute. With them, the
constraint only ever meets committed rows. FOR NO KEY UPDATE leaves the appointments' foreign-key
checks (FOR KEY SHARE on the room) alone.

On SQLite there is nothing to take: every transaction is BEGIN IMMEDIATE (clinic.db) and runs alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import is_postgresql, row_of
from scheduling.db.tables import appointments, calendar_version, plan_copies, rooms

CALENDAR_LOCK_KEY = 0x7363686564  # "sched"


def share_calendar(connection: Connection) -> None:
    """Lock 1, shared: for work on appointments that reads the calendar or rooms in later statements."""
    if is_postgresql(connection):
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(CALENDAR_LOCK_KEY)))


def calendar_change(connection: Connection) -> None:
    """Lock 1, exclusive, before changing office hours, closures or a room: wait out the bookings under
    way, keep new ones out until commit, and tell every process's calendar cache that it is out of date."""
    if is_postgresql(connection):
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(CALENDAR_LOCK_KEY)))
    connection.execute(calendar_version.update().where(calendar_version.c.id == 1).values(version=calendar_version.c.version + 1))


def appointment(connection: Connection, appointment_id: str) -> dict | None:
    """Lock 2: the appointment, read for a change."""
    return row_of(connection, sa.select(appointments).where(appointments.c.id == appointment_id).with_for_update())


def plan_copy_row(connection: Connection, patient_id: str) -> dict | None:
    """Lock 3: the patient's plan copy, read (queues behind the patient's other bookings)."""
    return row_of(connection, sa.select(plan_copies).where(plan_copies.c.patient_id == patient_id).with_for_update(key_share=True))


def room(connection: Connection, room_id: str) -> None:
    """Lock 4: queue behind other bookings into this room and behind a change to it (PostgreSQL only)."""
    if is_postgresql(connection):
        connection.execute(sa.select(rooms.c.id).where(rooms.c.id == room_id).with_for_update(key_share=True))


def room_row(connection: Connection, room_id: str) -> dict | None:
    """Lock 4: the room, read for a change to it."""
    return row_of(connection, sa.select(rooms).where(rooms.c.id == room_id).with_for_update(key_share=True))
