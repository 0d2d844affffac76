"""The mail log: one row per (event, template, recipient), from the event that caused it to the
message's fate (sent, failed for good, or skipped with the reason).

The queue functions work inside the caller's unit of work (a handler's, which is the inbox's
transaction, or a job's `with uow:` block): they never open or end a transaction themselves. The
sender's claims and marks (notifications.services.sending) are here too, as plain statements.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from clinic.db import UtcDateTime, is_postgresql, new_id, newest_upsert, row_of, rows_of
from notifications.db import contacts, get_contact, metadata
from notifications.mail import message_id_for

WAITING_FOR_CONTACT = "waiting_for_contact"
QUEUED = "queued"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (WAITING_FOR_CONTACT, QUEUED, SENT, FAILED, SKIPPED)

KINDS = ("infusion_booked", "rescheduled", "cancelled", "no_show", "reminder", "post_infusion",
         "follow_up_booked", "staff_alert")

NO_EMAIL = "no email address"
OPTED_OUT = "opted out of email"
NO_CONTACT_IN_TIME = "no contact details arrived in time"
APPOINTMENT_CHANGED = "the appointment was changed or cancelled before the reminder went"

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    # The event that caused the message; for a reminder, an id derived from the appointment and its
    # version. With kind and recipient it is the message's identity: one email per (event, template, recipient).
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    # The email address, or `patient:<id>` while there is none to send to (waiting, skipped).
    sa.Column("recipient", sa.String(254), nullable=False),
    sa.Column("patient_id", sa.String(36), nullable=True),
    sa.Column("appointment_id", sa.String(36), nullable=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    # The exception's class and the SMTP code: never a body or an address.
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    # A sender's lease: until then no other sender takes the message.
    sa.Column("claimed_until", UtcDateTime(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("sent_at", UtcDateTime(), nullable=True),
    # What the templates need; never the patient's name or address (those come from the contact copy).
    sa.Column("context", sa.JSON(), nullable=False),
    sa.Column("message_id", sa.String(200), nullable=True),
    sa.Column("preferred_contact", sa.String(10), nullable=True),
    sa.UniqueConstraint("event_id", "kind", "recipient", name="uq_messages_event_kind_recipient"),
    sa.Index("ix_messages_due", "status", "next_attempt_at"),
    sa.Index("ix_messages_patient", "patient_id", "created_at"),
    sa.Index("ix_messages_created", "created_at"),
)


def patient_key(patient_id: str) -> str:
    """The recipient of a patient's message while no address is known."""
    return f"patient:{patient_id}"


def addressed(contact: dict | None, patient_id: str) -> dict:
    """Where a patient's message goes, from the contact copy: status, recipient, reason, message preference."""
    if contact is None:
        return {"status": WAITING_FOR_CONTACT, "recipient": patient_key(patient_id), "reason": None,
                "preferred_contact": None}
    preferred = contact.get("preferred_contact")
    if contact.get("email_opt_out"):
        return {"status": SKIPPED, "recipient": patient_key(patient_id), "reason": OPTED_OUT, "preferred_contact": preferred}
    if not contact.get("email"):
        return {"status": SKIPPED, "recipient": patient_key(patient_id), "reason": NO_EMAIL, "preferred_contact": preferred}
    return {"status": QUEUED, "recipient": contact["email"], "reason": None, "preferred_contact": preferred}


def _insert_once(connection: Connection, row: dict) -> bool:
    """Insert the row unless one with its (event, kind, recipient) is there; True when inserted."""
    statement = _insert_once_statements.get(connection.dialect.name)
    if statement is None:
        if is_postgresql(connection):
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        # Built once per dialect, the row given as parameters (see notifications.db).
        statement = _insert_once_statements[connection.dialect.name] = insert(messages).on_conflict_do_nothing(
            index_elements=[messages.c.event_id, messages.c.kind, messages.c.recipient],
        ).execution_options(preserve_rowcount=True)
    return connection.execute(statement, row).rowcount == 1


_insert_once_statements: dict[str, sa.Insert] = {}


def _new_row(event_id: str, kind: str, context: dict, now: datetime, *, recipient: str, status: str,
             patient_id: str | None = None, appointment_id: str | None = None, reason: str | None = None,
             preferred_contact: str | None = None) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    return {"id": new_id(), "event_id": event_id, "kind": kind, "recipient": recipient, "patient_id": patient_id,
            "appointment_id": appointment_id, "status": status, "reason": reason, "attempts": 0,
            "next_attempt_at": now, "created_at": now, "updated_at": now, "context": context,
            "message_id": message_id_for(event_id, kind, recipient) if status == QUEUED else None,
            "preferred_contact": preferred_contact}


