"""A contact change releases the patient's waiting messages, telling from the copy's own upsert whether
any wait: through the inbox, on PostgreSQL and SQLite."""

from __future__ import annotations

from clinic import events
from clinic.inbox import APPLIED, apply_batch
from notifications import db
from notifications.db import messages
from tests.integration.notifications.test_mail_log import Post, new_id, sent


def left_waiting(post: Post, patient: str) -> str:
    """A message recorded as waiting although a copy is there (one whose transaction read no copy
    while the copy's was committing)."""
    with post.uow() as uow:
        row = messages._new_row(new_id(), "reminder", {}, uow.now, recipient=messages.patient_key(patient),
                                status=messages.WAITING_FOR_CONTACT, patient_id=patient)
        assert messages._insert_once(uow.connection, row)
    return row["id"]


def test_a_newer_contact_releases_a_message_left_waiting(notifications_engine, clock):
    post = Post(notifications_engine, clock)
    patient = post.contact(email="first@example.org", version=1)
    waiting = left_waiting(post, patient)

    post.contact(patient, email="second@example.org", version=2)

    [row] = post.rows(id=waiting)
    assert (row["status"], row["recipient"]) == ("queued", "second@example.org")


def test_an_older_contact_releases_a_message_left_waiting_to_the_newer_copy(notifications_engine, clock):
    post = Post(notifications_engine, clock)
    patient = post.contact(email="newer@example.org", version=2)
    waiting = left_waiting(post, patient)

    post.contact(patient, email="older@example.org", version=1)

    [row] = post.rows(id=waiting)
    assert (row["status"], row["recipient"]) == ("queued", "newer@example.org")


def test_another_patients_contact_leaves_a_message_waiting(notifications_engine, clock):
    post = Post(notifications_engine, clock)
    patient = new_id()
    post.book(patient)
    post.contact(new_id())

    [row] = post.rows(patient_id=patient)
    assert row["status"] == "waiting_for_contact"


def test_a_contact_in_the_same_batch_as_the_booking_releases_its_message(notifications_engine, clock):
    post = Post(notifications_engine, clock)
    patient = new_id()
    booked = sent(events.APPOINTMENT_BOOKED, post.booking(patient))
    contact = sent(events.PATIENT_CONTACT_CHANGED, {
        "patient_id": patient, "given_name": "Ida", "family_name": "Berg", "email": "same.batch@example.org",
        "phone": None, "preferred_contact": "email", "email_opt_out": False, "contact_version": 1})
    outcomes = apply_batch(notifications_engine, db.metadata, "notifications",
                           [(booked, post.handlers[booked.type]), (contact, post.handlers[contact.type])], clock=clock)

    assert outcomes == [APPLIED, APPLIED]
    [row] = post.rows(patient_id=patient)
    assert (row["status"], row["recipient"]) == ("queued", "same.batch@example.org")
