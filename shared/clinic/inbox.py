"""The consumer and its idempotent inbox.

One module past 400 lines because it is one loop whose parts must agree: what the consumer holds,
the one transaction it applies it in, and what it does with each message afterwards (ack, retry
after a delay, dead-letter) are read together or not at all.

The consumer applies what it holds in batches: up to `prefetch` messages, or what arrives within
`batch_wait_seconds`, in ONE database transaction that records every event id in the inbox and runs
every handler; the deliveries are acked only after that commit. An event already in the inbox (a
redelivery, or the same event twice in the batch) has no second effect.

A handler that raises rolls the batch back; the batch is applied again without that message, and
the message is then applied alone, so its failure is its own. A message that fails alone is
published to the retry exchange (clinic.bus) and waits in a delay queue before it comes back; the
delays grow (settings.retry_delays_seconds), and after the last the message goes to the service's
dead-letter queue with headers saying why. Attempts are counted from the broker's x-death header,
because a queue's own delivery count starts again after each trip through a dead-letter exchange.
A message that is not a valid event of a known type and version, or of a type this service has no
handler for, goes to the dead letters at once.

A database that is away or busy (clinic.db.is_transient), or that fails outside any handler, pauses
the consumer with backoff: it keeps the messages it holds and answers the broker's heartbeats, and
no message spends an attempt on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NamedTuple

import pika
import pika.exceptions as pe
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from clinic import bus, events, metrics
from clinic.config import Settings
from clinic.correlation import accepted_correlation_id, reset_correlation_id, set_correlation_id
from clinic.db import is_transient, utcnow
from clinic.errors import ClinicError
from clinic.logs import one_line
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# A handler applies one event in the unit of work the inbox opened for it (clinic.unit_of_work).
Handler = Callable[[UnitOfWork, events.Event], None]

APPLIED, DUPLICATE, FAILED = "applied", "duplicate", "failed"

# How often the consumer looks at the unrouted queue's depth for its metric.
UNROUTED_EVERY_SECONDS = 15.0
# The longest the loop waits without beating (Consumer.last_beat).
BEAT_SECONDS = 1.0


class HandlerFailed(Exception):
    """A handler raised: nothing of the batch was committed. `position` is its place in the batch."""

    def __init__(self, position: int, error: BaseException):
        super().__init__(f"the handler of the event at position {position} failed ({type(error).__name__})")
        self.position = position
        self.error = error


def apply_batch(engine: Engine, metadata: sa.MetaData, producer: str, work: Sequence[tuple[events.Event, Handler]],
                clock: Callable[[], datetime] = utcnow) -> list[str]:
    """Record the events in the inbox and run their handlers in order, all in one transaction; returns
    each one's outcome (APPLIED, or DUPLICATE when the inbox had it or it came earlier in `work`).

    Raises HandlerFailed when a handler raised (a transient database error excepted: that one is raised
    as it is, as is any error outside the handlers). `clock` gives each unit of work its time."""
    inbox = metadata.tables["inbox"]
    first: dict[str, int] = {}
    for position, (event, _handler) in enumerate(work):
        first.setdefault(event.id, position)
    outcomes: list[str] = []
    with engine.begin() as connection:
        claimed = _claim(connection, inbox, [work[position][0] for position in first.values()])
        for position, (event, handler) in enumerate(work):
            if first[event.id] != position or event.id not in claimed:
                outcomes.append(DUPLICATE)
                continue
            # As at the HTTP edge: the id goes on every log line and into every event this one causes,
            # so one that is not a UUID (a newline, a name) is replaced rather than passed on.
            offered = event.correlation_id
            token = set_correlation_id(accepted_correlation_id(offered) if offered is not None else None)
            try:
                handler(UnitOfWork.joining(connection, metadata, producer, now=clock()), event)
            except Exception as exc:
                if _is_transient(exc):
                    raise
                raise HandlerFailed(position, exc) from exc
            finally:
                reset_correlation_id(token)
            outcomes.append(APPLIED)
    return outcomes


def _claim(connection: Connection, inbox: sa.Table, batch: list[events.Event]) -> set[str]:
    """Insert the batch's inbox rows in one statement; the ids this transaction claimed. An id already
    there (or being inserted by another consumer's open transaction, which it waits for) is skipped."""
    received_at = utcnow()
    rows = [{"event_id": event.id, "event_type": event.type, "received_at": received_at} for event in batch]
    # Given a list of rows, SQLAlchemy sends one multi-row INSERT ("insertmanyvalues") from a statement
    # compiled once, where rows written into the statement itself would be compiled for every batch.
    return set(connection.execute(_claim_statement(inbox, connection.dialect.name), rows).scalars())


_claim_statements: dict[tuple[sa.Table, str], sa.Insert] = {}


def _claim_statement(inbox: sa.Table, dialect: str) -> sa.Insert:
    statement = _claim_statements.get((inbox, dialect))
    if statement is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - the clinic runs on these two
            raise NotImplementedError(f"the inbox on {dialect}")
        statement = insert(inbox).on_conflict_do_nothing(index_elements=[inbox.c.event_id]).returning(inbox.c.event_id)
        _claim_statements[(inbox, dialect)] = statement
    return statement


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (DBAPIError, sa.exc.TimeoutError)) and is_transient(exc)


