"""Records' worker on the real RabbitMQ and PostgreSQL: its events leave through the outbox with the payloads
the shared schemas define, and sessions.session.completed becomes exactly one encounter however often it comes."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pika
import pytest
import sqlalchemy as sa

from clinic import events
from clinic.db import create_engine
from clinic.outbox import pending_count
from clinic.testing import eventually
from clinic.testing.concurrency import publishing
from clinic.testing.listening import listening
from clinic.worker import Worker
from records import db
from records.handlers import HANDLERS
from tests.integration.records.support import KETOROLAC, draft_plan, register


@pytest.fixture
def worker(client, records_database):
    """The records worker (consumer and outbox relay) on the test's database and bus namespace."""
    engine = create_engine(records_database)
    # Short retry delays: a failing event reaches the dead letters within the tests' waits.
    running = Worker(client.settings.with_changes(delivery_limit=2, retry_delays_seconds=(0.1, 0.2)), db.metadata, HANDLERS,
                     engine=engine)
    thread = threading.Thread(target=running.run, name="records-worker", daemon=True)
    thread.start()
    assert running.consumer.ready.wait(15), "the records consumer did not connect to the broker"
    yield running
    running.stop()
    thread.join(timeout=15)
    engine.dispose()


@pytest.fixture
def published(client):
    """What records publishes, as a consumer would see it: published() -> [(AMQP message id, parsed event), ...]."""
    with listening(client.settings, "records.#") as received:
        # parse: envelope and payload checked against the schema
        yield lambda: [(message_id, events.parse(body)) for message_id, body in received()]


@pytest.fixture
def publish(client):
    """publish(event) onto the test's exchange, as the sessions relay would (with its account)."""
    with publishing(client.settings) as send:
        yield send


def test_records_events_leave_through_the_outbox_with_the_shared_schemas_payloads(client, records_engine, worker, published):
    patient = register(client, phone="+1 555 0100", preferred_contact="sms")
    client.patch(f"/patients/{patient['id']}", json={"email_opt_out": True}, headers=client.as_role("front_desk"))
    first = draft_plan(client, patient["id"])
    second = draft_plan(client, patient["id"], infusion_minutes=240, drugs=[{**KETOROLAC, "dose": "15", "max_per_24h": None}])
    neuro = client.as_role("neurologist")
    for path in (f"/treatment-plans/{first['id']}/activate", f"/treatment-plans/{second['id']}/activate",
                 f"/treatment-plans/{second['id']}/retire"):
        assert client.post(path, headers=neuro).status_code == 200

    def all_mine():
        mine = [(message_id, event) for message_id, event in published() if str(event.data["patient_id"]) == patient["id"]]
        assert len(mine) == 7, [event.type for _, event in mine]
        return mine

    mine = eventually(all_mine, timeout=20, message="records' seven events on the bus")
    assert all(message_id == event.id and event.producer == "records" for message_id, event in mine)
    assert [event.type for _, event in mine] == [
        "records.patient.registered", "records.patient.contact_changed", "records.patient.contact_changed",
        "records.treatment_plan.activated", "records.treatment_plan.retired", "records.treatment_plan.activated",
        "records.treatment_plan.retired"]
    registered, contact, opted_out, activated, replaced, reactivated, retired = (event.data for _, event in mine)
    assert set(registered) == {"patient_id"}, "registration carries ids only"
    assert (contact["phone"], contact["preferred_contact"], contact["email_opt_out"]) == ("+1 555 0100", "sms", False)
    assert opted_out["email_opt_out"] is True
    assert (str(activated["plan_id"]), activated["infusion_minutes"], activated["drugs"][0]["dose"]) == (first["id"], 150, 30)
    assert (str(replaced["plan_id"]), str(replaced["replaced_by_plan_id"])) == (first["id"], second["id"])
    assert (str(reactivated["plan_id"]), str(reactivated["replaces_plan_id"]), reactivated["infusion_minutes"]) == (
        second["id"], first["id"], 240)
    assert [(drug["name"], drug["dose"], drug["max_per_24h"]) for drug in reactivated["drugs"]] == [("ketorolac", 15, None)]
    assert (str(retired["plan_id"]), retired["replaced_by_plan_id"]) == (second["id"], None)
    assert (contact["contact_version"], opted_out["contact_version"]) == (1, 2)
    assert [event["plan_sequence"] for event in (activated, replaced, reactivated, retired)] == [1, 2, 3, 4]
    eventually(lambda: pending_count(records_engine, db.outbox) == 0, message="the outbox drained")


