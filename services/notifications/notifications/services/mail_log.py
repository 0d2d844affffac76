"""The mail log as staff see it: the messages, filtered and paged; one message, with its body
rendered again for an admin (notifications.compose, as the sender renders it); a failed or skipped
message sent again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import row_of, rows_of
from clinic.errors import Conflict, NotFound
from clinic.unit_of_work import UnitOfWork
from notifications.db import get_contact
from notifications.db.messages import FAILED, QUEUED, SKIPPED, addressed, get_message, messages
from notifications.mail import message_id_for

# What an admin may send again: a message that went nowhere.
RETRYABLE = (FAILED, SKIPPED)


def find_messages(connection: Connection, *, patient_id: str | None = None, status: str | None = None,
                  kind: str | None = None, since: datetime | None = None, limit: int = 100, offset: int = 0) -> list[dict]:
    """Messages, newest first, filtered by patient, status, kind and creation time (since, inclusive)."""
    query = sa.select(messages)
    if patient_id is not None:
        query = query.where(messages.c.patient_id == patient_id)
    if status is not None:
        query = query.where(messages.c.status == status)
    if kind is not None:
        query = query.where(messages.c.kind == kind)
    if since is not None:
        query = query.where(messages.c.created_at >= since)
    return rows_of(connection, query.order_by(messages.c.created_at.desc(), messages.c.id).limit(limit).offset(offset))


def message(connection: Connection, message_id: str) -> dict:
    """One message; NotFound when there is none with that id."""
    found = get_message(connection, message_id)
    if found is None:
        raise NotFound("no message with this id", {"message_id": message_id})
    return found


def rendered(connection: Connection, message_id: str, clinic, compose: Callable) -> tuple[dict, dict]:
    """One message and its body as the sender would render it now: {subject, text, html} or
    {error: the composition error's class} (a template that fails is what an admin comes to see)."""
    found = message(connection, message_id)
    contact = get_contact(connection, found["patient_id"]) if found["patient_id"] else None
    try:
        composed = compose(found["kind"], found["context"], contact, clinic)
    except Exception as exc:  # noqa: BLE001 - shown to the admin by class: a failed render is worth seeing
        return found, {"error": type(exc).__name__}
    return found, {"subject": composed.subject, "text": composed.text, "html": composed.html,
                   "has_calendar": composed.calendar is not None}


def retry(uow: UnitOfWork, message_id: str) -> dict:
    """Queue a failed or skipped message again, to the patient's address as the contact copy gives
    it now (a patient who has since given an address, or opted in). Conflict when it is not failed
    or skipped, or when the patient still cannot be emailed (the reason in the details)."""
    with uow:
        found = row_of(uow.connection, _locked(uow.connection, message_id))
        if found is None:
            raise NotFound("no message with this id", {"message_id": message_id})
        uow.audit.concerning(patient_id=found["patient_id"], resource_id=message_id)
        if found["status"] not in RETRYABLE:
            raise Conflict(f"only a failed or skipped message is sent again; this one is {found['status']}",
                           {"status": found["status"]})
        recipient = found["recipient"]
        preferred = found["preferred_contact"]
        if found["patient_id"] is not None:
            where = addressed(get_contact(uow.connection, found["patient_id"]), found["patient_id"])
            if where["status"] != QUEUED:
                raise Conflict("the patient cannot be emailed: " + (where["reason"] or "no contact details yet"),
                               {"reason": where["reason"] or "no contact details yet"})
            recipient, preferred = where["recipient"], where["preferred_contact"]
            if recipient != found["recipient"] and _logged(uow.connection, found, recipient):
                raise Conflict("the same message to this address is in the mail log already",
                               {"recipient": recipient})
        uow.connection.execute(sa.update(messages).where(messages.c.id == message_id).values(
            status=QUEUED, recipient=recipient, preferred_contact=preferred, reason=None, attempts=0,
            next_attempt_at=uow.now, claimed_until=None, updated_at=uow.now,
            message_id=message_id_for(found["event_id"], found["kind"], recipient)))
        return get_message(uow.connection, message_id)


def _locked(connection: Connection, message_id: str):
    query = sa.select(messages).where(messages.c.id == message_id)
    # Two admins pressing retry at once: the second waits, then sees it queued.
    return query.with_for_update() if connection.dialect.name == "postgresql" else query


def _logged(connection: Connection, found: dict, recipient: str) -> bool:
    return connection.execute(sa.select(messages.c.id).where(
        messages.c.event_id == found["event_id"], messages.c.kind == found["kind"],
        messages.c.recipient == recipient)).first() is not None