def queue_for_patient(uow, event_id: str, kind: str, patient_id: str, context: dict,
                      appointment_id: str | None = None) -> str | None:
    """Record a message to a patient in the mail log, inside the caller's unit of work: `queued` to
    the contact's address, `skipped` with the reason (no address, opted out), or `waiting_for_contact`
    when no contact copy has arrived yet. A redelivered event records nothing twice.

    Returns the status recorded, or None when the message was in the log already."""
    where = addressed(get_contact(uow.connection, patient_id), patient_id)
    row = _new_row(event_id, kind, context, uow.now, patient_id=patient_id, appointment_id=appointment_id, **where)
    return row["status"] if _insert_once(uow.connection, row) else None


def queue_for_staff(uow, event_id: str, kind: str, addresses: list[str] | tuple[str, ...], context: dict) -> int:
    """Queue one message per on-call address, inside the caller's unit of work; how many were new."""
    return sum(_insert_once(uow.connection, _new_row(event_id, kind, context, uow.now, recipient=address, status=QUEUED))
               for address in addresses)


def keep_contact_finding_waiting(connection: Connection, contact: dict) -> tuple[bool, bool]:
    """notifications.db.keep_contact, telling in the same round trip whether any of the patient's
    messages wait for a contact: (stored, waiting). `waiting` is False when the copy was not stored.

    A contact change arrives for every patient, a message waits only for a patient whose contact
    has not come yet: most changes need no second statement."""
    statement = _contact_statements.get((connection.dialect.name, frozenset(contact)))
    if statement is None:
        statement = newest_upsert(contacts, tuple(contact), ("patient_id",), connection.dialect.name).returning(
            # A named parameter, not contacts.c.patient_id: SQLAlchemy does not correlate a subquery
            # in RETURNING with the table written, and would read the whole contacts table instead.
            sa.exists().where(messages.c.patient_id == sa.bindparam("waiting_patient_id"),
                              messages.c.status == WAITING_FOR_CONTACT))
        _contact_statements[(connection.dialect.name, frozenset(contact))] = statement
    # RETURNING gives a row only when the upsert wrote one.
    written = connection.execute(statement, {**contact, "waiting_patient_id": contact["patient_id"]}).first()
    return written is not None, bool(written is not None and written[0])


_contact_statements: dict[tuple[str, frozenset], sa.Insert] = {}


# Built once, with bind parameters (see notifications.db). FOR UPDATE: a release of the same patient's
# messages in another worker waits for this one (SQLite has no FOR UPDATE: SQLAlchemy leaves it out
# there, and the write lock taken at BEGIN serialises writers).
_waiting = (sa.select(messages)
            .where(messages.c.patient_id == sa.bindparam("patient_id"), messages.c.status == WAITING_FOR_CONTACT)
            .with_for_update())
_in_log = sa.select(messages.c.id).where(messages.c.event_id == sa.bindparam("event_id"),
                                         messages.c.kind == sa.bindparam("kind"),
                                         messages.c.recipient == sa.bindparam("recipient"))


def release_waiting(uow, patient_id: str) -> int:
    """The patient's contact copy has arrived: their waiting messages become queued to the address
    (or skipped with the reason). Inside the caller's unit of work; how many were released."""
    connection = uow.connection
    where = addressed(get_contact(connection, patient_id), patient_id)
    if where["status"] == WAITING_FOR_CONTACT:
        return 0
    released = 0
    for message in connection.execute(_waiting, {"patient_id": patient_id}).mappings().all():
        change = {**where, "updated_at": uow.now, "next_attempt_at": uow.now}
        if where["status"] == QUEUED:
            change["message_id"] = message_id_for(message["event_id"], message["kind"], where["recipient"])
            duplicate = {"event_id": message["event_id"], "kind": message["kind"], "recipient": where["recipient"]}
            if connection.execute(_in_log, duplicate).first() is not None:
                # The same message to the same address is in the log already (an event delivered again).
                change = {"status": SKIPPED, "reason": "already in the mail log", "updated_at": uow.now}
        connection.execute(sa.update(messages).where(messages.c.id == message["id"]).values(**change))
        released += 1
    return released


def skip_outdated_reminders(uow, appointment_id: str) -> int:
    """The appointment has changed (rescheduled, cancelled, missed): its reminders not sent yet would
    name the old time, or an appointment that is off, and are skipped with the reason (a rescheduled one
    gets a reminder of its new version from the job). One a sender holds now is past stopping, and is
    left for the sender to mark. Inside the caller's unit of work; how many were skipped."""
    skipped = uow.connection.execute(_outdated_reminders, {"changed_appointment": appointment_id, "now": uow.now})
    return skipped.rowcount


