"""The consumer holds an event's correlation id to what the HTTP edge holds a caller's to.

The id is written on every log line of the work and into every event that work causes; an envelope's
correlation_id is free text to the schema, so one holding a newline would forge log lines in the
consumer and travel on to every service downstream.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from clinic import events
from clinic.correlation import current_correlation_id
from clinic.db import create_engine, messaging_tables
from clinic.inbox import APPLIED, apply_once

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'inbox.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _applied_with(engine, correlation_id):
    seen = []
    event = events.Event(type=events.PATIENT_REGISTERED, data={"patient_id": str(uuid.uuid4())}, producer="records",
                         correlation_id=correlation_id)
    assert apply_once(engine, metadata, "notifications", event, lambda uow, event: seen.append(current_correlation_id())) == APPLIED
    return seen[0]


@pytest.mark.parametrize("offered", ["x\n2026-01-01 INFO forged line", "Maria Silva", "a" * 10_000])
def test_an_event_s_correlation_id_that_is_not_a_uuid_is_replaced(engine, offered):
    seen = _applied_with(engine, offered)
    assert seen != offered and str(uuid.UUID(seen)) == seen


def test_an_event_s_uuid_correlation_id_is_kept_and_none_stays_none(engine):
    given = str(uuid.uuid4())
    assert _applied_with(engine, given) == given
    assert _applied_with(engine, None) is None
