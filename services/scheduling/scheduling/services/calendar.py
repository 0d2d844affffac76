"""What bookings are made against, part two: the weekly office hours and the closures. An admin
changes them; a change that would strand booked appointments (hours shortened, a day closed) is
refused with a 409 listing them, to be moved or cancelled first.

Each change holds the calendar lock exclusively (scheduling.db.locks), so no booking can slip in
between the look at what it would strand and its commit.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.unit_of_work import UnitOfWork
from scheduling import domain
from scheduling.db import appointments, calendar, locks
from scheduling.local_time import OpenInterval, check_template, local_dates, local_day_bounds, open_windows, within


def replace_office_hours(uow: UnitOfWork, tz: ZoneInfo, template: list[OpenInterval]) -> list[OpenInterval]:
    """The new weekly office hours, in local time; refused while appointments to come would fall outside them."""
    check_template(template)
    with uow:
        locks.calendar_change(uow.connection)                                 # lock 1, exclusive
        stranded = [appointment for appointment in appointments.still_to_come(uow.connection, uow.now)
                    if not _fits(appointment, template, tz)]
        domain.refuse_stranding("appointments still to come would fall outside these hours; move or cancel them first", stranded)
        calendar.replace_weekly_template(uow.connection, template)
    return sorted(template)


def close_day(uow: UnitOfWork, tz: ZoneInfo, day: date, reason: str) -> dict:
    """Close the clinic on a local date (a holiday, a training day); refused while appointments are booked on it."""
    with uow:
        if day < uow.now.astimezone(tz).date():
            raise RuleViolation("a closure cannot be in the past", {"date": ["must be today or later"]})
        uow.audit.concerning(resource_id=day.isoformat())
        locks.calendar_change(uow.connection)                                 # lock 1, exclusive
        if calendar.is_closed(uow.connection, day):
            raise Conflict(f"the clinic is already closed on {day.isoformat()}", {"date": day.isoformat()})
        domain.refuse_stranding(f"appointments are booked on {day.isoformat()}; move or cancel them first",
                                appointments.still_to_come(uow.connection, uow.now, on_days=local_day_bounds(day, tz)))
        closure = {"day": day, "reason": reason.strip(), "created_at": uow.now}
        calendar.add_closure(uow.connection, closure)
        return closure


def reopen_day(uow: UnitOfWork, day: date) -> None:
    """Open the clinic again on a closed date: its weekly office hours apply."""
    with uow:
        uow.audit.concerning(resource_id=day.isoformat())
        locks.calendar_change(uow.connection)                                 # lock 1, exclusive
        if not calendar.remove_closure(uow.connection, day):
            raise NotFound("the clinic is not closed on this date", {"date": day.isoformat()})


def _fits(appointment: dict, template: list[OpenInterval], tz: ZoneInfo) -> bool:
    days = local_dates(appointment["starts_at"], appointment["ends_at"], tz)
    return within(open_windows(template, (), tz, days[0], days[-1]), appointment["starts_at"], appointment["ends_at"])
