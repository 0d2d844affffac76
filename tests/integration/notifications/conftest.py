"""The notifications test modules' fixtures: a migrated notifications database (each test once on
PostgreSQL and once on SQLite), a settable clock, and a real SMTP server on loopback (the sink)."""

from __future__ import annotations

import email
import email.policy
import socket
from datetime import datetime, timezone

import pytest
from aiosmtpd.controller import Controller

from clinic.db import create_engine
from clinic.migrations import migrate
from clinic.testing.clock import Clock
from notifications import db


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


class _Collector:
    """aiosmtpd handler: keeps what it accepts; refuses recipients whose mailbox starts with "refused"."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("refused"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


class SmtpSink:
    """A real SMTP server on a loopback port: what it received, and stop()/start() for outages."""

    def __init__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.collector = _Collector()
        self.controller = None

    def start(self) -> None:
        self.controller = Controller(self.collector, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def envelopes(self) -> list[tuple[str, list[str], bytes]]:
        return list(self.collector.received)

    def messages(self) -> list[email.message.EmailMessage]:
        """What was received, parsed back as the recipient's mail program would."""
        return [email.message_from_bytes(content, policy=email.policy.default) for _, _, content in self.envelopes]


@pytest.fixture
def smtp_sink():
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()
