"""Sessions' worker on the real RabbitMQ (and PostgreSQL, and SQLite): the check-in that scheduling
publishes, delivered twice, opens one session with its plan's drugs; the session's start and its
discharge leave through the outbox relay onto the bus, once each."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from clinic import events
from clinic.testing import eventually
from clinic.testing.concurrency import publishing, running
from clinic.testing.listening import listening
from clinic.worker import Worker
from sessions.db import metadata, tables
from sessions.handlers import make_handlers
from tests.integration.sessions.support import DISCHARGE, PLAN_DRUGS, check_in_data, new_id, sent, session_of_appointment


@pytest.fixture
def worker(ward):
    """Sessions' worker (consumer and outbox relay) on the ward's database, the test's bus namespace and clock."""
    with running(Worker(ward.settings, metadata, make_handlers(), engine=ward.engine, clock=ward.clock), "sessions-worker") as worker:
        yield worker


@pytest.fixture
def publish(ward):
    """publish(event) onto the test's exchange, as another service's relay would."""
    with publishing(ward.settings) as send:
        yield send


def applied(ward, event: events.Event) -> bool:
    with ward.engine.connect() as connection:
        return connection.execute(sa.select(tables.inbox.c.event_id).where(tables.inbox.c.event_id == event.id)).first() is not None


def wire(event: events.Event) -> events.Event:
    """The event as its producer's relay puts it on the wire (the payload as JSON)."""
    return events.Event(type=event.type, data=json.loads(json.dumps(events.schema_for(event.type, event.version).dump(event.data))),
                        producer=event.producer, version=event.version, id=event.id)


def test_a_check_in_published_twice_opens_one_session_whose_start_and_discharge_reach_the_bus(ward, worker, publish):
    patient, room_id, plan_id = new_id(), new_id(), new_id()
    room_changed = wire(sent(events.ROOM_CHANGED, {"room_id": room_id, "name": "Infusion 1", "kind": "infusion", "active": True,
                                                   "room_version": 1}))
    activated = wire(sent(events.PLAN_ACTIVATED, {"plan_id": plan_id, "patient_id": patient, "infusion_minutes": 150,
                                                  "drugs": PLAN_DRUGS, "plan_sequence": 1}))
    check_in = wire(sent(events.APPOINTMENT_CHECKED_IN, check_in_data(patient, room_id, plan_id, checked_in_at=ward.clock())))
    for event in (room_changed, activated, check_in, check_in):
        publish(event)
    eventually(lambda: applied(ward, check_in), message="the check-in applied")
    appointment_id = str(check_in.data["appointment_id"])
    session = session_of_appointment(ward, appointment_id)
    assert len(ward.rows(tables.sessions)) == 1
    assert len(ward.rows(tables.session_drugs, session_id=session["id"])) == len(PLAN_DRUGS)

    with listening(ward.settings, "sessions.session.*") as received:
        assert ward.call("POST", f"/sessions/{session['id']}/start").status_code == 200
        ward.clock.advance(minutes=150)
        assert ward.call("POST", f"/sessions/{session['id']}/discharge", json=DISCHARGE).status_code == 200

        def published() -> list[str]:
            found = [json.loads(body) for _, body in received()]
            assert [body["type"] for body in found] == [events.SESSION_STARTED, events.SESSION_COMPLETED]
            return found

        started, completed = eventually(published, message="session.started and session.completed on the bus")
    assert started["data"]["session_id"] == completed["data"]["session_id"] == session["id"]
    assert completed["data"]["appointment_id"] == appointment_id
