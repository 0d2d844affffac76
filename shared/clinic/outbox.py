"""The transactional outbox: events are rows written in the business transaction, published later.

`add_event` is called inside the transaction that makes the change, so the event
exists exactly when the change does. The `Relay` publishes unpublished rows in
order, with publisher confirms, and marks a row published only after the broker
confirmed it. While the broker is away it retries with backoff; rows wait, none
are lost. A relay killed between the confirm and the mark publishes the row
again after restart: consumers' inboxes make that harmless.
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


def add_event(connection: Connection, outbox: sa.Table, producer: str, event_type: str, data: dict, version: int = 1) -> events.Event:
    """Write an event in the caller's transaction. The payload is checked against the shared schema first."""
    payload = events.serialise_payload(event_type, data, version)
    event = events.Event(type=event_type, version=version, data=payload, producer=producer, correlation_id=current_correlation_id())
    connection.execute(
        outbox.insert().values(event_id=event.id, event_type=event.type, body=event.to_json(), created_at=event.occurred_at, attempts=0)
    )
    return event


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
                    self._stopping.wait(self.settings.relay_idle_seconds)
            except bus.BROKER_ERRORS as exc:
                self._drop_publisher()
                delay = backoff.next()
                log.warning("relay: broker unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                self._stopping.wait(delay)
            except sa.exc.DBAPIError as exc:
                delay = backoff.next()
                if is_unavailable(exc):
                    log.warning("relay: database unavailable; retrying in %.1fs", delay)
                else:
                    # e.g. a schema not yet migrated: keep trying rather than die silently beside a live consumer.
                    log.exception("relay: database error; retrying in %.1fs", delay)
                self._stopping.wait(delay)
        self._drop_publisher()

    def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many the broker confirmed."""
        with self.engine.begin() as connection:
            if is_postgresql(connection):
                got_lock = connection.execute(sa.select(sa.func.pg_try_advisory_xact_lock(_RELAY_LOCK_KEY))).scalar()
                if not got_lock:
                    return 0
            query = (
                sa.select(self.outbox.c.position, self.outbox.c.event_type, self.outbox.c.event_id, self.outbox.c.body)
                .where(self.outbox.c.published_at.is_(None))
                .order_by(self.outbox.c.position)
                .limit(self.settings.relay_batch_size)
            )
            if is_postgresql(connection):
                query = query.with_for_update(skip_locked=True)
            rows = connection.execute(query).all()
            if not rows:
                return 0
            publisher = self._get_publisher()
            confirmed: list[int] = []
            try:
                for row in rows:
                    publisher.publish(row.event_type, row.event_id, row.body)
                    confirmed.append(row.position)
            except bus.BROKER_ERRORS as exc:
                # Keep what the broker did confirm, so a flapping broker does not make us resend it,
                # and count the attempt on the row that failed, for whoever looks at a stuck outbox.
                self._mark(connection, confirmed)
                connection.execute(
                    self.outbox.update()
                    .where(self.outbox.c.position == rows[len(confirmed)].position)
                    .values(attempts=self.outbox.c.attempts + 1, last_error=type(exc).__name__)
                )
                connection.commit()
                raise
            self._mark(connection, confirmed)
        return len(confirmed)

    def _mark(self, connection: Connection, positions: list[int]) -> None:
        if positions:
            connection.execute(
                self.outbox.update()
                .where(self.outbox.c.position.in_(positions))
                .values(published_at=utcnow(), attempts=self.outbox.c.attempts + 1)
            )

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
