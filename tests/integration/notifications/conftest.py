"""The notifications test modules' fixtures: a migrated notifications database (each test once on
PostgreSQL and once on SQLite), a settable clock, a real SMTP server on loopback (the sink), and the
mail log with its sender pointed at that sink (the desk)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from clinic.db import create_engine, rows_of
from clinic.migrations import migrate
from clinic.testing.clock import Clock
from clinic.unit_of_work import UnitOfWork
from notifications import db
from notifications.compose import Composed
from notifications.config import MailSettings
from notifications.db import messages
from notifications.services import sending
from tests.support.smtp_sink import SmtpSink


@pytest.fixture(params=["postgresql", "sqlite"])
def notifications_database(request, postgres, tmp_path):
    """The URL of a freshly migrated notifications database, once on PostgreSQL and once on SQLite."""
    if request.param == "postgresql":
        url = postgres.create_database("notifications")
    else:
        url = f"sqlite:///{tmp_path / 'notifications.db'}"
    engine = create_engine(url)
    migrate(engine, db.MIGRATIONS)
    engine.dispose()
    yield url
    if request.param == "postgresql":
        postgres.drop_database(url)


@pytest.fixture
def notifications_engine(notifications_database):
    engine = create_engine(notifications_database, timeout_seconds=15)
    yield engine
    engine.dispose()


@pytest.fixture
def clock():
    """Monday 7 January 2030, 14:00 UTC, until a test moves it."""
    return Clock(datetime(2030, 1, 7, 14, 0, tzinfo=timezone.utc))


@pytest.fixture
def smtp_sink():
    """The mail sink (tests.support.smtp_sink), started, and stopped after the test."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


# What the stand-in composer puts in every message, for tests that look for it where it must not be.
BODY_WORDS = "Bring a laptop"


ICS = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"


def stand_in_compose(kind, context, contact, clinic):
    """A composer that renders what the sender needs to show: the kind, a value from the context, the
    contact's name, and a calendar for appointments; it fails as a template does on a missing value."""
    name = f"{contact['given_name']} {contact['family_name']}" if contact else "colleague"
    text = f"Dear {name}, your {kind} at {context['room']}. {BODY_WORDS}. {clinic.clinic_name}"
    calendar = ICS if context.get("calendar") else None
    return Composed(subject=f"{kind} at {context['room']}", text=text, html=f"<p>{text}</p>", calendar=calendar,
                    calendar_method="REQUEST" if calendar else None)


@pytest.fixture
def mail_settings(smtp_sink):
    return MailSettings(smtp_port=smtp_sink.port, mail_from="desk@clinic.example", clinic_name="Riverside Infusion",
                        send_retry_seconds=(5, 30, 120, 600))


class Desk:
    """The mail log under test: contacts, queued messages, the sender run as the worker's job runs it."""

    def __init__(self, engine, clock, mail_settings):
        self.engine, self.clock, self.mail_settings = engine, clock, mail_settings

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.engine, db.metadata, "notifications", clock=self.clock)

    def patient(self, email: str | None, given_name: str = "Ida", **changes) -> str:
        patient_id = str(uuid.uuid4())
        contact = {"patient_id": patient_id, "given_name": given_name, "family_name": "Berg", "email": email,
                   "phone": None, "preferred_contact": "email", "email_opt_out": False,
                   "changed_at": self.clock(), "version": 1, **changes}
        with self.uow() as uow:
            db.keep_contact(uow.connection, contact)
        return patient_id

    def queue(self, patient_id: str, kind: str = "infusion_booked", **context) -> str:
        event_id = str(uuid.uuid4())
        with self.uow() as uow:
            status = messages.queue_for_patient(uow, event_id, kind, patient_id, {"room": "Room 3", **context})
        assert status == messages.QUEUED
        return event_id

    def send(self, compose=stand_in_compose, **options) -> sending.Outcome:
        return sending.send_due(self.uow(), self.mail_settings, compose, **options)

    def rows(self, **where) -> list[dict]:
        query = sa.select(messages.messages).order_by(messages.messages.c.created_at, messages.messages.c.id)
        for column, value in where.items():
            query = query.where(messages.messages.c[column] == value)
        with self.engine.connect() as connection:
            return rows_of(connection, query)


@pytest.fixture
def desk(notifications_engine, clock, mail_settings):
    return Desk(notifications_engine, clock, mail_settings)
