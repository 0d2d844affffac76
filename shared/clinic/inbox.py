"""The consumer and its idempotent inbox.

A message is applied in one database transaction that also records its event id
in the inbox; the delivery is acked only after that commit. A redelivered event
finds its id in the inbox and has no second effect. A message that is not a valid
event of a known type and version is dead-lettered at once; a handler that fails
is retried by the broker up to the queue's delivery limit, then dead-lettered.
A database outage pauses the consumer (it keeps the message and its heartbeats)
instead of burning the message's delivery attempts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from clinic import bus, events
from clinic.config import Settings
from clinic.correlation import accepted_correlation_id, reset_correlation_id, set_correlation_id
from clinic.db import is_transient, transaction, utcnow
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# A handler applies one event in the unit of work the inbox opened for it (clinic.unit_of_work).
Handler = Callable[[UnitOfWork, events.Event], None]

APPLIED, DUPLICATE, FAILED = "applied", "duplicate", "failed"


def apply_once(engine: Engine, metadata: sa.MetaData, producer: str, event: events.Event, handler: Handler,
               clock: Callable[[], datetime] = utcnow) -> str:
    """Run the handler and record the event id in one transaction. Raises when the database is away.
    `clock` gives the handler's unit of work its time (the real one, but in tests)."""
    inbox = metadata.tables["inbox"]
    # As at the HTTP edge: the id goes on every log line and into every event this one causes, so one
    # that is not a UUID (a newline, a name) is replaced rather than passed on.
    offered = event.correlation_id
    token = set_correlation_id(accepted_correlation_id(offered) if offered is not None else None)
    try:
        with transaction(engine) as connection:
            seen = connection.execute(sa.select(inbox.c.event_id).where(inbox.c.event_id == event.id)).first()
            if seen:
                return DUPLICATE
            try:
                connection.execute(inbox.insert().values(event_id=event.id, event_type=event.type, received_at=utcnow()))
            except IntegrityError:
                # Another consumer applied the same event a moment ago.
                connection.rollback()
                return DUPLICATE
            handler(UnitOfWork.joining(connection, metadata, producer, now=clock()), event)
        return APPLIED
    except (DBAPIError, sa.exc.TimeoutError) as exc:
        if is_transient(exc):
            raise
        log.exception("event %s (%s): handler failed", event.id, event.type)
        return FAILED
    except Exception:
        log.exception("event %s (%s): handler failed", event.id, event.type)
        return FAILED
    finally:
        reset_correlation_id(token)


class Consumer:
    """Consumes a service's queue, one pika connection in the thread that calls run()."""

    def __init__(self, settings: Settings, engine: Engine, metadata: sa.MetaData, handlers: dict[str, Handler],
                 clock: Callable[[], datetime] = utcnow):
        self.settings = settings
        self.clock = clock
        self.engine = engine
        self.metadata = metadata
        self.handlers = handlers
        self._stopping = threading.Event()
        self._connection = None
        self._channel = None
        self.ready = threading.Event()

    def run(self) -> None:
        backoff = bus.Backoff(self.settings.reconnect_max_seconds)
        while not self._stopping.is_set():
            try:
                self._connection = bus.connect(self.settings)
                self._channel = self._connection.channel()
                bus.declare_service_queue(self._channel, self.settings, sorted(self.handlers))
                self._channel.basic_qos(prefetch_count=self.settings.prefetch)
                self._channel.basic_consume(self.settings.queue, self._on_message, auto_ack=False)
                log.info("consumer: consuming %s", self.settings.queue)
                backoff.reset()
                self.ready.set()
                if self._stopping.is_set():
                    break
                self._channel.start_consuming()
            except bus.BROKER_ERRORS as exc:
                self.ready.clear()
                if self._stopping.is_set():
                    break
                delay = backoff.next()
                log.warning("consumer: broker unavailable (%s); reconnecting in %.1fs", type(exc).__name__, delay)
                self._stopping.wait(delay)
            finally:
                self._close()

    def stop(self) -> None:
        """Safe from any thread: finish the current message, then return from run()."""
        self._stopping.set()
        connection, channel = self._connection, self._channel
        if connection is not None and channel is not None:
            try:
                connection.add_callback_threadsafe(channel.stop_consuming)
            except bus.BROKER_ERRORS:
                pass

    def _on_message(self, channel, method, properties, body) -> None:
        try:
            event = events.parse(body)
        except events.InvalidEvent as exc:
            log.error("message %s dead-lettered: %s", properties.message_id, exc)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        handler = self.handlers.get(event.type)
        if handler is None:
            log.error("event %s dead-lettered: no handler for %s", event.id, event.type)
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        outcome = self._apply_until_database_answers(event, handler)
        if outcome is None:
            return  # stopping: the unacked message returns to the queue when the channel closes
        if outcome == FAILED:
            # Counts as a delivery on a quorum queue; past the delivery limit it is dead-lettered.
            channel.basic_nack(method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(method.delivery_tag)

    def _apply_until_database_answers(self, event, handler):
        backoff = bus.Backoff(self.settings.reconnect_max_seconds)
        while not self._stopping.is_set():
            try:
                return apply_once(self.engine, self.metadata, self.settings.service, event, handler, self.clock)
            except (DBAPIError, sa.exc.TimeoutError):
                # Only transient errors reach here (apply_once decides): the database is away, or it
                # picked this transaction as a deadlock victim. Neither is the message's fault.
                delay = backoff.next()
                log.warning("consumer: database unavailable or busy; retrying event %s in %.1fs", event.id, delay)
                # sleep() keeps answering the broker's heartbeats while we wait.
                self._connection.sleep(delay)
        return None

    def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except bus.BROKER_ERRORS:
                pass
