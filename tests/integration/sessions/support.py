"""What the sessions tests share besides fixtures (those are in conftest.py): the ward's settable
clock, the app under test (Ward) with a staff-token call, the events other services send, delivered
as sessions' worker applies them, and the steps most tests begin with (a room, a plan, a check-in,
a start).

The clock is fixed (Monday 7 January 2030, 09:00 in New York) until a test moves it, so "the planned
minutes have run" and "today" mean the same on any day the tests run.
"""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from clinic import events
from clinic.auth import issue_token
from clinic.db import create_engine, rows_of
from clinic.inbox import APPLIED, apply_once
from clinic.migrations import migrate
from clinic.testing.clock import Clock
from sessions import SERVICE
from sessions.app import create_app
from sessions.db import MIGRATIONS, metadata, monitoring, tables
from sessions.domain.rules import SessionRules
from sessions.handlers import make_handlers

NY = ZoneInfo("America/New_York")
MONDAY = date(2030, 1, 7)

KETOROLAC = {"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain", "max_per_24h": "120"}
ONDANSETRON = {"name": "ondansetron", "dose": "4", "unit": "mg", "route": "IV", "purpose": "nausea_vomiting", "max_per_24h": "16"}
SALINE = {"name": "sodium chloride 0.9%", "dose": "1000", "unit": "mL", "route": "IV", "purpose": "hydration", "rate": "500 mL/h"}
PLAN_DRUGS = [KETOROLAC, ONDANSETRON, SALINE]

# A discharge body that meets every condition a body can meet (the escort, the instructions).
DISCHARGE = {
    "escort": {"name": "Sam Rivera", "relationship": "spouse", "phone": "+1 212 555 0100", "adult_present": True},
    "instructions": {"rest_today": True, "call_if_problems": True, "return_visit": True},
}


def local(day: date, hhmm: str) -> datetime:
    """A clinic-local wall-clock time as an aware datetime."""
    return datetime.combine(day, time.fromisoformat(hhmm), tzinfo=NY)


