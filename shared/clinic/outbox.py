"""The transactional outbox: events are rows written in the business transaction, published later.

A use case writes its events with its unit of work (clinic.unit_of_work), inside the
transaction that makes the change, so the event exists exactly when the change does.
The `Relay` publishes unpublished rows in order, with publisher confirms, and marks a
row published only after the broker confirmed it. While the broker is away it retries
with backoff; rows wait, none are lost. A relay killed between the confirm and the mark
publishes the row again after restart: consumers' inboxes make that harmless.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clinic import bus, events
from clinic.config import Settings
from clinic.correlation import current_correlation_id
from clinic.db import is_postgresql, is_unavailable, utcnow

log = logging.getLogger(__name__)

# The relay's advisory lock: one relay replica of a service publishes at a time, which keeps the
# service's events in order; another replica takes over as soon as it stops.
_RELAY_LOCK_KEY = 0x6F7574626F78  # "outbox"


def outbox_row(producer: str, event_type: str, data: dict, version: int = 1) -> dict:
    """The outbox row that carries an event, its payload checked against the shared schema
    (UnitOfWork.add_event writes it; UnitOfWork.event_row hands it to a statement that writes it
    together with the change itself)."""
    payload = events.serialise_payload(event_type, data, version)
    event = events.Event(type=event_type, version=version, data=payload, producer=producer, correlation_id=current_correlation_id())
    return {"event_id": event.id, "event_type": event.type, "body": event.to_json(), "created_at": event.occurred_at, "attempts": 0}


class Relay:
    """Publishes a service's outbox rows to the exchange, in order, marking each only once confirmed."""

    def __init__(self, settings: Settings, engine: Engine, outbox: sa.Table):
        self.settings = settings
        self.engine = engine
        self.outbox = outbox
        self._publisher: bus.Publisher | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        """Loop until stopped: publish what is pending, wait briefly when nothing is."""
        backoff = bus.Backoff(self.settings.reconnect_max_seconds)
        while not self._stopping.is_set():
            try:
                published = self.publish_pending()
                backoff.reset()
                if published == 0:
                    self._idle()
            except bus.BROKER_ERRORS as exc:
                self._drop_publisher()
                delay = backoff.next()
                log.warning("relay: broker unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                self._stopping.wait(delay)
            except Exception as exc:  # noqa: BLE001 - the relay is a thread nobody watches: it must not die
                delay = backoff.next()
                if is_unavailable(exc):
                    log.warning("relay: database unavailable; retrying in %.1fs", delay)
                else:
                    # e.g. a schema not yet migrated: keep trying, loudly, rather than stop beside a live consumer.
                    log.exception("relay: unexpected error; retrying in %.1fs", delay)
                self._stopping.wait(delay)
        self._drop_publisher()

    def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many the broker confirmed."""
        if is_postgresql(self.engine):
            # Replicas may run: the advisory lock lets one publish at a time, in order, and the rows
            # stay locked until they are marked.
            with self.engine.begin() as connection:
                if not connection.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_RELAY_LOCK_KEY))).scalar():
                    return 0
                rows = connection.execute(self._pending().with_for_update(skip_locked=True)).all()
                confirmed, failure = self._publish(rows)
                self._mark(connection, rows, confirmed, failure)
        else:
            # SQLite runs one relay and has one write lock for the whole database: hold it to read and
            # to mark, never while waiting for the broker, so the service's requests are not held up.
            with self.engine.begin() as connection:
                rows = connection.execute(self._pending()).all()
            confirmed, failure = self._publish(rows)
            if rows:
                with self.engine.begin() as connection:
                    self._mark(connection, rows, confirmed, failure)
        if failure is not None:
            raise failure
        return len(confirmed)

    def _pending(self) -> sa.Select:
        return (
            sa.select(self.outbox.c.position, self.outbox.c.event_type, self.outbox.c.event_id, self.outbox.c.body)
            .where(self.outbox.c.published_at.is_(None))
            .order_by(self.outbox.c.position)
            .limit(self.settings.relay_batch_size)
        )

    def _publish(self, rows) -> tuple[list[int], Exception | None]:
        """Publish rows in order until one fails; returns the confirmed positions and the failure."""
        confirmed: list[int] = []
        if not rows:
            return confirmed, None
        try:
            publisher = self._get_publisher()
            for row in rows:
                publisher.publish(row.event_type, row.event_id, row.body)
                confirmed.append(row.position)
        except bus.BROKER_ERRORS as exc:
            return confirmed, exc
        return confirmed, None

    def _mark(self, connection: Connection, rows, confirmed: list[int], failure: Exception | None) -> None:
        """Mark what the broker confirmed (so a flapping broker does not make us resend it), and count
        the attempt on the row that failed, for whoever looks at a stuck outbox."""
        if confirmed:
            connection.execute(
                self.outbox.update()
                .where(self.outbox.c.position.in_(confirmed))
                .values(published_at=utcnow(), attempts=self.outbox.c.attempts + 1)
            )
        if failure is not None:
            connection.execute(
                self.outbox.update()
                .where(self.outbox.c.position == rows[len(confirmed)].position)
                .values(attempts=self.outbox.c.attempts + 1, last_error=type(failure).__name__)
            )

    def _idle(self) -> None:
        """Wait a little for new rows, answering the broker's heartbeats meanwhile so a quiet
        period does not cost the connection."""
        if self._publisher is not None:
            self._publisher.connection.process_data_events(time_limit=self.settings.relay_idle_seconds)
        else:
            self._stopping.wait(self.settings.relay_idle_seconds)

    def _get_publisher(self) -> bus.Publisher:
        if self._publisher is None:
            self._publisher = bus.Publisher(self.settings)
        return self._publisher

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None


def pending_count(engine: Engine, outbox: sa.Table) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))).scalar_one()
