"""A worker whose database goes away pauses and resumes by itself, without losing the event it held."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

from clinic import bus, events
from clinic.db import create_engine
from clinic.migrations import migrate
from clinic.testing import eventually
from clinic.testing.servers import as_publisher_of
from clinic.worker import Worker
from notifications import db
from notifications.config import load_mail_settings
from notifications.handlers import make_handlers


def test_the_notifications_worker_resumes_after_the_database_comes_back(postgres, settings_for):
    url = postgres.create_database("notifications")
    engine = create_engine(url)
    migrate(engine, db.MIGRATIONS)
    settings = settings_for("notifications", url)
    worker = Worker(settings, db.metadata, make_handlers(load_mail_settings(env={})), engine=engine)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.consumer.ready.wait(15)
        patient_id = str(uuid.uuid4())
        contact = {"patient_id": patient_id, "given_name": "Lena", "family_name": "Ortiz", "email": "lena@example.org",
                   "phone": None, "preferred_contact": "email", "email_opt_out": False}
        event = events.Event(type="records.patient.contact_changed", producer="records",
                             data=events.serialise_payload("records.patient.contact_changed", contact))
        postgres.stop_server()
        try:
            publisher = bus.Publisher(as_publisher_of(settings, event.type))   # records' account
            publisher.publish(event.type, event.id, event.to_json())
            # The worker has taken the message (it cannot have applied it): it must hold it, not drop it.
            eventually(lambda: publisher.channel.queue_declare(settings.queue, passive=True).method.message_count == 0,
                       message="the worker to take the message while the database is down")
            publisher.close()
        finally:
            postgres.start_server()

        def copied():
            with engine.connect() as connection:
                return db.get_contact(connection, patient_id)

        stored = eventually(copied, timeout=30, message="the contact copy after the outage")
        assert stored["email"] == "lena@example.org"
    finally:
        worker.stop()
        thread.join(timeout=15)
        engine.dispose()
        postgres.drop_database(url)


def test_two_notifications_workers_keep_the_newest_contact_details(postgres, settings_for):
    """Worker replicas share the queue: a change and the correction right behind it are applied side by side."""
    url = postgres.create_database("notifications")
    engine = create_engine(url)
    migrate(engine, db.MIGRATIONS)
    settings = settings_for("notifications", url)
    workers = [Worker(settings, db.metadata, make_handlers(load_mail_settings(env={})), engine=engine) for _ in range(2)]
    threads = [threading.Thread(target=worker.run, daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        for worker in workers:
            assert worker.consumer.ready.wait(15)
        publisher = bus.Publisher(as_publisher_of(settings, events.PATIENT_CONTACT_CHANGED))   # records' account
        patients = [str(uuid.uuid4()) for _ in range(150)]
        first = datetime.now(timezone.utc)
        for patient_id in patients:
            # The newer change carries the higher version but, from a replica whose clock is behind, the
            # earlier time: the version decides.
            for email, version, occurred_at in (("old@example.org", 1, first), ("new@example.org", 2, first - timedelta(minutes=5))):
                contact = {"patient_id": patient_id, "given_name": "Ida", "family_name": "Berg", "email": email,
                           "phone": None, "preferred_contact": "email", "email_opt_out": False, "contact_version": version}
                event = events.Event(type=events.PATIENT_CONTACT_CHANGED, producer="records", occurred_at=occurred_at,
                                     data=events.serialise_payload(events.PATIENT_CONTACT_CHANGED, contact))
                publisher.publish(event.type, event.id, event.to_json())
        publisher.close()

        def emails():
            with engine.connect() as connection:
                return [(db.get_contact(connection, patient_id) or {}).get("email") for patient_id in patients]

        eventually(lambda: None not in emails(), timeout=30, message="a contact copy for every patient")
        assert set(emails()) == {"new@example.org"}
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=15)
        engine.dispose()
        postgres.drop_database(url)
