"""Records' one handler when events come late: sessions.session.completed whose transaction failed is
applied again from the start, and one overtaken by the same session announced again adds nothing.
Applied through the inbox with records' own handler, on PostgreSQL and on SQLite."""

from __future__ import annotations

from clinic import events
from clinic.inbox import APPLIED, FAILED, apply_once
from records import SERVICE, db
from records.handlers import HANDLERS
from tests.integration.records.support import register
from tests.integration.records.test_records_worker import encounters_of, session_completed


def delivered(engine, event: events.Event, handler=None) -> str:
    """The event loaded as received, applied through the inbox as records' worker applies it."""
    event = events.parse(event.to_json())
    return apply_once(engine, db.metadata, SERVICE, event, handler or HANDLERS[event.type])


def failing_after(handler):
    """The handler, then a failure in the same transaction (the batch's next statement, the commit)."""
    def handle(uow, event):
        handler(uow, event)
        raise RuntimeError("the transaction failed after the handler")
    return handle


def test_a_completed_session_whose_transaction_failed_left_no_encounter_and_is_recorded_once_when_retried(client, records_engine):
    patient = register(client)
    completed = session_completed(patient["id"])
    session_id = str(completed.data["session_id"])

    assert delivered(records_engine, completed, failing_after(HANDLERS[completed.type])) == FAILED
    assert encounters_of(records_engine, session_id) == []

    assert delivered(records_engine, completed) == APPLIED
    [encounter] = encounters_of(records_engine, session_id)
    assert encounter["event_id"] == completed.id


def test_a_retried_completion_overtaken_by_the_same_session_announced_again_adds_nothing(client, records_engine):
    patient = register(client)
    first = session_completed(patient["id"])
    again = session_completed(patient["id"], session_id=str(first.data["session_id"]))

    assert delivered(records_engine, again) == APPLIED
    assert delivered(records_engine, first) == APPLIED
    [encounter] = encounters_of(records_engine, str(first.data["session_id"]))
    assert encounter["event_id"] == again.id