def apply_once(engine: Engine, metadata: sa.MetaData, producer: str, event: events.Event, handler: Handler,
               clock: Callable[[], datetime] = utcnow) -> str:
    """Run one event's handler and record its id in one transaction: APPLIED, DUPLICATE, or FAILED (the
    failure logged). Raises when the database is away. `clock` gives the unit of work its time."""
    try:
        return apply_batch(engine, metadata, producer, [(event, handler)], clock)[0]
    except HandlerFailed as failed:
        log.error("event %s (%s): handler failed", event.id, event.type, exc_info=failed.error)
        return FAILED
    except (DBAPIError, sa.exc.TimeoutError) as exc:
        if is_transient(exc):
            raise
        log.exception("event %s (%s): handler failed", event.id, event.type)
        return FAILED


class Delivery(NamedTuple):
    method: pika.spec.Basic.Deliver
    properties: pika.BasicProperties
    body: bytes


class _Work(NamedTuple):
    delivery: Delivery
    event: events.Event
    handler: Handler


class _Stopping(Exception):
    """The consumer was asked to stop while it waited for the database."""


class Consumer:
    """Consumes a service's queue, one pika connection in the thread that calls run().

    `last_beat` is the time.monotonic() of the loop's last sign of life: at least once a second while
    it runs, waits for messages, or waits for the broker or the database to come back."""

    def __init__(self, settings: Settings, engine: Engine, metadata: sa.MetaData, handlers: dict[str, Handler],
                 clock: Callable[[], datetime] = utcnow):
        self.settings = settings
        self.clock = clock
        self.engine = engine
        self.metadata = metadata
        self.handlers = handlers
        self.ready = threading.Event()
        self.last_beat = time.monotonic()
        self._stopping = threading.Event()
        self._connection = None
        self._channel = None
        self._retries = None     # a confirm-mode channel for retries and dead letters
        self._watch = None       # a channel for the unrouted queue's depth (a refused look closes it)
        self._held: list[Delivery] = []
        self._database = bus.Outage(log, "consumer: the database")
        self._service = settings.service
        self._labelled: dict[tuple, object] = {}

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = bus.Backoff(self.settings.reconnect_max_seconds)
        broker = bus.Outage(log, "consumer: the broker")
        while not self._stopping.is_set():
            try:
                self._connect()
                broker.recovered()
                backoff.reset()
                self.ready.set()
                self._consume()
            except bus.BROKER_ERRORS as exc:
                self.ready.clear()
                if self._stopping.is_set():
                    break
                delay = backoff.next()
                broker.failed(exc, delay)
                self._wait(delay)
            except _Stopping:
                break
            finally:
                self._close()

    def stop(self) -> None:
        """Safe from any thread: finish the current batch (or leave it unacked), then return from run()."""
        self._stopping.set()
        connection = self._connection
        if connection is not None:
            try:
                # Wakes the loop from its wait for messages at once.
                connection.add_callback_threadsafe(lambda: None)
            except bus.BROKER_ERRORS:
                pass

    def _connect(self) -> None:
        self._held = []   # delivery tags of a closed channel mean nothing on a new one
        self._connection = bus.connect(self.settings)
        channel = self._connection.channel()
        bus.declare_service_queue(channel, self.settings, sorted(self.handlers))
        channel.basic_qos(prefetch_count=self.settings.prefetch)
        self._retries = self._connection.channel()
        self._retries.confirm_delivery()
        channel.basic_consume(self.settings.queue, self._hold, auto_ack=False)
        self._channel = channel
        log.info("consumer: consuming %s", self.settings.queue)

    def _hold(self, _channel, method, properties, body) -> None:
        self._held.append(Delivery(method, properties, body))

    def _consume(self) -> None:
        next_look = 0.0
        while not self._stopping.is_set():
            self._beat()
            if time.monotonic() >= next_look:
                self._count_unrouted()
                next_look = time.monotonic() + UNROUTED_EVERY_SECONDS
            if not self._held:
                # Returns as soon as messages arrive, stop() wakes it, or a second has passed.
                self._connection.process_data_events(time_limit=BEAT_SECONDS)
                continue
            self._gather()
            batch, self._held = self._held, []
            self._handle(batch)

    def _gather(self) -> None:
        """Wait a moment for more messages, up to a full batch: under load they are there already."""
        deadline = time.monotonic() + self.settings.batch_wait_seconds
        while len(self._held) < self.settings.prefetch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._connection.process_data_events(time_limit=left)

    # --- one batch ------------------------------------------------------------------------------

    def _handle(self, batch: list[Delivery]) -> None:
        """Apply a batch, send each failure on its way, then ack everything else after the commit."""
        settled: set[int] = set()
        work: list[_Work] = []
        for delivery in batch:
            work_item = self._read(delivery)
            if work_item is None:
                # Dead-lettered already: acked now, so a stop during a database outage does not make it twice.
                self._channel.basic_ack(delivery.method.delivery_tag)
                settled.add(delivery.method.delivery_tag)
            else:
                work.append(work_item)
        outcomes = self._apply(work)
        committed_at = utcnow()
        for item, outcome in zip(work, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self._retry_or_dead_letter(item.delivery, item.event, outcome)
            elif outcome == APPLIED:
                self._labels(metrics.APPLIED, item.event.type).inc()
                self._labels(metrics.APPLY_LAG_SECONDS, item.event.type).observe(
                    max(0.0, (committed_at - item.event.occurred_at).total_seconds()))
            else:
                self._labels(metrics.DUPLICATES, item.event.type).inc()
        unsettled = [delivery.method.delivery_tag for delivery in batch if delivery.method.delivery_tag not in settled]
        if unsettled:
            # Every delivery before these on the channel is settled already: one ack covers them all.
            self._channel.basic_ack(max(unsettled), multiple=True)
        self._beat()

    def _read(self, delivery: Delivery) -> _Work | None:
        """The delivery's event and handler; None when it went to the dead letters instead."""
        try:
            event = events.parse(delivery.body)
        except events.InvalidEvent as exc:
            metrics.CONSUMED.labels(self._service, "unknown").inc()
            log.error("message %s dead-lettered: %s", delivery.properties.message_id, exc)
            self._dead_letter(delivery, "unknown", "not a valid event of a known type and version", exc, attempts=0)
            return None
        self._labels(metrics.CONSUMED, event.type).inc()
        handler = self.handlers.get(event.type)
        if handler is None:
            log.error("event %s dead-lettered: no handler for %s", event.id, event.type)
            self._dead_letter(delivery, event.type, f"no handler for {event.type}", None, attempts=0)
            return None
        return _Work(delivery, event, handler)

    def _labels(self, metric, event_type: str):
        """The metric's child for this service and event type, kept: looking a child up by its labels
        costs more than counting (a lock, a tuple, a dict), and a batch counts each message."""
        child = self._labelled.get((metric, event_type))
        if child is None:
            child = self._labelled[(metric, event_type)] = metric.labels(self._service, event_type)
        return child

    def _apply(self, work: list[_Work]) -> list:
        """Each message's outcome, in order: APPLIED, DUPLICATE, or the exception its handler raised
        when applied alone. A failing message is taken out and the rest applied again without it."""
        outcomes: list = [None] * len(work)
        pending = list(range(len(work)))
        alone: list[int] = []
        while pending:
            try:
                for index, outcome in zip(pending, self._apply_until_database_answers([work[i] for i in pending]), strict=True):
                    outcomes[index] = outcome
                pending = []
            except HandlerFailed as failed:
                if len(pending) == 1:
                    outcomes[pending.pop()] = failed.error   # it was alone already
                    continue
                index = pending.pop(failed.position)
                alone.append(index)
                # Another copy of the same event in the batch goes with it: one copy is tried alone.
                for copy in [i for i in pending if work[i].event.id == work[index].event.id]:
                    pending.remove(copy)
                    outcomes[copy] = DUPLICATE
        for index in sorted(alone):
            try:
                outcomes[index] = self._apply_until_database_answers([work[index]])[0]
            except HandlerFailed as failed:
                outcomes[index] = failed.error
        return outcomes

    def _apply_until_database_answers(self, work: list[_Work]) -> list[str]:
        """apply_batch, tried again with backoff for as long as the database is away, busy, or failing
        outside the handlers (none of which is the messages' fault). Raises HandlerFailed, or _Stopping."""
        backoff = bus.Backoff(self.settings.reconnect_max_seconds)
        while not self._stopping.is_set():
            try:
                outcomes = apply_batch(self.engine, self.metadata, self._service,
                                       [(item.event, item.handler) for item in work], self.clock)
            except HandlerFailed:
                self._database.recovered()
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is not one message's fault
                delay = backoff.next()
                if self._database.since is None and not _is_transient(exc):
                    # Not an outage we expect (a table missing before a migration, say): show where.
                    log.error("consumer: applying a batch failed outside its handlers", exc_info=exc)
                self._database.failed(exc, delay)
                self._sleep(delay)
                continue
            self._database.recovered()
            self._beat()
            return outcomes
        raise _Stopping()

    # --- retries and dead letters ---------------------------------------------------------------

    def _retry_or_dead_letter(self, delivery: Delivery, event: events.Event, error: BaseException) -> None:
        """After its handler failed alone: the message waits in the next delay queue, or, past the
        last delay, goes to the dead letters."""
        tried = bus.expiries(delivery.properties.headers, self.settings)
        attempt = tried + 1
        delays = self.settings.retry_delays_seconds
        if tried < len(delays):
            milliseconds = bus.delay_milliseconds(delays[tried])
            self._publish(delivery, **{bus.STEP_HEADER: str(milliseconds), bus.REASON_HEADER: "handler failed"})
            metrics.RETRIED.labels(self._service, event.type).inc()
            # One line, no traceback: a failure that a moment's wait may cure is expected.
            log.warning("event %s (%s) failed on attempt %d (%s); trying again in %gs",
                        event.id, event.type, attempt, type(error).__name__, delays[tried])
            return
        log.error("event %s (%s) dead-lettered after %d attempts", event.id, event.type, attempt, exc_info=error)
        self._dead_letter(delivery, event.type, "handler failed", error, attempts=attempt)

    def _dead_letter(self, delivery: Delivery, event_type: str, reason: str, error: BaseException | None,
                     attempts: int) -> None:
        self._publish(delivery, **{
            bus.STEP_HEADER: bus.DEAD_STEP,
            bus.REASON_HEADER: reason,
            bus.EXCEPTION_HEADER: exception_name(error) if error is not None else "",
            bus.ERROR_HEADER: safe_message(error) if error is not None else "",
            bus.ATTEMPTS_HEADER: attempts,
            bus.DEAD_AT_HEADER: utcnow().isoformat(timespec="seconds"),
        })
        metrics.DEAD_LETTERED.labels(self._service, event_type).inc()

    def _publish(self, delivery: Delivery, **headers) -> None:
        """Publish the message to the retry exchange with its routing key, properties and headers, and
        this trip's headers; returns once the broker confirmed it (else raises a BROKER_ERRORS member,
        and the delivery, never acked, comes back)."""
        self._retries.basic_publish(
            bus.retry_exchange(self.settings),
            delivery.method.routing_key,
            delivery.body,
            bus.forwarded(delivery.properties, **{bus.QUEUE_HEADER: self.settings.queue, **headers}),
            # A message no delay queue is bound for would be dropped: refused instead, it is held until
            # the consumer has reconnected and declared the delay queues again.
            mandatory=True,
        )

    # --- keeping alive --------------------------------------------------------------------------

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def _wait(self, seconds: float) -> None:
        """Wait without a connection, beating."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            self._beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, BEAT_SECONDS))

    def _sleep(self, seconds: float) -> None:
        """Wait with the connection, answering the broker's heartbeats, beating."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            self._beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._connection.sleep(min(left, BEAT_SECONDS))

    def _count_unrouted(self) -> None:
        """Keep the unrouted queue's depth current for its metric (a passive declaration, on a channel
        of its own: a refused one closes it)."""
        try:
            if self._watch is None or not self._watch.is_open:
                self._watch = self._connection.channel()
            waiting = self._watch.queue_declare(self.settings.unrouted_queue, passive=True).method.message_count
        except pe.ChannelClosedByBroker:
            self._watch = None
            return
        metrics.UNROUTED_MESSAGES.labels(self._service).set(waiting)

    def _close(self) -> None:
        connection = self._connection
        self._connection = self._channel = self._retries = self._watch = None
        self._held = []
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except bus.BROKER_ERRORS:
                pass


def exception_name(error: BaseException) -> str:
    """The exception's class, with its module unless it is a built-in one."""
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def safe_message(error: BaseException) -> str:
    """What a dead letter may say about its error: a clinic error's own message (written for the
    caller, without patient data); for anything else only its class, since its text may quote values
    (a database error repeats the row it refused)."""
    if isinstance(error, ClinicError):
        return one_line(error.message)[:500]
    return f"{type(error).__name__} (its text is not kept: it may quote patient data)"