# Built once, with bind parameters (see notifications.db): every appointment event runs it.
_outdated_reminders = (
    sa.update(messages)
    .where(messages.c.appointment_id == sa.bindparam("changed_appointment"), messages.c.kind == "reminder",
           messages.c.status.in_((QUEUED, WAITING_FOR_CONTACT)),
           sa.or_(messages.c.claimed_until.is_(None), messages.c.claimed_until <= sa.bindparam("now", type_=UtcDateTime())))
    .values(status=SKIPPED, reason=APPOINTMENT_CHANGED, updated_at=sa.bindparam("now", type_=UtcDateTime()))
    .execution_options(preserve_rowcount=True))


def skip_stale_waiting(uow, older_than: timedelta) -> int:
    """The job for messages still waiting for a contact: those whose contact has arrived meanwhile are
    released (a contact that committed while the event was being recorded); those waiting longer than
    `older_than` are skipped with the reason. Inside the caller's unit of work; how many were skipped."""
    connection = uow.connection
    arrived = sa.select(messages.c.patient_id).distinct().where(
        messages.c.status == WAITING_FOR_CONTACT,
        sa.exists().where(contacts.c.patient_id == messages.c.patient_id))
    for patient_id in connection.execute(arrived).scalars().all():
        release_waiting(uow, patient_id)
    skipped = connection.execute(
        sa.update(messages)
        .where(messages.c.status == WAITING_FOR_CONTACT, messages.c.created_at <= uow.now - older_than)
        .values(status=SKIPPED, reason=NO_CONTACT_IN_TIME, updated_at=uow.now)
        .execution_options(preserve_rowcount=True))
    return skipped.rowcount


# --- the sender's statements ------------------------------------------------------------------------


def claim_due(connection: Connection, now: datetime, lease: timedelta, limit: int) -> list[dict]:
    """Take up to `limit` queued messages that are due and not leased to another sender, leasing them
    until now + lease (FOR UPDATE SKIP LOCKED on PostgreSQL: two senders never take the same one;
    SQLite's write lock serialises them). Each comes with its contact copy under "contact"."""
    due = (sa.select(messages.c.id)
           .where(messages.c.status == QUEUED, messages.c.next_attempt_at <= now,
                  sa.or_(messages.c.claimed_until.is_(None), messages.c.claimed_until <= now))
           .order_by(messages.c.next_attempt_at, messages.c.created_at)
           .limit(limit))
    if is_postgresql(connection):
        due = due.with_for_update(skip_locked=True)
    ids = connection.execute(due).scalars().all()
    if not ids:
        return []
    connection.execute(sa.update(messages).where(messages.c.id.in_(ids)).values(claimed_until=now + lease))
    claimed = rows_of(connection, sa.select(messages).where(messages.c.id.in_(ids))
                      .order_by(messages.c.next_attempt_at, messages.c.created_at))
    for message in claimed:
        message["contact"] = get_contact(connection, message["patient_id"]) if message["patient_id"] else None
    return claimed


def mark_sent(connection: Connection, message_id: str, now: datetime) -> None:
    connection.execute(sa.update(messages).where(messages.c.id == message_id, messages.c.status == QUEUED)
                       .values(status=SENT, sent_at=now, claimed_until=None, updated_at=now, last_error=None))


def mark_failed(connection: Connection, message_id: str, now: datetime, reason: str) -> None:
    """Failed for good: the server refused the recipient, or the message could not be rendered."""
    connection.execute(sa.update(messages).where(messages.c.id == message_id, messages.c.status == QUEUED)
                       .values(status=FAILED, reason=reason[:200], last_error=reason[:500], claimed_until=None,
                               updated_at=now, attempts=messages.c.attempts + 1))


def mark_skipped(connection: Connection, message_id: str, now: datetime, reason: str) -> None:
    """Not sent after all: the patient opted out or removed their address after it was queued."""
    connection.execute(sa.update(messages).where(messages.c.id == message_id, messages.c.status == QUEUED)
                       .values(status=SKIPPED, reason=reason, claimed_until=None, updated_at=now))


def retry_later(connection: Connection, message_id: str, now: datetime, error: str,
                delays: tuple[float, ...]) -> None:
    """Failed for now: attempts + 1, and the next attempt after the delay for that many attempts
    (the last delay repeats: a server that stays down is tried for ever, nothing is dropped)."""
    [attempts] = connection.execute(sa.select(messages.c.attempts).where(messages.c.id == message_id)).one()
    delay = delays[min(attempts, len(delays) - 1)]
    connection.execute(sa.update(messages).where(messages.c.id == message_id, messages.c.status == QUEUED)
                       .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=delay),
                               last_error=error[:500], claimed_until=None, updated_at=now))


def get_message(connection: Connection, message_id: str) -> dict | None:
    return row_of(connection, sa.select(messages).where(messages.c.id == message_id))
