"""A probe service for testing the shared bus, outbox and inbox with an effect that is NOT idempotent.

Each applied event inserts a row into `applied` (no unique key), so an event applied
twice shows up as two rows. Its event types are registered for tests only. Beside them, one event of a
real service (records' patient.registered), for the tests of who may publish what.
"""

from __future__ import annotations

import sqlalchemy as sa
from marshmallow import Schema, fields

from clinic import bus, events
from clinic.db import messaging_tables
from clinic.outbox import outbox_row


class ProbeData(Schema):
    sequence = fields.Integer(required=True)


THING = "probe.thing.happened"
POISON = "probe.poison.happened"
UNHEARD = "probe.unheard.happened"
for _type in (THING, POISON, UNHEARD):
    events.register(_type, 1, ProbeData)

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
applied = sa.Table(
    "applied",
    metadata,
    sa.Column("row", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
)


def record_thing(uow, event) -> None:
    uow.connection.execute(applied.insert().values(event_id=event.id, sequence=event.data["sequence"]))


def always_fail(uow, event) -> None:
    raise RuntimeError("this handler always fails")


HANDLERS = {THING: record_thing, POISON: always_fail}


def write_events(engine, count: int, event_type: str = THING, start: int = 0, per_transaction: int = 200) -> None:
    for first in range(start, start + count, per_transaction):
        with engine.begin() as connection:
            for sequence in range(first, min(first + per_transaction, start + count)):
                connection.execute(outbox.insert(), outbox_row("probe", event_type, {"sequence": sequence}))


def applied_counts(engine) -> tuple[int, int]:
    """(rows applied, distinct events applied)."""
    with engine.connect() as connection:
        total = connection.execute(sa.select(sa.func.count()).select_from(applied)).scalar_one()
        distinct = connection.execute(sa.select(sa.func.count(sa.distinct(applied.c.event_id)))).scalar_one()
    return total, distinct


def thing(sequence: int, event_type: str = THING) -> events.Event:
    """A probe event carrying its sequence number."""
    return events.Event(type=event_type, data={"sequence": sequence}, producer="probe")


# The patient in registered(): logs must never name a patient, so a test may look for this id in them.
REGISTERED_PATIENT_ID = "5f0c1d52-3c09-4d5c-8d8e-1f7f5b5f0a11"


def registered() -> events.Event:
    """records' patient.registered, as records' relay would publish it."""
    return events.Event(type=events.PATIENT_REGISTERED, producer="records",
                        data=events.serialise_payload(events.PATIENT_REGISTERED, {"patient_id": REGISTERED_PATIENT_ID}))


def publish(settings, *sent: events.Event) -> None:
    """Publish events straight to the exchange (confirmed), as a producer's relay would."""
    publisher = bus.Publisher(settings)
    try:
        for event in sent:
            publisher.publish(event.type, event.id, event.to_json())
    finally:
        publisher.close()
