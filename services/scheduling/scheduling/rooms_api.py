"""Scheduling's HTTP API for what bookings are made against: rooms, weekly office hours, closures.

Admins change them; every staff role reads them. A change that would strand booked
appointments (a room taken out of use, hours shortened, a day closed) is refused with a 409
listing those appointments, to be moved or cancelled first. Such changes take the calendar lock
exclusively (scheduling.db), so no booking can slip in between the check and the commit.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time

import sqlalchemy as sa
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate

from clinic.auth import ADMIN, FRONT_DESK, NEUROLOGIST, NURSE, requires_roles
from clinic.db import new_id
from clinic.errors import Conflict, NotFound, RuleViolation
from clinic.validation import PLAUSIBLE_DAY, plain_text
from clinic.web import engine
from scheduling import db, domain, office_hours
from scheduling.api import now, rules
from scheduling.office_hours import WEEKDAYS, OpenInterval

rooms = Blueprint("rooms", __name__, url_prefix="/rooms", description="Infusion rooms (a recliner each) and exam rooms.")
hours = Blueprint("office_hours", __name__, url_prefix="/office-hours", description="The weekly office hours, in local time.")
closures_blp = Blueprint("closures", __name__, url_prefix="/closures", description="Dates the clinic is closed.")

STAFF = (FRONT_DESK, NURSE, NEUROLOGIST, ADMIN)
# Enough ids for a person to act on; the count says how many there are in all.
LISTED_IN_CONFLICTS = 50


# --- rooms ----------------------------------------------------------------------------------


class RoomIn(Schema):
    name = fields.String(required=True, validate=plain_text(100))
    kind = fields.String(required=True, validate=validate.OneOf(domain.ROOM_KINDS))
    active = fields.Boolean(load_default=True)


class RoomPatch(Schema):
    name = fields.String(validate=plain_text(100))
    kind = fields.String(validate=validate.OneOf(domain.ROOM_KINDS))
    active = fields.Boolean()


class RoomQuery(Schema):
    kind = fields.String(load_default=None, validate=validate.OneOf(domain.ROOM_KINDS))
    active = fields.Boolean(load_default=None)


class RoomOut(Schema):
    id = fields.String()
    name = fields.String()
    kind = fields.String()
    active = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


@rooms.route("")
class Rooms(MethodView):
    @requires_roles(ADMIN)
    @rooms.arguments(RoomIn())
    @rooms.response(201, RoomOut)
    @rooms.alt_response(409, description="A room with this name exists; details.room_id names it.")
    def post(self, data):
        """Add a room: `infusion` (a private room with a recliner) or `exam` (office visits)."""
        moment = now()
        room = {**data, "name": data["name"].strip(), "id": new_id(), "created_at": moment, "updated_at": moment}
        try:
            with engine().begin() as connection:
                connection.execute(db.rooms.insert().values(**room))
        except sa.exc.IntegrityError:
            _raise_if_name_taken(room["name"])
            raise
        return room

    @requires_roles(*STAFF)
    @rooms.arguments(RoomQuery(), location="query")
    @rooms.response(200, RoomOut(many=True))
    def get(self, query):
        """The rooms, by name; filter by kind and whether in use."""
        with engine().connect() as connection:
            return db.list_rooms(connection, kind=query["kind"], active=query["active"])


@rooms.route("/<uuid:room_id>")
class RoomById(MethodView):
    @requires_roles(*STAFF)
    @rooms.response(200, RoomOut)
    def get(self, room_id):
        """One room."""
        with engine().connect() as connection:
            return _existing_room(connection, str(room_id))

    @requires_roles(ADMIN)
    @rooms.arguments(RoomPatch())
    @rooms.response(200, RoomOut)
    @rooms.alt_response(409, description="The name is taken, or appointments are booked in a room leaving use or changing kind.")
    def patch(self, changes, room_id):
        """Rename a room, take it out of use (`active: false`) or back, or change its kind.

        A room with appointments still to come can be neither taken out of use nor change kind:
        move or cancel those first (the 409 lists them).
        """
        if "name" in changes:
            changes["name"] = changes["name"].strip()
        try:
            with engine().begin() as connection:
                # The room's row first, then the calendar lock: the order bookings take them in.
                room = _existing_room(connection, str(room_id), for_update=True)
                db.begin_calendar_change(connection)
                stops_taking = changes.get("active") is False or changes.get("kind", room["kind"]) != room["kind"]
                if stops_taking and room["active"]:
                    _refuse_if_booked("appointments are still booked in this room; move or cancel them first",
                                      db.future_appointments(connection, now(), room_id=room["id"], limit=0))
                room = {**room, **changes, "updated_at": now()}
                connection.execute(db.rooms.update().where(db.rooms.c.id == room["id"]).values(**changes, updated_at=room["updated_at"]))
        except sa.exc.IntegrityError:
            _raise_if_name_taken(changes.get("name"), except_id=str(room_id))
            raise
        return room


def _existing_room(connection, room_id: str, for_update: bool = False) -> dict:
    room = db.get_room(connection, room_id, for_update=for_update)
    if room is None:
        raise NotFound("no room with this id", {"room_id": room_id})
    return room


def _raise_if_name_taken(name: str | None, except_id: str | None = None) -> None:
    if name is None:
        return
    with engine().connect() as connection:
        existing = db.room_by_name(connection, name)
    if existing is not None and existing["id"] != except_id:
        raise Conflict(f"a room named {name} exists already", {"room_id": existing["id"]})


def _refuse_if_booked(message: str, appointments: list[dict]) -> None:
    if appointments:
        raise Conflict(message, {"appointment_id": appointments[0]["id"], "count": len(appointments),
                                 "appointment_ids": [a["id"] for a in appointments[:LISTED_IN_CONFLICTS]]})


# --- office hours ---------------------------------------------------------------------------


class ClockTime(fields.Field):
    """A wall-clock time as "HH:MM" (24-hour)."""

    _pattern = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not self._pattern.match(value):
            raise ValidationError('a time of day as "HH:MM", 24-hour')
        return time.fromisoformat(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.strftime("%H:%M")


class OpenIntervalSchema(Schema):
    opens = ClockTime(required=True)
    closes = ClockTime(required=True)


def _day():
    return fields.List(fields.Nested(OpenIntervalSchema), load_default=list, validate=validate.Length(max=6),
                       metadata={"description": "Open intervals that day, local time; empty or left out: closed"})


WeekIn = Schema.from_dict({name: _day() for name in WEEKDAYS}, name="WeekIn")


class WeekOut(Schema.from_dict({name: _day() for name in WEEKDAYS}, name="WeekOutBase")):
    timezone = fields.String(metadata={"description": "The clinic's time zone (CLINIC_TIMEZONE); all hours are local time there"})


def _week(template: list[OpenInterval]) -> dict:
    week = {name: [] for name in WEEKDAYS}
    for interval in template:
        week[WEEKDAYS[interval.weekday]].append({"opens": interval.opens, "closes": interval.closes})
    return {**week, "timezone": rules().timezone.key}


@hours.route("")
class OfficeHours(MethodView):
    @requires_roles(*STAFF)
    @hours.response(200, WeekOut)
    def get(self):
        """The weekly office hours, per weekday a list of open intervals in the clinic's local time (empty: closed)."""
        with engine().connect() as connection:
            return _week(db.get_template(connection))

    @requires_roles(ADMIN)
    @hours.arguments(WeekIn())
    @hours.response(200, WeekOut)
    @hours.alt_response(409, description="Booked appointments would fall outside the new hours; details list them.")
    def put(self, data):
        """Replace the weekly office hours. A weekday left out or empty is closed.

        Hours are local wall-clock times, so 08:00 stays 08:00 across daylight-saving changes.
        Refused (409, listing them) when appointments still to come would fall outside the new hours.
        """
        template = [OpenInterval(weekday, interval["opens"], interval["closes"])
                    for weekday, name in enumerate(WEEKDAYS) for interval in data.get(name, [])]
        office_hours.check_template(template)
        with engine().begin() as connection:
            db.begin_calendar_change(connection)
            stranded = [appointment for appointment in db.future_appointments(connection, now(), limit=0)
                        if not _fits(appointment, template)]
            _refuse_if_booked("appointments still to come would fall outside these hours; move or cancel them first", stranded)
            db.replace_template(connection, template)
        return _week(sorted(template))


