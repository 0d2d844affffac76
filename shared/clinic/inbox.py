"""The consumer and its idempotent inbox.

One module past 400 lines because it is one loop whose parts must agree: what the consumer holds,
the one transaction it applies it in, and what it does with each message afterwards (ack, retry
after a delay, dead-letter), on one connection whose waits must all beat, are read together or not
at all.

The consumer applies what it holds in batches: up to `prefetch` messages, or what arrives within
`batch_wait_seconds`, in ONE database transaction that records every event id in the inbox and runs
every handler; the deliveries are acked only after that commit. An event already in the inbox (a
redelivery, or the same event twice in the batch) has no second effect.

A handler that raises rolls the batch back. The messages before it, which ran without failing, are
applied again together, the failing message alone (unless it was first in its transaction: then it
failed alone already), then those after it in two halves, split the same way at their next failure;
so however many fail, a handler that does the same each time runs at most twice, and the batch keeps
its order. A message that fails alone is published to the retry exchange (clinic.bus) and waits in a
delay queue before it comes back; the delays grow (settings.retry_delays_seconds), and after the last
the message goes to the service's dead-letter queue with headers saying why. Attempts are counted
from the broker's x-death header, because a queue's own delivery count starts again after each trip
through a dead-letter exchange. A message that is not a valid event of a known type and version
(whatever reading it raised), or of a type this service has no handler for, goes to the dead letters
at once; so does one whose retry or dead letter cannot be made for a reason of its own (not the
broker's), or, failing that too, is rejected to the queue's own dead-lettering.

Nor is an event applied unless its routing key, its AMQP type and its body's type are the same, and
its publisher owns the type's prefix (settings.broker_publishers): the user_id the broker checked,
for one from the events exchange; the publisher this consumer checked on first receipt
(x-clinic-publisher), for one back from its delay queues through its own requeue exchange (clinic.bus).
Any other goes to the dead letters at once, with the reason, and changes nothing. The check is a few
string comparisons per message.

The applied messages are acked before any retry or dead letter is published: a broker blocked by a
resource alarm (memory, disk) stops reading from a connection once it publishes, acks included. While
it blocks, the consumer pauses, says so once, and says once when it is unblocked; it keeps the
connection (no blocked-connection timeout: reconnecting would redeliver what it holds and spend
their delivery count). Its waits on the broker (a publish's confirm, the unrouted queue's depth) never
hold the loop: it beats and answers heartbeats meanwhile.

A database that is away or busy (clinic.db.is_transient), or that fails outside any handler, pauses
the consumer with backoff: it keeps the messages it holds and answers the broker's heartbeats, and
no message spends an attempt on it.

Asked to stop (SIGTERM, clinic.worker), the consumer finishes the batch in hand, then cancels its
consumer without waiting for the broker's answer, and applies and acks what it still holds rather
than return it to the queue at the cost of one of its deliveries (the queue's delivery limit counts
every message returned to it). Deliveries that were already on their way when it cancelled (at
most the prefetch, in all) pika returns to the queue, each spending one delivery. It has
FINISH_SECONDS for that; what is not settled by then (a database or broker that does not answer)
goes back to the queue when the connection closes, unacked, and comes again to this consumer's
successor. The inbox keeps that from doubling anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
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
from clinic.outages import Backoff, Outage
from clinic.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# A handler applies one event in the unit of work the inbox opened for it (clinic.unit_of_work).
Handler = Callable[[UnitOfWork, events.Event], None]

APPLIED, DUPLICATE, FAILED = "applied", "duplicate", "failed"

# How often the consumer looks at the unrouted queue's depth for its metric.
UNROUTED_EVERY_SECONDS = 15.0
# The longest the loop waits without beating (Consumer.last_beat).
BEAT_SECONDS = 1.0
# After stop(): how long the consumer may go on applying and settling what it holds (a handler's
# transaction already under way may take the database's deadline on top). With the close and the
# worker's other loops this keeps a stop well inside the 30 s grace period of compose and Kubernetes.
FINISH_SECONDS = 8.0
# After stop(): how long closing the connection may take before the process goes on without it (a
# broker that stopped answering never confirms the close; the socket closes with the process).
CLOSE_SECONDS = 2.0


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


class _Refused(NamedTuple):
    """A delivery that goes to the dead letters without being applied, why, and the line that says so
    once it is there (a format and its arguments)."""
    delivery: Delivery
    event_type: str
    reason: str
    error: BaseException | None
    said: tuple


class _Stopping(Exception):
    """The consumer was asked to stop while it waited for the database or the broker."""


class _Confirming:
    """A channel of the consumer's connection in confirm mode, one message in flight at a time, whose
    confirm the consumer waits for in its own loop: beating, answering heartbeats, seeing a stop.

    pika's blocking channel in confirm mode waits inside basic_publish until the broker answers, with
    no beat and no way to stop, and on a broker blocked by a resource alarm until the alarm ends. So
    this works on the asynchronous pika channel under the blocking one (its `_impl`, on which pika's
    blocking adapter is built): callbacks note the answer and wake the connection's wait."""

    def __init__(self, connection: pika.BlockingConnection):
        self.connection = connection
        self.channel = connection.channel()
        self._channel = self.channel._impl
        self._sent = 0        # messages published on the channel, as the broker numbers them in its confirms
        self._answer = None   # the broker's Basic.Ack or Basic.Nack for the message in flight
        self._returned = False
        self._selected = False
        self._channel.add_on_return_callback(self._on_returned)
        self._channel.confirm_delivery(ack_nack_callback=self._on_answer, callback=self._on_selected)

    def selected(self) -> bool:
        """True once the broker has put the channel in confirm mode."""
        return self._selected

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties) -> None:
        """Send one message, mandatory: one that no queue is bound for is returned rather than dropped."""
        self._answer, self._returned = None, False
        self._channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        self._sent += 1   # after: a message pika could not encode was not sent

    def answered(self) -> bool:
        return self._answer is not None

    def raise_if_refused(self) -> None:
        """Raise as pika's blocking channel would: NackError when the broker refused the message,
        UnroutableError when it was returned (both clinic.bus.BROKER_ERRORS)."""
        if isinstance(self._answer, pika.spec.Basic.Nack):
            raise pe.NackError([])
        if self._returned:
            raise pe.UnroutableError([])

    def _on_answer(self, frame) -> None:
        method = frame.method
        # One message is in flight: the answer is for it when it names it (or names 0, with `multiple`: all).
        if method.delivery_tag == self._sent or (method.multiple and method.delivery_tag == 0):
            self._answer = method
            self._wake()

    def _on_returned(self, _channel, _method, _properties, _body) -> None:
        self._returned = True   # the broker returns a message before it confirms it

    def _on_selected(self, _frame) -> None:
        self._selected = True
        self._wake()

    def _wake(self) -> None:
        # A callback of the channel under the blocking one does not end process_data_events; a timer
        # of the blocking connection's own does, at once.
        self.connection.call_later(0, _nothing)