class Ward:
    """The sessions app under test, its clock, and what tests look at in its database."""

    def __init__(self, app, clock: Clock, settings):
        self.app = app
        self.client = app.test_client()
        self.clock = clock
        self.settings = settings
        self.engine = app.extensions["clinic.engine"]
        self.handlers = make_handlers()

    def headers(self, *roles: str, subject: str = "tester") -> dict:
        return {"Authorization": f"Bearer {issue_token(self.settings, subject, roles)}"}

    def call(self, method: str, path: str, role: str = "nurse", subject: str = "tester", **kwargs):
        """A request with a staff token of one role (json=, query_string=, headers= as Flask's client takes them)."""
        headers = {**self.headers(role, subject=subject), **kwargs.pop("headers", {})}
        return self.client.open(path, method=method, headers=headers, **kwargs)

    def events(self, event_type: str | None = None) -> list[dict]:
        """The events in the outbox, oldest first: [{"type", "version", "data"}]."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(tables.outbox.c.body).order_by(tables.outbox.c.position)).scalars().all()
        found = [json.loads(body) for body in rows]
        return [{"type": e["type"], "version": e["version"], "data": e["data"]} for e in found if event_type in (None, e["type"])]

    def rows(self, table: sa.Table, **where) -> list[dict]:
        """The rows of one of sessions' tables, filtered by column values."""
        query = sa.select(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with self.engine.connect() as connection:
            return rows_of(connection, query)

    def session_row(self, session_id: str) -> dict:
        [row] = self.rows(tables.sessions, id=session_id)
        return row

    def audit_trail(self, **where) -> list[dict]:
        """The audit rows, oldest first, filtered by column values."""
        query = sa.select(tables.audit_log).order_by(tables.audit_log.c.id)
        for column, value in where.items():
            query = query.where(tables.audit_log.c[column] == value)
        with self.engine.connect() as connection:
            return rows_of(connection, query)


# --- other services' events, delivered as sessions' worker applies them --------------------------------


def sent(event_type: str, data: dict, producer: str | None = None, version: int = 1) -> events.Event:
    """An event as its producer's outbox writes it, then as sessions' consumer loads it from the wire:
    the payload checked against the shared schema on both sides."""
    producer = producer or event_type.split(".")[0]
    event = events.Event(type=event_type, data=events.serialise_payload(event_type, data, version), producer=producer,
                         version=version)
    return events.parse(event.to_json())


def deliver_event(ward: Ward, event: events.Event) -> str:
    """Apply one event through the inbox with sessions' handlers (APPLIED, or DUPLICATE the second time)."""
    return apply_once(ward.engine, metadata, SERVICE, event, ward.handlers[event.type], clock=ward.clock)


def deliver(ward: Ward, event_type: str, data: dict, version: int = 1) -> str:
    """Build the event from its payload and apply it as sessions' worker does; asserts it was applied."""
    outcome = deliver_event(ward, sent(event_type, data, version=version))
    assert outcome == APPLIED, outcome
    return outcome


def new_id() -> str:
    return str(uuid.uuid4())


def room(ward: Ward, name: str | None = None, kind: str = "infusion", active: bool = True, version: int = 1,
         room_id: str | None = None) -> str:
    """scheduling.room.changed for a room (an admin added or changed it); returns the room's id."""
    room_id = room_id or new_id()
    deliver(ward, events.ROOM_CHANGED, {"room_id": room_id, "name": name or f"Infusion {room_id[:4]}", "kind": kind,
                                        "active": active, "room_version": version})
    return room_id


def plan(ward: Ward, patient_id: str, drugs: list[dict] | None = None, minutes: int = 150, plan_id: str | None = None,
         sequence: int | None = 1) -> str:
    """records.treatment_plan.activated for the patient; returns the plan's id."""
    plan_id = plan_id or new_id()
    deliver(ward, events.PLAN_ACTIVATED, {"plan_id": plan_id, "patient_id": patient_id, "infusion_minutes": minutes,
                                          "drugs": drugs if drugs is not None else PLAN_DRUGS, "replaces_plan_id": None,
                                          "plan_sequence": sequence})
    return plan_id


def retire_plan(ward: Ward, patient_id: str, plan_id: str, sequence: int | None = 2, replaced_by: str | None = None) -> None:
    """records.treatment_plan.retired for the plan."""
    deliver(ward, events.PLAN_RETIRED, {"plan_id": plan_id, "patient_id": patient_id, "replaced_by_plan_id": replaced_by,
                                        "plan_sequence": sequence})


def check_in_data(patient_id: str, room_id: str, plan_id: str | None = None, kind: str = "infusion", minutes: int = 150,
                  appointment_id: str | None = None, checked_in_at: datetime | None = None, room_name: str = "Infusion 1") -> dict:
    """The payload of scheduling.appointment.checked_in for an appointment starting at the clock's time."""
    checked_in_at = checked_in_at or local(MONDAY, "09:00")
    return {"appointment_id": appointment_id or new_id(), "patient_id": patient_id, "kind": kind, "room_id": room_id,
            "room_name": room_name, "plan_id": plan_id, "starts_at": checked_in_at, "ends_at": checked_in_at + timedelta(minutes=minutes),
            "checked_in_at": checked_in_at, "appointment_version": 2}


def session_of_appointment(ward: Ward, appointment_id: str) -> dict | None:
    """The sessions row opened for the appointment, or None."""
    found = ward.rows(tables.sessions, appointment_id=appointment_id)
    return found[0] if found else None


def checked_in_session(ward: Ward, patient_id: str | None = None, room_id: str | None = None, drugs: list[dict] | None = None,
                       minutes: int = 150, with_plan: bool = True, **check_in) -> dict:
    """A patient checked in for an infusion (the room and the plan known first, unless given or
    with_plan=False): the session as GET /sessions/{id} shows it to a nurse."""
    patient_id = patient_id or new_id()
    room_id = room_id or room(ward)
    plan_id = plan(ward, patient_id, drugs, minutes) if with_plan else None
    data = check_in_data(patient_id, room_id, plan_id, minutes=minutes, checked_in_at=ward.clock(), **check_in)
    deliver(ward, events.APPOINTMENT_CHECKED_IN, data)
    row = session_of_appointment(ward, data["appointment_id"])
    assert row is not None, "the check-in opened no session"
    response = ward.call("GET", f"/sessions/{row['id']}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def start(ward: Ward, session_id: str, role: str = "nurse"):
    return ward.call("POST", f"/sessions/{session_id}/start", role=role)


def started_session(ward: Ward, **check_in) -> dict:
    """A checked-in session that a nurse has started (the answer to the start)."""
    session = checked_in_session(ward, **check_in)
    response = start(ward, session["id"])
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# --- monitoring rows, written as the monitoring writes them (its own tests post them through its API) ---


def scored_reading(ward: Ward, session_id: str, total: int, level: str | None, points: dict | None = None) -> str:
    """A reading entered by a nurse now, with the NEWS2 total, points and alert level given (the
    monitoring's own tests hold how readings are scored)."""
    reading_id = new_id()
    with ward.engine.begin() as connection:
        connection.execute(monitoring.readings.insert().values(
            id=reading_id, session_id=session_id, entered_by="nurse", measured_at=ward.clock(), received_at=ward.clock(),
            respiratory_rate=25 if total else 16, news2_total=total, news2_points=points or {"respiratory_rate": min(total, 3)},
            news2_complete=False, news2_filled_in=[], alert_level=level))
    return reading_id


def raised_alert(ward: Ward, session: dict, level: str = "urgent", news2_score: int | None = 5, kind: str = "news2") -> str:
    """An alert raised now for the session, not acknowledged."""
    alert_id = new_id()
    with ward.engine.begin() as connection:
        connection.execute(monitoring.alerts.insert().values(
            id=alert_id, session_id=session["id"], room_id=session["room_id"], room_name=session["room_name"], kind=kind, level=level,
            news2_score=news2_score, scored=[{"parameter": "respiratory_rate", "points": 3}] if news2_score else [],
            observed_at=ward.clock() if kind == "news2" else None, raised_at=ward.clock(), escalation=False))
    return alert_id


def acknowledge(ward: Ward, alert_id: str) -> None:
    """A nurse acknowledged the alert now."""
    with ward.engine.begin() as connection:
        connection.execute(monitoring.alerts.update().where(monitoring.alerts.c.id == alert_id)
                           .values(acknowledged_at=ward.clock(), acknowledged_by="nurse"))


def registered_monitor(ward: Ward, room_id: str) -> None:
    """A bedside monitor registered for the room (a monitored room)."""
    with ward.engine.begin() as connection:
        connection.execute(monitoring.devices.insert().values(
            id=new_id(), name="Monitor", room_id=room_id, token_hash=new_id().replace("-", "")[:64], registered_at=ward.clock(),
            registered_by="admin", assigned_at=ward.clock(), updated_at=ward.clock(), updated_by="admin"))


# --- the database -------------------------------------------------------------------------------------


def empty_tables(engine) -> None:
    """Every table of sessions' metadata emptied (whoever's they are), the dependent ones first."""
    with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(table.delete())


def migrated_database(request, tmp_path_factory, kind: str) -> str:
    """The URL of a new sessions database of this kind, migrated to the latest revision."""
    if kind == "postgresql":
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database("sessions")
        request.addfinalizer(lambda: postgres.drop_database(url))
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('sessions') / 'sessions.db'}"
    engine = create_engine(url)
    migrate(engine, MIGRATIONS)
    engine.dispose()
    return url



def open_ward(database_url: str, settings_for, rules: SessionRules | None = None, **settings_changes) -> Ward:
    """An empty ward in New York; the clock at Monday 09:00."""
    settings = settings_for(SERVICE, database_url, clinic_timezone="America/New_York", **settings_changes)
    clock = Clock(local(MONDAY, "09:00"))
    ward = Ward(create_app(settings, rules=rules or SessionRules(), clock=clock), clock, settings)
    empty_tables(ward.engine)
    return ward
