"""The mail log's queue functions: a patient's message queued, skipped with the reason or waiting for
the contact; released when it arrives or skipped after the configured wait; never recorded twice.
Its migration builds exactly the table and goes down again. On PostgreSQL and on SQLite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from clinic.db import rows_of
from clinic.migrations import migrate
from clinic.testing.migrations import downgrade, schema_differences
from clinic.unit_of_work import UnitOfWork
from notifications import db
from notifications.config import MailSettings
from notifications.db import messages
from notifications.mail import message_id_for
from notifications.services import sending

CONTEXT = {"room_name": "Room 3"}


def uow_on(engine, clock) -> UnitOfWork:
    return UnitOfWork(engine, db.metadata, "notifications", clock=clock)


def keep_contact(engine, clock, patient_id, email, **changes):
    contact = {"patient_id": patient_id, "given_name": "Ida", "family_name": "Berg", "email": email, "phone": None,
               "preferred_contact": "email", "email_opt_out": False, "changed_at": clock(), "version": 1, **changes}
    with uow_on(engine, clock) as uow:
        db.keep_contact(uow.connection, contact)


def queue(engine, clock, patient_id, event_id=None, kind="infusion_booked"):
    with uow_on(engine, clock) as uow:
        return messages.queue_for_patient(uow, event_id or str(uuid.uuid4()), kind, patient_id, CONTEXT)


def rows_of_patient(engine, patient_id):
    with engine.connect() as connection:
        return rows_of(connection, sa.select(messages.messages).where(messages.messages.c.patient_id == patient_id))


def test_a_patient_with_an_address_is_queued_once_however_often_the_event_comes(notifications_engine, clock):
    patient = str(uuid.uuid4())
    keep_contact(notifications_engine, clock, patient, "ida@example.org", preferred_contact="sms")
    event = str(uuid.uuid4())

    assert queue(notifications_engine, clock, patient, event) == messages.QUEUED
    assert queue(notifications_engine, clock, patient, event) is None

    [row] = rows_of_patient(notifications_engine, patient)
    assert row["recipient"] == "ida@example.org" and row["preferred_contact"] == "sms"
    assert row["message_id"] == message_id_for(event, "infusion_booked", "ida@example.org")
    assert row["context"] == CONTEXT and row["attempts"] == 0 and row["next_attempt_at"] == clock()


def test_no_address_or_an_opt_out_is_skipped_with_the_reason(notifications_engine, clock):
    no_address, opted_out = str(uuid.uuid4()), str(uuid.uuid4())
    keep_contact(notifications_engine, clock, no_address, None, preferred_contact="phone")
    keep_contact(notifications_engine, clock, opted_out, "ida@example.org", email_opt_out=True)

    assert queue(notifications_engine, clock, no_address) == messages.SKIPPED
    assert queue(notifications_engine, clock, opted_out) == messages.SKIPPED

    [row] = rows_of_patient(notifications_engine, no_address)
    assert (row["reason"], row["recipient"], row["preferred_contact"]) == (messages.NO_EMAIL, f"patient:{no_address}", "phone")
    [row] = rows_of_patient(notifications_engine, opted_out)
    assert (row["reason"], row["recipient"]) == (messages.OPTED_OUT, f"patient:{opted_out}")


def test_a_message_waits_for_the_contact_and_is_queued_when_it_arrives(notifications_engine, clock):
    patient = str(uuid.uuid4())
    event = str(uuid.uuid4())
    assert queue(notifications_engine, clock, patient, event) == messages.WAITING_FOR_CONTACT
    assert queue(notifications_engine, clock, patient, event) is None

    keep_contact(notifications_engine, clock, patient, "ida@example.org")
    with uow_on(notifications_engine, clock) as uow:
        assert messages.release_waiting(uow, patient) == 1

    [row] = rows_of_patient(notifications_engine, patient)
    assert row["status"] == messages.QUEUED and row["recipient"] == "ida@example.org"
    assert row["message_id"] == message_id_for(event, "infusion_booked", "ida@example.org")
    # The event delivered again after the release records nothing new.
    assert queue(notifications_engine, clock, patient, event) is None
    assert len(rows_of_patient(notifications_engine, patient)) == 1


def test_messages_waiting_too_long_are_skipped_and_those_whose_contact_came_are_released(notifications_engine, clock):
    forgotten, late = str(uuid.uuid4()), str(uuid.uuid4())
    queue(notifications_engine, clock, forgotten)
    queue(notifications_engine, clock, late)
    # The contact committed without releasing (it raced the message being recorded).
    keep_contact(notifications_engine, clock, late, "late@example.org")
    mail_settings = MailSettings(contact_wait_minutes=60)

    clock.advance(minutes=59)
    assert sending.expire_waiting(uow_on(notifications_engine, clock), mail_settings) == 0
    assert rows_of_patient(notifications_engine, late)[0]["status"] == messages.QUEUED
    assert rows_of_patient(notifications_engine, forgotten)[0]["status"] == messages.WAITING_FOR_CONTACT

    clock.advance(minutes=1)
    assert sending.expire_waiting(uow_on(notifications_engine, clock), mail_settings) == 1
    [row] = rows_of_patient(notifications_engine, forgotten)
    assert row["status"] == messages.SKIPPED and row["reason"] == messages.NO_CONTACT_IN_TIME
    assert clock() - row["created_at"] == timedelta(minutes=60)


def mail_log_differences(engine) -> list:
    """What the database differs in from the mail log's table (other tables have their own tests)."""
    return [difference for difference in schema_differences(engine, db.metadata) if "messages" in repr(difference)]


def test_the_mail_log_migration_builds_the_table_and_goes_down_again(notifications_engine):
    assert mail_log_differences(notifications_engine) == []
    downgrade(notifications_engine, db.MIGRATIONS, "0002")
    assert "messages" not in sa.inspect(notifications_engine).get_table_names()
    migrate(notifications_engine, db.MIGRATIONS)
    assert mail_log_differences(notifications_engine) == []
