"""The transactional outbox: events are rows written in the business transaction, published later.

(Longer than most modules: the relay's steps share one state, the pass through the outbox, the
window in flight and the marks owed, and read best together. The broker side is clinic.publishing.)

A use case writes its events with its unit of work (clinic.unit_of_work), inside the
transaction that makes the change, so the event exists exactly when the change does.

The `Relay` publishes unpublished rows in position order on one channel, keeping up to
`relay_window` of them in flight (clinic.publishing.ConfirmingPublisher), and marks a row
published only once the broker confirmed it. It never keeps a database transaction open while it
waits on the broker: it reads a batch in one short transaction, publishes it, and marks what came
back confirmed in another, a batch of marks at a time. A nack or a lost connection sends the
unconfirmed rest again, in order, from the first unpublished row; so does a relay killed between
the confirm and the mark, after its restart. Consumers' inboxes make those copies harmless. While
the broker or the database is away it retries with growing delays; rows wait, none are lost.
(A row can still go out behind a later one: when its transaction commits after the later row was
read, as before, or when the broker refuses it and takes the later one. It goes at the next pass;
copies kept by version do not mind, see DESIGN.md.)

On PostgreSQL replicas may run, and one at a time publishes (which keeps the service's events in
order): the one holding a session-level advisory lock, taken on a database connection of its own
that sits idle, outside any transaction, between those short transactions. If that connection is
lost so is the lock, and another replica takes over. SQLite runs one relay.
"""

from __future__ import annotations

import logging
import threading
import time

import pika.exceptions as pe
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from clinic import bus, events, metrics
from clinic.config import Settings
from clinic.correlation import current_correlation_id
from clinic.db import is_postgresql, is_unavailable, utcnow
from clinic.outages import Backoff, Outage
from clinic.publishing import ConfirmingPublisher

log = logging.getLogger(__name__)

# The relay's advisory lock: one relay replica of a service publishes at a time, which keeps the
# service's events in order; another replica takes over as soon as it lets go or loses its connection.
_RELAY_LOCK_KEY = 0x6F7574626F78  # "outbox"

