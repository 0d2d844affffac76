"""What the scheduling tests share besides fixtures (those are in conftest.py): the clinic's fixed
clock, the app under test with the steps tests take with it, and the events scheduling consumes
(records' plan events, sessions' session events) built as their producers publish them.

The clinic's clock is fixed (Monday 7 January 2030, 06:00 in New York) so "the past" and "today"
mean the same on any day the tests run.
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
from records import domain as records_domain
from scheduling import SERVICE
from scheduling.db import MIGRATIONS, metadata, plan_copies, tables
from scheduling.domain import SchedulingRules
from scheduling.handlers import forget_retired_plan, keep_active_plan, make_handlers

NY = ZoneInfo("America/New_York")
MONDAY = date(2030, 1, 7)
WEEKDAY_HOURS = [{"opens": "08:00", "closes": "18:00"}]
OFFICE_HOURS = {name: WEEKDAY_HOURS for name in ("monday", "tuesday", "wednesday", "thursday", "friday")}
KETOROLAC = {"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "purpose": "pain"}


def local(day: date, hhmm: str) -> datetime:
    """A clinic-local wall-clock time as an aware datetime."""
    return datetime.combine(day, time.fromisoformat(hhmm), tzinfo=NY)


# --- records' events, as records publishes them ---------------------------------------------------


def sent(event_type: str, data: dict, producer: str, occurred_at: datetime | None = None) -> events.Event:
    """An event as its producer's outbox writes it: the payload checked against the shared schema
    (serialise_payload), ready to publish."""
    return events.Event(type=event_type, data=events.serialise_payload(event_type, data), producer=producer,
                        **({"occurred_at": occurred_at} if occurred_at else {}))


def plan_activated(patient_id: str, minutes: int = 150, plan_id: str | None = None, sequence: int | None = 1,
                   occurred_at: datetime | None = None) -> events.Event:
    """records.treatment_plan.activated for a plan with one drug, built by records' own payload builder;
    `sequence` is the patient's plan sequence (None: as records wrote it before sequences existed)."""
    plan = {"id": plan_id or str(uuid.uuid4()), "patient_id": patient_id, "infusion_minutes": minutes, "drugs": [KETOROLAC]}
    return sent(events.PLAN_ACTIVATED, records_domain.activated_payload(plan, None, plan_sequence=sequence), "records", occurred_at)


def plan_retired(patient_id: str, plan_id: str, sequence: int | None = 2, occurred_at: datetime | None = None) -> events.Event:
    """records.treatment_plan.retired, built by records' own payload builder."""
    plan = {"id": plan_id, "patient_id": patient_id}
    return sent(events.PLAN_RETIRED, records_domain.retired_payload(plan, plan_sequence=sequence), "records", occurred_at)


# --- sessions' events, as sessions publishes them ---------------------------------------------------


def session_started(appointment: dict, started_at: datetime, session_id: str | None = None) -> events.Event:
    """sessions.session.started: the nurse started the appointment's infusion session."""
    data = {"session_id": session_id or str(uuid.uuid4()), "appointment_id": appointment["id"],
            "patient_id": appointment["patient_id"], "room_id": appointment["room_id"], "started_at": started_at}
    return sent(events.SESSION_STARTED, data, "sessions")


def session_ended(appointment: dict, ended_at: datetime, completed: bool = True, session_id: str | None = None) -> events.Event:
    """sessions.session.completed (discharged) or .aborted for the appointment's infusion session."""
    data = {"session_id": session_id or str(uuid.uuid4()), "appointment_id": appointment["id"],
            "patient_id": appointment["patient_id"], "room_id": appointment["room_id"], "ended_at": ended_at}
    if completed:
        data.update(room_name=appointment["room_name"], started_at=ended_at - timedelta(hours=2), drugs_given=[], pain_before=7,
                    pain_after=2, highest_news2=1, alerts=[])
        return sent(events.SESSION_COMPLETED, data, "sessions")
    data.update(reason="patient_unwell")
    return sent(events.SESSION_ABORTED, data, "sessions")


def apply(engine, event: events.Event) -> None:
    """Apply a plan event as scheduling's worker does: loaded with the shared schema as received
    (events.parse), then through the inbox, in its unit of work."""
    handler = {events.PLAN_ACTIVATED: keep_active_plan, events.PLAN_RETIRED: forget_retired_plan}[event.type]
    assert apply_once(engine, metadata, SERVICE, events.parse(event.to_json()), handler) == APPLIED


