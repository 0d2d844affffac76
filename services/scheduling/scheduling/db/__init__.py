"""Scheduling's database, one module per concern:

    tables         the tables (the migrations are the schema of record) and where the migrations are
    locks          the locks scheduling takes (the calendar lock, then appointment, plan copy, room rows)
                   and the one order every transaction takes them in
    calendar       the calendar's version and each process's cached copy; office hours and closures
    booking_sql    the hand-tuned statements of the booking hot path
    appointments   reading and changing appointments
    rooms          reading and changing rooms
    plan_copies    each patient's plan copy, kept from records' events

`clinic migrate scheduling` finds MIGRATIONS here, as it does for every service.
"""

from scheduling.db.tables import MIGRATIONS, metadata

__all__ = ["MIGRATIONS", "metadata"]