def _fits(appointment: dict, template: list[OpenInterval]) -> bool:
    tz = rules().timezone
    days = office_hours.local_dates(appointment["starts_at"], appointment["ends_at"], tz)
    windows = office_hours.open_windows(template, (), tz, days[0], days[-1])
    return office_hours.within(windows, appointment["starts_at"], appointment["ends_at"])


# --- closures -------------------------------------------------------------------------------


class ClosureIn(Schema):
    date = fields.Date(required=True, validate=PLAUSIBLE_DAY, metadata={"description": "A local date of the clinic"})
    reason = fields.String(required=True, validate=plain_text(200))


class ClosureQuery(Schema):
    from_ = fields.Date(load_default=None, data_key="from", validate=PLAUSIBLE_DAY)
    to = fields.Date(load_default=None, validate=PLAUSIBLE_DAY)


class ClosureOut(Schema):
    date = fields.Date(attribute="day")
    reason = fields.String()
    created_at = fields.DateTime()


@closures_blp.route("")
class Closures(MethodView):
    @requires_roles(*STAFF)
    @closures_blp.arguments(ClosureQuery(), location="query")
    @closures_blp.response(200, ClosureOut(many=True))
    def get(self, query):
        """Closed dates, in order, optionally between two local dates (inclusive)."""
        with engine().connect() as connection:
            return db.list_closures(connection, query["from_"], query["to"])

    @requires_roles(ADMIN)
    @closures_blp.arguments(ClosureIn())
    @closures_blp.response(201, ClosureOut)
    @closures_blp.alt_response(409, description="The date is closed already, or appointments are booked on it (listed).")
    def post(self, data):
        """Close the clinic on a date (a holiday, training day). Refused while appointments are booked on it."""
        day = data["date"]
        tz = rules().timezone
        if day < now().astimezone(tz).date():
            raise RuleViolation("a closure cannot be in the past", {"date": ["must be today or later"]})
        closure = {"day": day, "reason": data["reason"].strip(), "created_at": now()}
        with engine().begin() as connection:
            db.begin_calendar_change(connection)
            if db.get_closure(connection, day) is not None:
                raise Conflict(f"the clinic is already closed on {day.isoformat()}", {"date": day.isoformat()})
            _refuse_if_booked(f"appointments are booked on {day.isoformat()}; move or cancel them first",
                              db.future_appointments(connection, now(), on_days=office_hours.local_day_bounds(day, tz), limit=0))
            connection.execute(db.closures.insert().values(**closure))
        return closure


@closures_blp.route("/<day>")
class ClosureByDate(MethodView):
    @requires_roles(ADMIN)
    @closures_blp.response(204)
    def delete(self, day):
        """Open the clinic again on a closed date (its weekly office hours apply)."""
        closed_on = _parse_date(day)
        with engine().begin() as connection:
            db.begin_calendar_change(connection)
            removed = connection.execute(db.closures.delete().where(db.closures.c.day == closed_on)).rowcount
        if not removed:
            raise NotFound("the clinic is not closed on this date", {"date": day})


def _parse_date(value: str) -> date:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise NotFound("not a date (YYYY-MM-DD)", {"date": value}) from None