# --- the app under test -----------------------------------------------------------------------------


class Clinic:
    """The scheduling app under test, and the steps tests take with it."""

    def __init__(self, app, clock: Clock, settings):
        self.app = app
        self.client = app.test_client()
        self.clock = clock
        self.settings = settings
        self.engine = app.extensions["clinic.engine"]
        self._plan_sequences: dict[str, int] = {}

    def headers(self, *roles: str, subject: str = "tester") -> dict:
        return {"Authorization": f"Bearer {issue_token(self.settings, subject, roles)}"}

    def call(self, method: str, path: str, role: str = "front_desk", subject: str = "tester", **kwargs):
        return self.client.open(path, method=method, headers=self.headers(role, subject=subject), **kwargs)

    def room(self, name: str, kind: str = "infusion") -> dict:
        response = self.call("POST", "/rooms", role="admin", json={"name": name, "kind": kind})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def next_plan_sequence(self, patient_id: str) -> int:
        self._plan_sequences[patient_id] = self._plan_sequences.get(patient_id, 0) + 1
        return self._plan_sequences[patient_id]

    def plan(self, patient_id: str | None = None, minutes: int = 150, plan_id: str | None = None) -> str:
        """records activated a plan for the patient (applied as the worker would); returns the patient id."""
        patient_id = patient_id or str(uuid.uuid4())
        apply(self.engine, plan_activated(patient_id, minutes, plan_id, self.next_plan_sequence(patient_id)))
        return patient_id

    def retire(self, patient_id: str) -> None:
        """records retired the patient's active plan."""
        with self.engine.connect() as connection:
            copy = plan_copies.get(connection, patient_id)
        apply(self.engine, plan_retired(patient_id, copy.plan_id, self.next_plan_sequence(patient_id)))

    def book(self, patient_id: str, starts_at: datetime, kind: str = "infusion", room_id: str | None = None, role="front_desk"):
        body = {"patient_id": patient_id, "kind": kind, "starts_at": starts_at.isoformat()}
        if room_id:
            body["room_id"] = room_id
        return self.call("POST", "/appointments", role=role, json=body)

    def booked(self, patient_id: str, starts_at: datetime, kind: str = "infusion", room_id: str | None = None) -> dict:
        response = self.book(patient_id, starts_at, kind, room_id)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def deliver(self, event: events.Event) -> str:
        """Apply an event as scheduling's worker does (loaded as received, through the inbox, with the
        worker's handlers and the clinic's clock): APPLIED, DUPLICATE (its id was applied before) or FAILED."""
        handlers = make_handlers(SchedulingRules(timezone=NY))
        return apply_once(self.engine, metadata, SERVICE, events.parse(event.to_json()), handlers[event.type], clock=self.clock)

    def events(self, event_type: str | None = None) -> list[dict]:
        """The events in the outbox, oldest first: [{"type", "data"}]."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(tables.outbox.c.body).order_by(tables.outbox.c.position)).scalars().all()
        found = [json.loads(body) for body in rows]
        return [{"type": e["type"], "data": e["data"]} for e in found if event_type in (None, e["type"])]

    def count(self, **where) -> int:
        query = sa.select(sa.func.count()).select_from(tables.appointments)
        for column, value in where.items():
            query = query.where(tables.appointments.c[column] == value)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def audit_trail(self, **where) -> list[dict]:
        """The audit rows, oldest first, filtered by column values."""
        query = sa.select(tables.audit_log).order_by(tables.audit_log.c.id)
        for column, value in where.items():
            query = query.where(tables.audit_log.c[column] == value)
        with self.engine.connect() as connection:
            return rows_of(connection, query)


def empty_tables(engine) -> None:
    with engine.begin() as connection:
        for table in (tables.appointments, tables.rooms, tables.closures, tables.office_hours, tables.plan_copies, tables.outbox,
                      tables.inbox, tables.audit_log):
            connection.execute(table.delete())


def migrated_database(request, tmp_path_factory, kind: str) -> str:
    """The URL of a new scheduling database of this kind, migrated to the latest revision."""
    if kind == "postgresql":
        postgres = request.getfixturevalue("postgres")
        url = postgres.create_database("scheduling")
        request.addfinalizer(lambda: postgres.drop_database(url))
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('scheduling') / 'scheduling.db'}"
    engine = create_engine(url)
    migrate(engine, MIGRATIONS)
    engine.dispose()
    return url