def session_completed(patient_id: str, session_id: str | None = None, **changes) -> events.Event:
    started = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
    data = {"session_id": session_id or str(uuid.uuid4()), "appointment_id": str(uuid.uuid4()), "patient_id": patient_id,
            "room_id": str(uuid.uuid4()), "room_name": "Infusion 3", "started_at": started, "ended_at": started + timedelta(minutes=150),
            "drugs_given": [{"name": "ketorolac", "dose": "30", "unit": "mg", "route": "IV", "given_at": started + timedelta(minutes=10)},
                            {"name": "normal saline", "dose": "1000", "unit": "mL", "route": "IV", "rate": "500 mL/h",
                             "given_at": started + timedelta(minutes=5)}],
            "pain_before": 8, "pain_after": 2, "highest_news2": 5,
            "alerts": [{"level": "urgent", "news2_score": 5, "observed_at": started + timedelta(minutes=45)}], **changes}
    return events.Event(type="sessions.session.completed", producer="sessions",
                        data=events.serialise_payload("sessions.session.completed", data))


def dead_letters(settings) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    try:
        return connection.channel().queue_declare(settings.dead_letter_queue, passive=True).method.message_count
    finally:
        connection.close()


def encounters_of(engine, session_id: str) -> list[dict]:
    with engine.connect() as connection:
        query = sa.select(db.encounters).where(db.encounters.c.session_id == session_id)
        return [dict(row) for row in connection.execute(query).mappings()]


def test_a_completed_session_becomes_exactly_one_encounter_however_often_it_arrives(client, records_engine, worker, publish):
    patient = register(client)
    completed = session_completed(patient["id"])
    announced_again = session_completed(patient["id"], session_id=str(completed.data["session_id"]))  # same session, new event id
    later = session_completed(patient["id"])
    for event in (completed, completed, announced_again, later):
        publish(event)

    # One consumer handles its queue in order: once `later` is in, every copy before it was handled.
    eventually(lambda: encounters_of(records_engine, str(later.data["session_id"])), timeout=20, message="the later encounter")
    encounter, = encounters_of(records_engine, str(completed.data["session_id"]))
    assert encounter["event_id"] == completed.id
    assert dead_letters(client.settings) == 0, "a session announced twice is acknowledged, not treated as a failure"

    response = client.get(f"/patients/{patient['id']}/encounters", headers=client.as_role("nurse"))
    assert response.status_code == 200
    shown = [row for row in response.get_json() if row["session_id"] == str(completed.data["session_id"])]
    assert len(shown) == 1
    shown = shown[0]
    assert (shown["date"], shown["room_name"], shown["pain_before"], shown["pain_after"], shown["highest_news2"]) == (
        "2026-03-02", "Infusion 3", 8, 2, 5)
    assert [(drug["name"], drug["dose"], drug["unit"], drug["rate"]) for drug in shown["drugs_given"]] == [
        ("ketorolac", "30", "mg", None), ("normal saline", "1000", "mL", "500 mL/h")]
    # An alert from before alerts had kinds reads as a NEWS2 alert that was no escalation.
    assert shown["alerts"] == [{"level": "urgent", "news2_score": 5, "observed_at": "2026-03-02T15:45:00+00:00", "kind": "news2",
                                "escalation": False}]
    assert shown["started_at"].startswith("2026-03-02T15:00:00")


def test_a_session_for_a_patient_records_never_registered_is_kept_in_the_dead_letter_queue(client, records_engine, worker, publish):
    stranger = session_completed(str(uuid.uuid4()))
    publish(stranger)
    eventually(lambda: dead_letters(client.settings) == 1, timeout=30, message="the unknown patient's session in the dead-letter queue")
    assert encounters_of(records_engine, str(stranger.data["session_id"])) == []