def _nothing() -> None:
    pass


class Consumer:
    """Consumes a service's queue, one pika connection in the thread that calls run().

    `last_beat` is the time.monotonic() of the loop's last sign of life: at least once a second while
    it runs, waits for messages, waits for the broker (a confirm, a blocked connection) or waits for
    the broker or the database to come back."""

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
        self._confirming: _Confirming | None = None   # for retries and dead letters
        self._watch = None       # a channel for the unrouted queue's depth (a refused look closes it)
        self._looking = False    # a look at the unrouted queue's depth awaits its answer
        self._held: list[Delivery] = []
        self._consumer_tag: str | None = None
        self._cancelled = False  # the broker was asked to send this channel no more deliveries
        self._stop_by = float("inf")   # time.monotonic() by which a stop gives up what it holds
        self._blocked_since: float | None = None
        self._broker = Outage(log, "consumer: the broker")
        self._backoff = Backoff(settings.reconnect_max_seconds)
        self._database = Outage(log, "consumer: the database")
        self._service = settings.service
        self._owners = dict(settings.broker_publishers)

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._connect()
                self.ready.set()
                self._consume()
            except bus.BROKER_ERRORS as exc:
                self.ready.clear()
                if self._stopping.is_set():
                    break
                delay = self._backoff.next()
                self._broker.failed(exc, delay)
                self._wait(delay)
            except _Stopping:
                break
            finally:
                self._close()

    def stop(self) -> None:
        """Safe from any thread: finish the current batch and what is held (or leave them unacked, see
        FINISH_SECONDS), then return from run(). Calling it again changes nothing."""
        if not self._stopping.is_set():
            self._stop_by = time.monotonic() + FINISH_SECONDS
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
        self._cancelled = False
        params = bus.connection_parameters(self.settings)
        # Blocked by a resource alarm, the consumer pauses for as long as the alarm lasts: a timeout
        # would drop the connection, and the messages it holds would come back with their delivery
        # count spent (a long alarm would dead-letter them through the queue's delivery limit).
        params.blocked_connection_timeout = None
        self._connection = pika.BlockingConnection(params)
        self._connection.add_on_connection_blocked_callback(self._on_blocked)
        self._connection.add_on_connection_unblocked_callback(self._on_unblocked)
        channel = self._connection.channel()
        bus.declare_service_queue(channel, self.settings, sorted(self.handlers))
        channel.basic_qos(prefetch_count=self.settings.prefetch)
        self._confirming = _Confirming(self._connection)
        self._wait_on_broker(self._confirming.selected)
        self._watch = self._connection.channel()
        self._consumer_tag = channel.basic_consume(self.settings.queue, self._hold, auto_ack=False)
        self._channel = channel
        log.info("consumer: consuming %s", self.settings.queue)

    def _hold(self, _channel, method, properties, body) -> None:
        self._held.append(Delivery(method, properties, body))

    def _consume(self) -> None:
        next_look = 0.0
        while not self._stopping.is_set() or self._finishing():
            self._beat()
            if time.monotonic() >= next_look and not self._stopping.is_set():
                self._look_at_unrouted()
                next_look = time.monotonic() + UNROUTED_EVERY_SECONDS
            if not self._held or self._blocked_since is not None:
                # Returns as soon as messages arrive, stop() wakes it, or a second has passed.
                self._connection.process_data_events(time_limit=BEAT_SECONDS)
                if not self._held and self._blocked_since is None:
                    self._working()   # nothing to settle, and a wait on the connection went well
                continue
            self._gather()
            batch, self._held = self._held, []
            self._handle(batch)

    def _finishing(self) -> bool:
        """Once stopped: no new deliveries, and True while messages held remain to be applied in time."""
        if not self._cancelled:
            self._cancel()
        return bool(self._held) and self._blocked_since is None and time.monotonic() < self._stop_by

    def _cancel(self) -> None:
        """Ask the broker to send no more, without waiting for its answer (clinic.bus.cancel_without_waiting).
        A delivery already on its way for the cancelled consumer pika rejects, back to the queue, at the
        cost of one of its deliveries; at most the prefetch can be on their way."""
        self._cancelled = True
        channel, tag = self._channel, self._consumer_tag
        if channel is None or tag is None or not channel.is_open:
            return
        try:
            pending = bus.cancel_without_waiting(channel, tag)
        except bus.BROKER_ERRORS:
            return   # the connection is going: what it holds goes back to the queue
        except AttributeError:
            # A pika whose internals changed: the stop goes on without applying what is held, which goes
            # back to the queue unacked when the connection closes. No death: the worker exits 0.
            log.error("consumer: stopping; cannot cancel without waiting on pika %s; the %d messages it holds "
                      "go back to the queue", pika.__version__, len(self._held), exc_info=True)
            raise _Stopping() from None
        for method, properties, body in pending:
            self._hold(channel, method, properties, body)
        if self._held:
            log.info("consumer: stopping; applying the %d messages it holds", len(self._held))

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
        """Apply a batch and ack what it applied, then send each failure on its way."""
        work: list[_Work] = []
        refused: list[_Refused] = []
        for delivery in batch:
            try:
                read = self._read(delivery)
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is this message's alone
                read = _Refused(delivery, "unknown", "could not be read", exc,
                                ("message %s dead-lettered: reading it failed (%s)",
                                 getattr(delivery.properties, "message_id", None), exception_name(exc)))
            (work if isinstance(read, _Work) else refused).append(read)
        outcomes = self._apply(work)
        committed_at = utcnow()
        applied: list[Delivery] = []
        failed: list[tuple[_Work, BaseException]] = []
        for item, outcome in zip(work, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed.append((item, outcome))
                continue
            applied.append(item.delivery)
            try:
                self._count(item.event, outcome, committed_at)
            except Exception as exc:  # noqa: BLE001 - a metric must not keep an applied message unacked
                log.error("event %s: counting it failed", item.event.id, exc_info=without_text(exc))
        if applied:
            if failed or refused:
                for delivery in applied:
                    self._channel.basic_ack(delivery.method.delivery_tag)
            else:
                # Every delivery before these on the channel is settled already: one ack covers them all.
                self._channel.basic_ack(max(delivery.method.delivery_tag for delivery in applied), multiple=True)
            self._working()
        for refusal in refused:
            self._settle(refusal.delivery, refusal.event_type, partial(self._refuse, refusal))
        for item, error in failed:
            self._settle(item.delivery, item.event.type, partial(self._retry_or_dead_letter, item.delivery, item.event, error))
        self._beat()

    def _read(self, delivery: Delivery) -> _Work | _Refused:
        """The delivery's event and handler, or why it goes to the dead letters instead."""
        try:
            event = events.parse(delivery.body)
        except Exception as exc:  # noqa: BLE001 - whatever parsing raised (a RecursionError for a deeply
            # nested body, say), the message is no valid event, and will be none the next time either.
            self._labels(metrics.CONSUMED, "unknown").inc()
            # InvalidEvent's text is the clinic's own (what is wrong, not the values); another's may not be.
            why = str(exc) if isinstance(exc, events.InvalidEvent) else f"not a valid event ({exception_name(exc)})"
            return _Refused(delivery, "unknown", "not a valid event of a known type and version", exc,
                            ("message %s dead-lettered: %s", delivery.properties.message_id, why))
        self._labels(metrics.CONSUMED, event.type).inc()
        forged = self._not_as_published(delivery, event)
        if forged is not None:
            return _Refused(delivery, event.type, forged, None,
                            ("event %s dead-lettered: %s", event.id, forged))
        handler = self.handlers.get(event.type)
        if handler is None:
            return _Refused(delivery, event.type, f"no handler for {event.type}", None,
                            ("event %s dead-lettered: no handler for %s", event.id, event.type))
        return _Work(delivery, event, handler)

    def publisher(self, delivery: Delivery) -> str:
        """Who published the delivery, as far as the broker vouches for it ("" when nobody does)."""
        return bus.vouched_publisher(self.settings, delivery.method.exchange, delivery.properties)

    def _not_as_published(self, delivery: Delivery, event: events.Event) -> str | None:
        """Why the event is not to be believed (a reason without patient data), or None."""
        if not (delivery.method.routing_key == delivery.properties.type == event.type):
            return "routing key, AMQP type and body type differ"
        prefix = event.type.partition(".")[0]
        owner = self._owners.get(prefix)
        publisher = self.publisher(delivery)
        if owner is None or publisher != owner:
            return (f"published by {one_line(publisher)[:100] or 'an account the broker did not name'}, "
                    f"which does not own {prefix}.*")
        return None

    def _count(self, event: events.Event, outcome: str, committed_at: datetime) -> None:
        if outcome == APPLIED:
            self._labels(metrics.APPLIED, event.type).inc()
            self._labels(metrics.APPLY_LAG_SECONDS, event.type).observe(
                max(0.0, (committed_at - event.occurred_at).total_seconds()))
        else:
            self._labels(metrics.DUPLICATES, event.type).inc()

    def _labels(self, metric, event_type: str):
        return metrics.labelled(metric, self._service, event_type)

    def _apply(self, work: list[_Work]) -> list:
        """Each message's outcome, in order: APPLIED, DUPLICATE, or the exception its handler raised
        alone.

        The messages are applied in one transaction. When a handler fails, those before it (which ran
        without failing, and were rolled back with it) are applied again together, then the failing
        one alone, then those after it in two halves, each split the same way at its next failure. So
        however many fail, a handler that does the same each time runs at most twice (once in a
        transaction that failed after it and once in one that commits; a failing one in its batch and
        alone), and what the batch applies is applied in its order."""
        outcomes: list = [None] * len(work)
        parts: deque[list[int]] = deque([list(range(len(work)))] if work else [])
        while parts:
            part = parts.popleft()
            try:
                for index, outcome in zip(part, self._apply_until_database_answers([work[i] for i in part]), strict=True):
                    outcomes[index] = outcome
                continue
            except HandlerFailed as failed:
                position, error = failed.position, failed.error
            index = part[position]
            event_id = work[index].event.id
            # Another copy of the same event after it goes with it: one copy is tried alone.
            after = []
            for other in part[position + 1:]:
                if work[other].event.id == event_id:
                    outcomes[other] = DUPLICATE
                else:
                    after.append(other)
            # Those after it have not run: in halves, so that a run of failures claims each message's
            # inbox row (in transactions rolled back) a number of times that grows with the logarithm
            # of the batch, not with the batch.
            halves = [after[:len(after) // 2], after[len(after) // 2:]]
            if position == 0:
                outcomes[index] = error   # nothing ran before it in its transaction: it failed alone
                again = halves
            else:
                again = [part[:position], [index], *halves]
            parts.extendleft(reversed([indexes for indexes in again if indexes]))
        return outcomes

    def _apply_until_database_answers(self, work: list[_Work]) -> list[str]:
        """apply_batch, tried again with backoff for as long as the database is away, busy, or failing
        outside the handlers (none of which is the messages' fault). Raises HandlerFailed, or _Stopping.
        Once stopped, it is tried until FINISH_SECONDS have passed or it failed once: no waiting out an outage."""
        backoff = Backoff(self.settings.reconnect_max_seconds)
        failed = False
        while not (self._stopping.is_set() and (failed or time.monotonic() >= self._stop_by)):
            try:
                outcomes = apply_batch(self.engine, self.metadata, self._service,
                                       [(item.event, item.handler) for item in work], self.clock)
            except HandlerFailed:
                self._database.recovered()
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it is, it is not one message's fault
                failed = True
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

    def _settle(self, delivery: Delivery, event_type: str, send: Callable[[], None]) -> None:
        """Send one message on (a retry, a dead letter), then ack it. An error of the message's own
        (its headers, its properties) sends it to the dead letters instead; a broker's is raised, and
        the message, never acked, comes back after the reconnection."""
        try:
            send()
        except (*bus.BROKER_ERRORS, _Stopping):
            raise
        except Exception as exc:  # noqa: BLE001 - one message's trouble must not stop the consumer
            self._cannot_settle(delivery, event_type, exc)
            return
        self._channel.basic_ack(delivery.method.delivery_tag)
        self._working()

    def _cannot_settle(self, delivery: Delivery, event_type: str, error: BaseException) -> None:
        """To the dead letters with the reason; failing that too, rejected: the queue's own
        dead-lettering takes it to the same dead-letter queue, without the clinic's headers."""
        log.error("message %s (%s) dead-lettered: sending it on failed (%s)", delivery.properties.message_id,
                  event_type, exception_name(error), exc_info=without_text(error))
        try:
            self._dead_letter(delivery, event_type, "could not be retried or dead-lettered", error, attempts=0)
        except (*bus.BROKER_ERRORS, _Stopping):
            raise
        except Exception:  # noqa: BLE001 - said above; this is the last way left
            self._channel.basic_nack(delivery.method.delivery_tag, requeue=False)
            self._labels(metrics.DEAD_LETTERED, event_type).inc()
            return
        self._channel.basic_ack(delivery.method.delivery_tag)
        self._working()

    def _refuse(self, refusal: _Refused) -> None:
        self._dead_letter(refusal.delivery, refusal.event_type, refusal.reason, refusal.error, attempts=0)
        log.error(*refusal.said)   # after: a message that comes back (a lost connection) is not said twice

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
        self._dead_letter(delivery, event.type, "handler failed", error, attempts=attempt)
        # As the dead letter's headers say it: the class, and only a clinic error's own message (written
        # without patient data); another error's text may quote it. Where it failed is kept for a bug.
        if isinstance(error, ClinicError):
            log.error("event %s (%s) dead-lettered after %d attempts: %s: %s", event.id, event.type, attempt,
                      exception_name(error), safe_message(error))
        else:
            log.error("event %s (%s) dead-lettered after %d attempts (%s)", event.id, event.type, attempt,
                      exception_name(error), exc_info=without_text(error))

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
        self._labels(metrics.DEAD_LETTERED, event_type).inc()

    def _publish(self, delivery: Delivery, **headers) -> None:
        """Publish the message to the retry exchange with its routing key, properties and headers, and
        this trip's headers; returns once the broker confirmed it (else raises a BROKER_ERRORS member,
        and the delivery, never acked, comes back). A message no delay queue is bound for would be
        dropped: it is returned instead, and held until the consumer has reconnected and declared
        the delay queues again."""
        # The publisher checked now goes with it: the user_id cannot (the broker refuses a user_id that is
        # not this connection's), and a header the message came with is replaced, never believed.
        properties = bus.forwarded(delivery.properties, **{bus.QUEUE_HEADER: self.settings.queue,
                                                           bus.PUBLISHER_HEADER: self.publisher(delivery), **headers})
        self._confirming.publish(bus.retry_exchange(self.settings), delivery.method.routing_key, delivery.body,
                                 properties)
        self._wait_on_broker(self._confirming.answered)
        self._confirming.raise_if_refused()

    # --- keeping alive --------------------------------------------------------------------------

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def _working(self) -> None:
        """The connection did what was asked of it (an ack, a confirmed publish, a quiet wait): a broker
        outage is over. Not merely a connection made: a broker may take one and then fail every publish."""
        self._broker.recovered()
        self._backoff.reset()

    def _wait_on_broker(self, answered: Callable[[], bool]) -> None:
        """Run the connection until `answered()`, beating. Raises _Stopping, or a BROKER_ERRORS member
        when the connection or the confirming channel is lost (a frozen broker: at its heartbeat timeout)."""
        while not answered():
            # Once stopped, a message being sent on (a retry, a dead letter) is waited for until
            # FINISH_SECONDS: given up sooner, its copy might be made and it would come back as well.
            # A broker blocked by a resource alarm answers nothing until it lifts: not waited for.
            if self._stopping.is_set() and (time.monotonic() >= self._stop_by or self._blocked_since is not None):
                raise _Stopping()
            if not self._confirming.channel.is_open:
                raise pe.ChannelWrongStateError("the consumer's channel for retries closed")
            self._beat()
            self._connection.process_data_events(time_limit=BEAT_SECONDS)

    def _on_blocked(self, _connection, _frame) -> None:
        if self._blocked_since is None:
            self._blocked_since = time.monotonic()
            log.warning("consumer: the broker blocked by a resource alarm (memory or disk); paused until it lifts")

    def _on_unblocked(self, _connection, _frame) -> None:
        if self._blocked_since is not None:
            log.info("consumer: the broker unblocked after %.1fs", time.monotonic() - self._blocked_since)
            self._blocked_since = None

    def _wait(self, seconds: float) -> None:
        """Wait without a connection, beating."""
        self._pause(seconds, self._stopping.wait)

    def _sleep(self, seconds: float) -> None:
        """Wait with the connection, answering the broker's heartbeats, beating."""
        self._pause(seconds, lambda slice_: self._connection.sleep(slice_))

    def _pause(self, seconds: float, wait: Callable[[float], object]) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            self._beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait(min(left, BEAT_SECONDS))

    def _look_at_unrouted(self) -> None:
        """Ask for the unrouted queue's depth, for its metric, without waiting for the answer: it comes
        while the loop waits for messages (a passive declaration on a channel of its own, as pika's
        blocking channel would wait for it without a beat; a refused one closes the channel)."""
        if not self._watch.is_open:
            self._watch = self._connection.channel()
            self._looking = False
        if self._looking:
            return   # the last look is not answered yet (a slow broker, a blocked connection)
        self._looking = True
        self._watch._impl.queue_declare(self.settings.unrouted_queue, passive=True, callback=self._on_unrouted)

    def _on_unrouted(self, frame) -> None:
        self._looking = False
        metrics.UNROUTED_MESSAGES.labels(self._service).set(frame.method.message_count)

    def _close(self) -> None:
        connection = self._connection
        blocked = self._blocked_since is not None
        self._connection = self._channel = self._confirming = self._watch = None
        self._held = []
        self._looking = False
        self._blocked_since = None
        if connection is None:
            return
        if (blocked or self._stopping.is_set()) and connection.is_open:
            # A blocked broker reads nothing from us, a Connection.Close included, and one that stopped
            # answering never confirms it: the connection is closed in a thread of its own, waited for
            # CLOSE_SECONDS at most on a stop (normally it takes a round trip), so that a stop does
            # not wait for the broker. A socket left open closes with the process.
            closing = threading.Thread(target=_close_quietly, args=(connection,), name="consumer-closing", daemon=True)
            closing.start()
            if not blocked:
                closing.join(CLOSE_SECONDS)
        else:
            _close_quietly(connection)


def _close_quietly(connection: pika.BlockingConnection) -> None:
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


class TextWithheld(Exception):
    """Stands in for an error in a log line's traceback: its class and where it was raised, not its text."""


def without_text(error: BaseException) -> BaseException:
    """A stand-in for `error` to log with its traceback (exc_info): the same frames, and the same for
    the errors it came from, with a clinic error's own message (written without patient data) but
    only the class of any other error, whose text may quote patient data ("no appointment for Maria
    Silva"), as a dead letter's headers keep it (safe_message). A database error's SQLSTATE is kept."""
    stand_ins: dict[int, BaseException] = {}

    def stand_in(item: BaseException | None) -> BaseException | None:
        if item is None:
            return None
        if id(item) in stand_ins:
            return stand_ins[id(item)]
        if isinstance(item, ClinicError):
            text = f"{exception_name(item)}: {safe_message(item)}"
        else:
            sqlstate = getattr(item, "sqlstate", None) or getattr(getattr(item, "orig", None), "sqlstate", None)
            kept = f"SQLSTATE {sqlstate}; " if isinstance(sqlstate, str) else ""
            text = f"{exception_name(item)} ({kept}its text is not logged: it may quote patient data)"
        copy = stand_ins[id(item)] = TextWithheld(text).with_traceback(item.__traceback__)
        copy.__cause__ = stand_in(item.__cause__)
        copy.__context__ = stand_in(item.__context__)
        copy.__suppress_context__ = item.__suppress_context__
        return copy

    return stand_in(error)