# The longest the relay waits on the broker in one go, so it beats, and sees stop(), at least this often.
_WAIT_SLICE_SECONDS = 1.0
# Confirmed rows are marked in batches: at most this long after their confirm, or once half a window
# waits, or when nothing is in flight. Each mark is a statement's overhead less per row; a row confirmed
# and not yet marked when the relay is killed is only sent again.
_MARK_EVERY_SECONDS = 0.1
# How often the backlog gauges are refreshed (a count over the unpublished rows, by their index).
_BACKLOG_EVERY_SECONDS = 1.0
# On stop, how long the relay waits for the confirms of what it has in flight (the rest goes again later).
_FINISH_SECONDS = 2.0


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
        # Liveness: renewed at least once a second while run() is alive, also while it waits.
        self.last_beat = time.monotonic()
        self._stopping = threading.Event()
        self._publisher: ConfirmingPublisher | None = None
        # The relay's own database connection, idle between short transactions; on PostgreSQL it
        # holds the advisory lock when `_has_turn`.
        self._connection: Connection | None = None
        self._has_turn = False
        # Where this pass through the outbox has got to: the last position sent (None: start again
        # from the first unpublished row), and whether the last read filled its batch (more wait).
        self._after: int | None = None
        self._more = False
        self._confirmed: list[int] = []          # confirmed by the broker, not yet marked
        self._refused: list[int] = []            # refused (nacked) by the broker, to send again
        self._marked_at = time.monotonic()
        self._published = 0                      # rows marked published by this relay
        self._failed: tuple[list[int], BaseException] | None = None   # sent, not confirmed: to note on the rows
        self._backlog_due = 0.0
        self._broker = Outage(log, "relay: the broker")
        self._database = Outage(log, "relay: the database")

    def stop(self) -> None:
        self._stopping.set()

    @property
    def in_flight(self) -> int:
        """Rows published and not yet confirmed (nor refused)."""
        return self._publisher.in_flight if self._publisher is not None else 0

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Loop until stopped: keep the window of publishes full while rows wait, mark what the broker
        confirms, wait briefly when nothing is pending."""
        backoff = Backoff(self.settings.reconnect_max_seconds)
        complained = False
        try:
            while not self._stopping.is_set():
                self._beat()
                try:
                    if not self._turn():
                        self._idle()
                except bus.BROKER_ERRORS as exc:
                    self._broker_lost(exc)
                    delay = backoff.next()
                    self._broker.failed(exc, delay)
                    self._pause(delay)
                    continue
                except Exception as exc:  # noqa: BLE001 - the relay must outlive any error, and say what it was
                    self._database_lost()
                    delay = backoff.next()
                    if is_unavailable(exc):
                        self._database.failed(exc, delay)
                    elif not complained:
                        # e.g. a schema not yet migrated: keep trying, loudly once, rather than stop beside a
                        # live consumer. The formatter keeps a database error's text (row values) out.
                        log.error("relay: unexpected error (%s); retrying in %.1fs, then with growing delays",
                                  type(exc).__name__, delay, exc_info=exc)
                        complained = True
                    self._pause(delay)
                    continue
                backoff.reset()
                complained = False
                self._database.recovered()
                if self._publisher is not None:
                    self._broker.recovered()
        finally:
            self._finish()
            self.close()

    def _turn(self) -> bool:
        """One step: send the next batch if the window has room, take the confirms that came back,
        mark them when due. True when rows went out or confirms came back."""
        if not self._take_turn():
            self._refresh_backlog()
            return False
        self._note_failure()
        self._refresh_backlog()
        sent = self._send()
        if not self.in_flight:
            self._mark_confirmed()
            return sent > 0
        # While rows remain to be sent and the window has room for a batch, only take what has arrived:
        # the broker works on what it has meanwhile. Otherwise wait for a confirm.
        answered = self._collect(0 if self._more and self._room() and not self._refused else _WAIT_SLICE_SECONDS)
        return sent > 0 or answered > 0

    def publish_pending(self) -> int:
        """Publish the rows unpublished now, up to one window of them, and wait until the broker has
        answered for each; returns how many it confirmed (and that were marked). For tests,
        benchmarks and one-off use: run() keeps the window full instead. Raises a
        clinic.bus.BROKER_ERRORS member when the broker is away or refused a row (after noting the
        attempt on the rows concerned). Call close() when done."""
        if not self._take_turn():
            return 0
        before = self._published
        try:
            self._note_failure()
            while self._send():
                pass
            while self.in_flight:
                self._collect(_WAIT_SLICE_SECONDS)
            self._mark_confirmed()
        except bus.BROKER_ERRORS as exc:
            self._broker_lost(exc)
            self._mark_confirmed()
            self._note_failure()
            raise
        return self._published - before

    def close(self) -> None:
        """Let go of the broker connection, the database connection and, on PostgreSQL, the turn to
        publish (another replica takes over). What is in flight unconfirmed is sent again later."""
        self._drop_publisher()
        self._release_connection()
        self._forget()

    # --- the steps -----------------------------------------------------------------------------

    def _take_turn(self) -> bool:
        """True when this relay may publish: always on SQLite; on PostgreSQL once it holds the lock."""
        if self._connection is None:
            self._connection = connection = self.engine.connect()
            self._has_turn = False
            if is_postgresql(self.engine):
                # Every statement of the relay stands alone (a read, a mark), so each is its own
                # transaction: one round trip instead of three (BEGIN, the statement, COMMIT).
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
                # Reads walk ix_outbox_unpublished in order, whatever the statistics say: an outbox
                # filled in a burst and not yet analysed looks nearly empty to the planner, which then
                # sorts every unpublished row for each batch. (This session runs only the relay's
                # statements, none of which needs a sort; it is closed, never pooled, afterwards.)
                with connection.begin():
                    connection.exec_driver_sql("SET enable_sort = off")
            else:
                self._has_turn = True   # SQLite runs one relay
        if not self._has_turn:
            with self._connection.begin():
                # Session-level: the lock outlives this transaction, and is held while the connection idles.
                got = self._connection.execute(sa.select(sa.func.pg_try_advisory_lock(_RELAY_LOCK_KEY))).scalar()
            self._has_turn = bool(got)
            if self._has_turn:
                log.info("relay: this replica publishes %s's events", self.settings.service)
        return self._has_turn

    def _send(self) -> int:
        """Read the next batch beyond what is in flight, in one short transaction, and publish it."""
        in_flight = self.in_flight
        if not self._room() or (in_flight and not self._more) or self._refused:
            # No room for a batch, or no more rows beyond the window: wait for confirms. Once the window
            # is empty the next pass starts from the first unpublished row, which takes in rows to send
            # again and rows whose transaction committed after a later position had been read.
            return 0
        if not in_flight and not self._more:
            self._mark_confirmed()  # so the new pass does not read them again
            self._after = None
        limit = self._batch()
        query = self._pending(limit)
        if self._after is not None:
            query = query.where(self.outbox.c.position > self._after)
        with self._connection.begin():
            rows = self._connection.execute(query).all()
        self._more = len(rows) == limit
        if not rows:
            return 0
        try:
            publisher = self._get_publisher()
        except bus.BROKER_ERRORS as exc:
            self._failed = ([rows[0].position], exc)  # says on the row that waits why it waits
            raise
        for row in rows:
            publisher.publish(row.position, row.event_type, row.event_id, row.body)
        self._after = rows[-1].position
        return len(rows)

    def _batch(self) -> int:
        return max(1, min(self.settings.relay_batch_size, self.settings.relay_window))

    def _room(self) -> bool:
        """The window has room for another batch (reads come a batch at a time, not a row at a time)."""
        return self.settings.relay_window - self.in_flight >= self._batch()

    def _collect(self, seconds: float) -> int:
        """Take the broker's answers (waiting up to `seconds` for one) and mark the confirmed when due.

        A refusal (a nack: a queue full, say) stops the sending; once every row in flight is answered,
        the confirmed are marked and it counts as a broker failure: after a pause, the refused rows
        go again, in order, from the first unpublished. (Rows after a refused one that the broker
        took have gone ahead of it: a copy kept by version does not mind, see DESIGN.md.)"""
        publisher = self._publisher
        publisher.wait(seconds)
        confirmed = publisher.take_confirmed()
        self._confirmed.extend(confirmed)
        self._refused.extend(publisher.take_refused())
        if self._refused and not publisher.in_flight:
            self._mark_confirmed()
            raise pe.NackError(self._refused)
        if (len(self._confirmed) >= max(self._batch(), self.settings.relay_window // 2) or not publisher.in_flight
                or time.monotonic() - self._marked_at >= _MARK_EVERY_SECONDS):
            self._mark_confirmed()
        return len(confirmed)

    def _mark_confirmed(self) -> None:
        self._marked_at = time.monotonic()
        if not self._confirmed:
            return
        confirmed = self._confirmed
        with self._connection.begin():
            self._mark(self._connection, confirmed, confirmed, None)
        self._confirmed = []
        self._published += len(confirmed)
        metrics.RELAY_PUBLISHED.labels(self.settings.service).inc(len(confirmed))
        metrics.RELAY_LAST_PUBLISH.labels(self.settings.service).set_to_current_time()

    def _mark(self, connection: Connection, sent: list[int], confirmed: list[int], failure: BaseException | None) -> None:
        """Mark the confirmed rows published, clearing any error noted on them before; count a failed
        attempt, and why, on the rows sent and not confirmed (for whoever looks at a stuck outbox)."""
        now = utcnow()
        if confirmed:
            connection.execute(
                self.outbox.update()
                .where(self.outbox.c.position.in_(confirmed))
                .values(published_at=now, attempts=self.outbox.c.attempts + 1, last_error=None)
            )
        failed = sorted(set(sent) - set(confirmed)) if failure is not None else []
        if failed:
            connection.execute(
                self.outbox.update()
                .where(self.outbox.c.position.in_(failed), self.outbox.c.published_at.is_(None))
                .values(attempts=self.outbox.c.attempts + 1, last_error=type(failure).__name__)
            )

    def _note_failure(self) -> None:
        """Write down the attempt that failed (kept until the database could be reached)."""
        if self._failed is None:
            return
        sent, failure = self._failed
        with self._connection.begin():
            self._mark(self._connection, sent, [], failure)
        self._failed = None

    def _pending(self, limit: int) -> sa.Select:
        return (
            sa.select(self.outbox.c.position, self.outbox.c.event_type, self.outbox.c.event_id, self.outbox.c.body)
            .where(self.outbox.c.published_at.is_(None))
            # The order of ix_outbox_unpublished (all these share published_at NULL): position order.
            .order_by(self.outbox.c.published_at, self.outbox.c.position)
            .limit(limit)
        )

    def _refresh_backlog(self) -> None:
        if time.monotonic() < self._backlog_due:
            return
        self._backlog_due = time.monotonic() + _BACKLOG_EVERY_SECONDS
        with self._connection.begin():
            count, age = _backlog(self._connection, self.outbox)
        metrics.OUTBOX_BACKLOG.labels(self.settings.service).set(count)
        metrics.OUTBOX_OLDEST_AGE_SECONDS.labels(self.settings.service).set(age or 0.0)

    # --- waiting and failing -------------------------------------------------------------------

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def _idle(self) -> None:
        """Wait a little for new rows; a connected publisher answers the broker's heartbeats meanwhile,
        so a quiet period does not cost the connection."""
        if self._publisher is not None:
            self._publisher.wait(self.settings.relay_idle_seconds)
        else:
            self._stopping.wait(self.settings.relay_idle_seconds)

    def _pause(self, seconds: float) -> None:
        """Wait before trying again, beating meanwhile, and keeping the backlog gauges current while
        the database can be reached (during a broker outage is when they matter)."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            self._beat()
            if self._connection is not None:
                try:
                    self._refresh_backlog()
                except Exception:  # noqa: BLE001 - the next turn meets the same failure and says so
                    pass
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(_WAIT_SLICE_SECONDS, left))

    def _broker_lost(self, exc: BaseException) -> None:
        """The connection is gone (or the broker refused a row): keep the confirms that came back,
        note the attempt on the rest, and start the next pass from the first unpublished row."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            self._confirmed.extend(publisher.take_confirmed())
            self._refused.extend(publisher.take_refused())
            unanswered = [*self._refused, *publisher.unconfirmed()]
            publisher.close()
            if unanswered:
                self._failed = (unanswered, exc)
        self._refused = []
        self._after, self._more = None, False

    def _database_lost(self) -> None:
        """Without the database this relay cannot mark, nor be sure it still holds the lock: it stops
        publishing, and what it had in flight or confirmed unmarked goes again later."""
        self._drop_publisher()
        self._release_connection()
        self._forget()

    def _finish(self) -> None:
        """On stop: wait briefly for what is in flight, and mark what the broker confirmed."""
        try:
            deadline = time.monotonic() + _FINISH_SECONDS
            while self.in_flight and time.monotonic() < deadline:
                self._publisher.wait(deadline - time.monotonic())
                self._confirmed.extend(self._publisher.take_confirmed())
            if self._connection is not None and self._has_turn:
                self._mark_confirmed()
        except Exception:  # noqa: BLE001 - stopping anyway: unmarked rows go again on the next start
            pass

    def _forget(self) -> None:
        self._confirmed, self._refused, self._failed = [], [], None
        self._after, self._more = None, False

    def _get_publisher(self) -> ConfirmingPublisher:
        if self._publisher is None:
            self._publisher = ConfirmingPublisher(self.settings)
        return self._publisher

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def _release_connection(self) -> None:
        """Close the relay's database connection outright rather than pool it: its session holds the
        advisory lock and the relay's settings, which the server drops with the session (and so
        another replica can take over at once)."""
        connection, self._connection = self._connection, None
        self._has_turn = False
        if connection is None:
            return
        try:
            connection.invalidate()
            connection.close()
        except Exception:  # noqa: BLE001 - it is being thrown away either way
            pass


def _backlog(connection: Connection, outbox: sa.Table) -> tuple[int, float | None]:
    count, oldest = connection.execute(
        sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None))
    ).one()
    if oldest is None:
        return count, None
    return count, max(0.0, (utcnow() - oldest).total_seconds())


def backlog(engine: Engine, outbox: sa.Table) -> tuple[int, float | None]:
    """Unpublished rows, and the age in seconds of the oldest (None when there are none)."""
    with engine.connect() as connection:
        return _backlog(connection, outbox)


def pending_count(engine: Engine, outbox: sa.Table) -> int:
    """Unpublished rows."""
    return backlog(engine, outbox)[0]
